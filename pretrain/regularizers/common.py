"""What every regularizer does the same way: read its options, check the base method."""
from __future__ import annotations

from typing import Any

import torch

from pretrain.config import ConfigError
from pretrain.methods.base import Method


def options(name: str, cfg: Any, defaults: dict[str, Any]) -> dict[str, Any]:
    """``defaults`` overridden by ``cfg.regularizer_args``; unknown keys are an error."""
    given = dict(getattr(cfg, "regularizer_args", None) or {})
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ConfigError(f"--regularizer-arg {', '.join(unknown)}: not an option of {name}; "
                          f"its options are {', '.join(sorted(defaults))}")
    return {**defaults, **given}


def require_method(name: str, method: Method, supported: tuple[str, ...]) -> str:
    """The base method's name, refused when the regularizer's paper does not define the pair."""
    from pretrain.methods import METHODS

    method_name = next(key for key, cls in METHODS.items() if isinstance(method, cls))
    if method_name not in supported:
        raise ConfigError(f"--regularizer {name} is defined for --method "
                          f"{' / '.join(supported)}, not {method_name}")
    return method_name


def output_dim(module: torch.nn.Module) -> int:
    """Output width of an MLP head (its last Linear layer)."""
    return [m for m in module.modules() if isinstance(m, torch.nn.Linear)][-1].out_features


def warmup_fraction(warmup_epochs: float, paper_epochs: float, run_epochs: float | None) -> float:
    """A paper's warm-up of ``warmup_epochs`` out of ``paper_epochs``, as a fraction of this run.

    A run no longer than the paper's keeps the paper's fraction (a short run gets a proportionate
    warm-up); a longer run keeps the paper's number of epochs:
    min(warmup_epochs, run_epochs * warmup_epochs / paper_epochs) / run_epochs. Without the run's
    length (a module used outside the training loop) the paper's fraction.
    """
    return warmup_epochs / max(paper_epochs, run_epochs or paper_epochs)
