"""The seed regularizers: one file each, one registry line each (hooks: pretrain.methods.base)."""
from __future__ import annotations

from pretrain.methods.base import Regularizer
from pretrain.regularizers.mcr import MCR
from pretrain.regularizers.metamask import MetaMask
from pretrain.regularizers.msr import MSR
from pretrain.regularizers.rcl import RCL

REGULARIZERS: dict[str, type[Regularizer]] = {
    "msr": MSR,
    "mcr": MCR,
    "metamask": MetaMask,
    "rcl": RCL,
}

__all__ = ["REGULARIZERS"]
