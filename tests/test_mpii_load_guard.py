"""transfer/mpii_pose.py's guard after mmengine loads a Runner checkpoint (--resume,
--eval-only): every tensor of the file is in the model as written, or the run stops."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from transfer.mpii_checkpoint import RESUME_SCHEME
from transfer.mpii_config import MpiiPoseError
from transfer.mpii_guard import BackboneGuard


def test_runner_checkpoint_guard_names_tensors_the_model_does_not_hold(tmp_path: Path) -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    path = tmp_path / "iter_2.pth"
    torch.save({"state_dict": model.state_dict(), "meta": {}}, path)
    guard = BackboneGuard(None, tmp_path / "backbone_mmpose.pth", frozen=False,
                                    runner_checkpoint=RESUME_SCHEME + str(path))
    runner = SimpleNamespace(model=model)
    guard.before_val(runner)  # loaded as written
    with torch.no_grad():
        model[1].running_var[2] = 9.0
    with pytest.raises(MpiiPoseError, match="1 of its 7 tensors") as err:
        guard.before_val(runner)
    assert "1.running_var" in str(err.value) and "iter_2.pth" in str(err.value)
