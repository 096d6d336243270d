"""Walking a file's nested containers to its tensors, and checking each backbone tensor where it
enters: dense, finite floating point (``num_batches_tracked``: integer). Its shape has been
checked before (from the file's headers): a view that stretches a few bytes of storage to
terabytes never reaches the arithmetic here."""
from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pretrain.checkpoint import CheckpointError

MAX_DEPTH = 16                  # containers nested deeper than this are not searched
MAX_ENTRIES = 2_000_000         # dict entries visited in one file
_NUMPY_WEIGHT_KINDS = "fiub"


def flatten(path: Path, content: dict) -> tuple[dict[tuple[str, str], Any], bool]:
    """{(container path, key): tensor or numeric array} of the tensors in nested dicts, and
    whether containers deeper than :data:`MAX_DEPTH` were left out. Each container is visited
    once (breadth first: a container reached by two paths keeps the shorter), so a file of shared
    or self-referencing dicts costs its size, not the number of paths through it."""
    found: dict[tuple[str, str], Any] = {}
    seen: set[int] = set()
    queue: deque[tuple[dict, str, int]] = deque([(content, "", 0)])
    entries, cut = 0, False
    while queue:
        node, container, depth = queue.popleft()
        if id(node) in seen:
            continue
        seen.add(id(node))
        for key, value in node.items():
            entries += 1
            if entries > MAX_ENTRIES:
                raise CheckpointError(f"{path}: more than {MAX_ENTRIES} entries in its nested "
                                      "dicts; not a checkpoint layout this suite reads")
            if isinstance(value, torch.Tensor) or (isinstance(value, np.ndarray)
                                                   and value.dtype != object):
                found[(container, str(key))] = value
            elif isinstance(value, dict):
                if depth + 1 < MAX_DEPTH:
                    queue.append((value, f"{container}{key}.", depth + 1))
                else:
                    cut = True
    return found, cut


def checked_tensor(path: Path, key: str, value: Any) -> torch.Tensor:
    """``value`` (a tensor or numpy array of the backbone) as a dense CPU tensor, refused unless
    it holds finite floating-point numbers (``num_batches_tracked``: integers) and no negative
    variance. Call it only on a tensor whose shape is a ResNet's."""
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in _NUMPY_WEIGHT_KINDS or value.dtype.itemsize > 8:
            raise CheckpointError(f"{path}: '{key}' is a numpy array of dtype {value.dtype}, "
                                  "which no ResNet weight has")
        value = torch.from_numpy(np.array(value, value.dtype.newbyteorder("="), order="C"))
    if value.is_quantized or value.layout != torch.strided or value.is_meta:
        kind = "quantized" if value.is_quantized else "meta (data-less)" if value.is_meta \
            else f"{value.layout}"
        raise CheckpointError(f"{path}: '{key}' is a {kind} tensor; the suite reads dense "
                              "floating-point ResNet weights")
    if key.endswith("num_batches_tracked"):
        if value.is_floating_point() or value.is_complex() or value.dtype == torch.bool:
            raise CheckpointError(f"{path}: '{key}' holds {value.dtype} values, not a count")
        return value
    if not value.is_floating_point():
        raise CheckpointError(f"{path}: '{key}' holds {value.dtype} values; ResNet weights and "
                              "BN statistics are floating point")
    bad = int((~torch.isfinite(value)).sum())
    if bad:
        raise CheckpointError(f"{path}: '{key}' holds {bad} NaN or infinite value(s); the "
                              "training that wrote it diverged, so it is not a usable backbone")
    if key.endswith("running_var") and bool((value < 0).any()):
        raise CheckpointError(f"{path}: '{key}' holds negative variances; the file is damaged, "
                              "so it is not a usable backbone")
    return value
