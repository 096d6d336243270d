"""A pretraining run's training state (``last_state.pt``): what it holds, writing it, and reading
it back for ``--resume``.

The state holds the step, the method (EMA target, queue), the optimizer, the regularizer and its
meta optimizer, the RNG states and the loss history. A run folder is untrusted input: a state file
that is not this run's (wrong keys, wrong shapes, a step that is not a count) is refused on one line
naming the file, before anything in the folder is rewritten, and so is a resume that would not
train (the run already reached the requested length: its record stays as it is).
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pretrain.backbones import FEATURE_DIMS, build_resnet
from pretrain.checkpoint import load_torch, save_state
from pretrain.config import ConfigError, load_yaml
from pretrain.methods import build_method

STATE_FILE = "last_state.pt"
STATE_KEYS = ("step", "method", "optimizer", "regularizer", "meta_optimizer", "rng", "history")


def rng_state() -> dict[str, Any]:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos,
                       "has_gauss": has_gauss, "gauss": gauss}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_training_state(path: Path, step: int, method: torch.nn.Module,
                        optimizer: torch.optim.Optimizer, regularizer: Any,
                        history: list[dict], config: dict[str, Any]) -> None:
    meta = regularizer.meta_optimizer
    save_state(path, {
        "step": step, "method": method.state_dict(), "optimizer": optimizer.state_dict(),
        "regularizer": regularizer.state_dict(),
        "meta_optimizer": meta.state_dict() if meta is not None else None,
        "rng": rng_state(), "history": history, "config": config})


def restore_training_state(path: Path, method: torch.nn.Module,
                           optimizer: torch.optim.Optimizer, regularizer: Any,
                           total_steps: int) -> tuple[int, list[dict]]:
    """Load ``path`` into the run's objects; returns (step reached, loss history). Refuses a state
    that is not a training state of this run, and one that already reached ``total_steps``."""
    state = load_torch(path)
    absent = [key for key in STATE_KEYS if not isinstance(state, dict) or key not in state]
    step, history = (state.get("step"), state.get("history")) if not absent else (None, None)
    if absent or not isinstance(step, int) or isinstance(step, bool) or step < 0 \
            or not isinstance(history, list):
        found = f"lacks {', '.join(absent)}" if absent else (
            f"has step {step!r:.40} and a history of type {type(history).__name__}")
        raise ConfigError(f"--resume: {path} is not a pretraining state ({found}); it was "
                          "altered or written by another program: start a new run with --name")
    if step >= total_steps:
        raise ConfigError(f"--resume: {path} has already reached step {step}, and this run is "
                          f"{total_steps} steps long; nothing is rewritten: pass --steps above "
                          f"{step} to train it further")
    meta = regularizer.meta_optimizer
    try:
        method.load_state_dict(state["method"])
        optimizer.load_state_dict(state["optimizer"])
        regularizer.load_state_dict(state["regularizer"])
        if meta is not None:
            meta.load_state_dict(state["meta_optimizer"])
        set_rng_state(state["rng"])
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as err:
        message = " ".join(str(err).split())[:300]
        raise ConfigError(f"--resume: {path} does not fit this run's model and optimizer "
                          f"({type(err).__name__}: {message}); it was altered or belongs to "
                          "another run: start a new run with --name") from err
    return step, history


def trained_modules(run: Path, regularizer_class: type) -> tuple[Any, int, torch.nn.Module,
                                                                 torch.nn.Module]:
    """(config, step, method, regularizer) of a pretraining run folder as its last saved state
    left them (the tools that measure a trained run: tools/mcr_scale.py, tools/msr_scale.py)."""
    cfg = load_yaml(run / "config.yaml")
    state = load_torch(run / STATE_FILE)
    method = build_method(cfg.method, build_resnet(cfg.arch, cfg.stem), FEATURE_DIMS[cfg.arch],
                          **cfg.method_args)
    regularizer = regularizer_class(method, cfg)
    method.load_state_dict(state["method"])
    regularizer.load_state_dict(state["regularizer"])
    return cfg, state["step"], method, regularizer
