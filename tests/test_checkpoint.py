"""The suite's checkpoint formats: atomic, tensor-only, and never executing code from a file."""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from pretrain.backbones import arch_of, build_resnet, stem_of
from pretrain.checkpoint import (
    CheckpointError,
    load_backbone,
    load_pickle_arrays,
    load_torch,
    save_backbone,
    save_state,
)
from pretrain.files import atomic_write


class _PlantsAFile:
    """Unpickling this object would create a file: the proof that code ran."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (Path.touch, (Path(self.target),))


def test_backbone_round_trip_keeps_tensors_and_meta(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_resnet("resnet18", stem="small")
    path = save_backbone(tmp_path / "b.safetensors", model.state_dict(),
                         {"method": "simclr", "arch": "resnet18", "stem": "small"})
    state, meta = load_backbone(path)
    assert meta["method"] == "simclr" and meta["format_version"] == "1"
    assert state.keys() == model.state_dict().keys()
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert not any(k.startswith("fc.") for k in state)
    assert arch_of(state) == "resnet18" and stem_of(state) == "small"


@pytest.mark.parametrize("arch", ["resnet18", "resnet34", "resnet50"])
def test_arch_is_read_from_keys(arch: str) -> None:
    assert arch_of(build_resnet(arch).state_dict()) == arch


def test_truncated_and_empty_backbone_files_are_named(tmp_path: Path) -> None:
    path = save_backbone(tmp_path / "b.safetensors", build_resnet("resnet18").state_dict(), {})
    data = path.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cut.safetensors.*truncated"):
        load_backbone(tmp_path / "cut.safetensors")
    (tmp_path / "empty.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty file"):
        load_backbone(tmp_path / "empty.safetensors")
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_backbone(tmp_path / "absent.safetensors")


def test_atomic_write_failure_keeps_previous_file(tmp_path: Path) -> None:
    target = tmp_path / "state.pt"
    save_state(target, {"step": torch.tensor(1)})

    def dies_half_way(f) -> None:
        f.write(b"partial")
        raise KeyboardInterrupt  # a kill arriving during the write

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, dies_half_way)
    assert load_torch(target)["step"].item() == 1
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores folder permissions")
def test_unwritable_folder_is_a_clear_error(tmp_path: Path) -> None:
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(OSError, match="cannot write"):
            save_state(tmp_path / "s.pt", {"x": torch.zeros(1)})
    finally:
        tmp_path.chmod(0o700)


def test_disk_full_leaves_previous_checkpoint(tmp_path: Path) -> None:
    target = tmp_path / "state.pt"
    save_state(target, {"step": torch.tensor(7)})

    def disk_full(f) -> None:
        f.write(b"abc")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left.*previous file there is unchanged"):
        atomic_write(target, disk_full)
    assert load_torch(target)["step"].item() == 7


def test_torch_loader_refuses_code(tmp_path: Path) -> None:
    planted = tmp_path / "planted"
    evil = tmp_path / "evil.pth"
    torch.save({"state_dict": _PlantsAFile(str(planted))}, evil)
    with pytest.raises(CheckpointError, match="refused"):
        load_torch(evil)
    assert not planted.exists()


def test_pickle_loader_admits_arrays_and_refuses_code(tmp_path: Path) -> None:
    good = tmp_path / "good.pkl"
    with open(good, "wb") as f:
        pickle.dump({"model": {"w": np.arange(6.0).reshape(2, 3)}, "__author__": "x"}, f)
    assert load_pickle_arrays(good)["model"]["w"].shape == (2, 3)

    planted = tmp_path / "planted"
    evil = tmp_path / "evil.pkl"
    with open(evil, "wb") as f:
        pickle.dump({"model": _PlantsAFile(str(planted))}, f)
    with pytest.raises(CheckpointError, match="refused to unpickle"):
        load_pickle_arrays(evil)
    assert not planted.exists()


def test_atomic_write_gives_the_usual_file_mode(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        path = save_state(tmp_path / "s.pt", {"x": torch.zeros(1)})
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644
