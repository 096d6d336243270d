"""The base SSL methods: one file each, one registry line each (contracts in ``base.py``)."""
from __future__ import annotations

from typing import Any

from torch import nn

from pretrain.methods.barlow_twins import BarlowTwins
from pretrain.methods.base import Method, Regularizer
from pretrain.methods.byol import BYOL
from pretrain.methods.mocov2 import MoCoV2
from pretrain.methods.simclr import SimCLR

METHODS: dict[str, type[Method]] = {
    "simclr": SimCLR,
    "byol": BYOL,
    "barlow_twins": BarlowTwins,
    "mocov2": MoCoV2,
}


def build_method(name: str, backbone: nn.Module, feature_dim: int, **method_args: Any) -> Method:
    """``METHODS[name](backbone, feature_dim, **method_args)``, with a clear error for bad names."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")
    try:
        return METHODS[name](backbone, feature_dim, **method_args)
    except TypeError as err:
        raise ValueError(f"bad --method-arg for {name}: {err}") from err


__all__ = ["METHODS", "Method", "Regularizer", "build_method"]
