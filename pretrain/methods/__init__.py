"""The base SSL methods: one file each, one registry line each (contracts in ``base.py``)."""
from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from pretrain.cli import InputError
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
    """``METHODS[name](backbone, feature_dim, **method_args)``; a bad name or option is an
    :class:`InputError` naming the flag."""
    if name not in METHODS:
        raise InputError(f"unknown method {name!r} (--method); choose one of {', '.join(METHODS)}")
    options = list(inspect.signature(METHODS[name].__init__).parameters)[3:]  # after feature_dim
    unknown = sorted(set(method_args) - set(options))
    if unknown:
        raise InputError(f"--method-arg {', '.join(unknown)}: not an option of {name}; its "
                         f"options are {', '.join(options)}")
    try:
        return METHODS[name](backbone, feature_dim, **method_args)
    except (TypeError, ValueError, RuntimeError) as err:
        given = " ".join(f"{key}={value}" for key, value in method_args.items())
        raise InputError(f"--method-arg {given}: not valid for {name} "
                         f"({' '.join(str(err).split())}); see pretrain/methods/{name}.py for "
                         "each option's meaning") from err


__all__ = ["METHODS", "Method", "Regularizer", "build_method"]
