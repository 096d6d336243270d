"""What every detectron2 driver builds on: the suite's config files (their ``_BASE_`` chains read
safely), MoCo's C4 ROI head, and the load guard that checks what detectron2 loaded."""
from __future__ import annotations

from pathlib import Path

import torch
import yaml

# isort: off
import transfer.compat  # noqa: F401  (shims; before any detectron2 import)
# isort: on

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import CfgNode, get_cfg
from detectron2.layers import get_norm
from detectron2.modeling import ROI_HEADS_REGISTRY
from detectron2.modeling.roi_heads import Res5ROIHeads

from pretrain.cli import InputError
from pretrain.foreign import preview
from transfer.compat import ZOO_PREFIX, UnsafeConfigError, detectron2_base
from transfer.config_guard import check_config_chain

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
BACKBONE_FILE = "backbone_detectron2.pkl"  # a run's converted backbone
ENGINE_PREFIXES = ("backbone.bottom_up.", "backbone.", "roi_heads.")  # FPN, C4 res2-4, C4 res5


class DriverError(InputError):
    """Bad input to a driver (data, config, run folder); the message says what and how."""


if "Res5ROIHeadsExtraNorm" not in ROI_HEADS_REGISTRY:  # this module may be imported twice
    @ROI_HEADS_REGISTRY.register()
    class Res5ROIHeadsExtraNorm(Res5ROIHeads):
        """Res5ROIHeads with an extra norm after res5: MoCo's C4 detection head
        (facebookresearch/moco, detection/train_net.py)."""

        def _build_res5_block(self, cfg: CfgNode) -> tuple[torch.nn.Module, int]:
            seq, out_channels = super()._build_res5_block(cfg)
            seq.add_module("norm", get_norm(cfg.MODEL.RESNETS.NORM, out_channels))
            return seq, out_channels


# ------------------------------------------------------------------------------------ config
def load_config(path: str | Path) -> CfgNode:
    """detectron2's default config merged with ``path`` and its ``_BASE_`` chain."""
    cfg = get_cfg()
    check_config_chain(Path(path), detectron2_base)  # a YAML bomb or a _BASE_ loop: one line
    _merge_config(cfg, Path(path))
    return cfg


def _merge_config(cfg: CfgNode, path: Path) -> None:
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise DriverError(f"--config {path}: cannot be read as YAML "
                          f"({' '.join(str(err).split())})") from err
    if not isinstance(doc, dict):
        raise DriverError(f"--config {path}: expected a mapping of config keys")
    base = doc.pop("_BASE_", None)
    try:  # a base must lie in the model zoo or transfer/configs (transfer/compat.py)
        if base is not None and str(base).startswith(ZOO_PREFIX):
            cfg.merge_from_file(str(detectron2_base(base, path)))
        elif base is not None:
            _merge_config(cfg, detectron2_base(base, path))
    except UnsafeConfigError as err:
        raise DriverError(f"--config {err}") from err
    try:
        cfg.merge_from_other_cfg(CfgNode(doc))
    except (KeyError, ValueError, AssertionError) as err:
        raise DriverError(f"--config {path}: {err}") from err


# ------------------------------------------------------------------------------------ load guard
def loaded_file(checkpointer: DetectionCheckpointer, cfg: CfgNode, resume: bool) -> str:
    """The file ``checkpointer.resume_or_load(cfg.MODEL.WEIGHTS, resume=resume)`` reads."""
    return (checkpointer.get_checkpoint_file() if resume and checkpointer.has_checkpoint()
            else cfg.MODEL.WEIGHTS)


def check_loaded(model: torch.nn.Module, path: str | Path) -> int:
    """Fail unless ``model`` holds every tensor of ``path`` as written: a converted backbone
    (its names under the backbone, or C4's res5 under ``roi_heads.``, found by this fixed rule,
    not by detectron2's matching heuristics) or a run's checkpoint (same names). detectron2 only
    logs what it did not load. Returns the number of tensors checked."""
    path = Path(path)
    data = DetectionCheckpointer(model)._load_file(str(path))
    written = data.get("model", data) if isinstance(data, dict) else {}
    state = model.state_dict()
    converted = path.name == BACKBONE_FILE
    wrong = []
    for name, value in written.items():
        if name.endswith("num_batches_tracked"):
            continue
        if converted:
            found = [prefix + name for prefix in ENGINE_PREFIXES if prefix + name in state]
            key = found[0] if len(found) == 1 else None
        else:
            key = name if name in state else None
        expected = torch.as_tensor(value)
        if key is None or state[key].shape != expected.shape or not torch.equal(
                state[key].detach().cpu(), expected.to(state[key].dtype)):
            wrong.append(key or name)
    if not written or wrong:
        raise DriverError(
            f"{path}: after detectron2 built and loaded the model, {len(wrong)} of its "
            f"{len(written)} tensors are not in the model as written: {preview(wrong, 8)} "
            "(detectron2 only logs this); check the file, the config and --resume")
    return len(written)
