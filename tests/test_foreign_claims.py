"""What a file says about its own network is read and checked (issue #30): the stride convention
an mmengine Runner checkpoint states in its config, the network name in saved arguments, the
solo-learn CIFAR stem's padding, the width of a wide ResNet/ResNeXt. Each file converts exactly,
compared with the network **as its own library builds it** (mmpose's ``ResNet(style='caffe')``,
solo-learn's stem laid out as ``solo/methods/base.py`` writes it), or is refused in one line;
never a wrong "verified". ``pytest tests/test_foreign_claims.py -s | grep max-abs-diff`` prints
the differences."""
from __future__ import annotations

import argparse
import copy
from pathlib import Path

import pytest
import torch
import torchvision
from test_library_checkpoints import (
    STAGES,
    LibraryFile,
    X,
    _lightning_checkpoint,
    convert_and_compare,
    randomize_norms,
    run_one_epoch,
    torchvision_stages,
)
from torch import nn

import transfer.compat  # noqa: F401,I001  (before detectron2 and mmpose)
from pretrain.backbones import stage_outputs
from pretrain.checkpoint import CheckpointError
from pretrain.foreign import read_backbone
from pretrain.open_backbone import open_backbone
from transfer import convert


def _one_line_refusal(src: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                      *flags: str) -> str:
    code = convert.main([str(src), "--to", "mmpose", "--out", str(tmp_path / "out.pth"),
                         *flags])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert not (tmp_path / "out.pth").exists()
    return err


# ------------------------------------------------------------------------------------ mmengine
def _runner_checkpoint(folder: Path, backbone: nn.Module, backbone_cfg: dict | None) -> Path:
    """mmengine 0.10's Runner, one epoch on the CPU, given ``cfg`` (what it records as
    ``meta['cfg']``, ``Config.pretty_text``) and its CheckpointHook writing epoch_1.pth."""
    cfg = None if backbone_cfg is None else dict(
        model=dict(type="ImageClassifier", backbone=backbone_cfg, head=dict(type="LinearClsHead")))
    run_one_epoch(folder, backbone, 2048, cfg=cfg)
    return folder / "epoch_1.pth"


@pytest.fixture(scope="module")
def caffe_resnet() -> nn.Module:
    """mmpretrain/mmcv's ``ResNet(depth=50, style='caffe')`` (mmpose's copy of it): the stride
    in the first 1x1 conv of each stage. Its own init runs first (the Runner then skips it):
    that init zeroes each block's last BN (``zero_init_residual``), which would leave every
    residual branch, and with it the stride convention, without effect on the features."""
    from mmpose.models.backbones import ResNet

    torch.manual_seed(0)
    resnet = ResNet(depth=50, out_indices=(0, 1, 2, 3), style="caffe")
    resnet.init_weights()
    return randomize_norms(resnet, 21)


def _mm_network(backbone: nn.Module):
    backbone = copy.deepcopy(backbone)
    backbone.eval()  # mmcv-style train() returns None: no chaining

    def network(x: torch.Tensor) -> dict[str, torch.Tensor]:
        return dict(zip(STAGES, backbone(x)))
    return network


@pytest.fixture(scope="module")
def mmengine_caffe(tmp_path_factory: pytest.TempPathFactory, caffe_resnet: nn.Module
                   ) -> LibraryFile:
    path = _runner_checkpoint(tmp_path_factory.mktemp("mm_caffe"), caffe_resnet,
                              dict(type="ResNet", depth=50, style="caffe", out_indices=(3,)))
    return LibraryFile(path, "resnet50", _mm_network(caffe_resnet),
                       "'state_dict.backbone.', the only copy")


def test_a_caffe_style_mmengine_resnet_converts_in_its_own_convention(
        mmengine_caffe: LibraryFile, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The style is read from meta['cfg']; both engines match mmpose's own caffe-style ResNet,
    and the probes' model does too."""
    said = convert_and_compare("mmengine style='caffe'", mmengine_caffe, tmp_path, capsys)
    assert said.count("meta['cfg'] model.backbone style='caffe'") == 2
    assert "MODEL.RESNETS.STRIDE_IN_1X1 True" in said and "model.backbone.style='caffe'" in said
    backbone = open_backbone(mmengine_caffe.path)
    with torch.no_grad():
        got = stage_outputs(backbone.model.eval(), X)["res5"]
        reference = mmengine_caffe.network(X)["res5"]
    assert float((got - reference).abs().max()) <= 1e-4 * float(reference.abs().max())


def test_a_caffe_file_forced_into_torchvisions_convention_is_refused(
        mmengine_caffe: LibraryFile, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    err = _one_line_refusal(mmengine_caffe.path, tmp_path, capsys, "--stride-in-1x1", "false")
    assert "style='caffe'" in err


def test_an_mmengine_resnet50_without_its_config_is_refused(
        tmp_path: Path, caffe_resnet: nn.Module, capsys: pytest.CaptureFixture) -> None:
    """A Runner checkpoint whose meta holds no model config cannot say its style."""
    path = _runner_checkpoint(tmp_path / "run", caffe_resnet, None)
    err = _one_line_refusal(path, tmp_path, capsys)
    assert "--stride-in-1x1 true" in err and "'caffe'" in err


@pytest.mark.parametrize("backbone_cfg, says", [
    (dict(type="ResNet", depth=18), "depth=18"),
    (dict(type="ResNeXt", depth=50, groups=32), "type='ResNeXt'"),
    (dict(type="ResNet", depth=50, deep_stem=True), "deep_stem=True"),
    (dict(type="ResNet_CIFAR", depth=50), "ResNet_CIFAR"),
])
def test_an_mmengine_config_that_contradicts_the_tensors_is_refused(
        backbone_cfg: dict, says: str, tmp_path: Path, caffe_resnet: nn.Module,
        capsys: pytest.CaptureFixture) -> None:
    path = _runner_checkpoint(tmp_path / "run", caffe_resnet, backbone_cfg)
    assert says in _one_line_refusal(path, tmp_path, capsys)


# ------------------------------------------------------------------------------------ names
def _resnet(arch: str, seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return randomize_norms(getattr(torchvision.models, arch)(), seed).state_dict()


@pytest.mark.parametrize("layout", ["moco", "timm", "dino"])
def test_a_network_name_that_contradicts_the_tensors_is_refused(
        layout: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """MoCo's main_moco.py saves ``arch``; timm's CheckpointSaver ``arch`` and ``args.model``;
    DINO's main_dino.py ``args.arch``: each says resnet50 over a resnet18."""
    state = _resnet("resnet18")
    content = {
        "moco": {"epoch": 200, "arch": "resnet50",
                 "state_dict": {f"module.encoder_q.{k}": v for k, v in state.items()}},
        "timm": {"epoch": 3, "arch": "resnet18", "state_dict": state, "version": 2,
                 "args": argparse.Namespace(model="resnet50", lr=0.1)},
        "dino": {"teacher": {f"backbone.{k}": v for k, v in state.items()},
                 "args": argparse.Namespace(arch="resnet50"), "epoch": 100},
    }[layout]
    torch.save(content, tmp_path / "file.pth")
    err = _one_line_refusal(tmp_path / "file.pth", tmp_path, capsys)
    assert "'resnet50'" in err and "plain resnet18" in err


@pytest.mark.parametrize("arch, kind", [("wide_resnet50_2", "a wide ResNet"),
                                        ("resnext50_32x4d", "a ResNeXt")])
def test_a_wide_or_grouped_resnet_is_named_as_such(arch: str, kind: str, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    with torch.device("meta"):
        shapes = getattr(torchvision.models, arch)().state_dict()
    torch.save({k: torch.zeros((), dtype=v.dtype).expand(v.shape) for k, v in shapes.items()},
               tmp_path / "file.pth")  # views of one number: the shapes without the bytes
    err = _one_line_refusal(tmp_path / "file.pth", tmp_path, capsys)
    assert kind in err and "incomplete" not in err


# ------------------------------------------------------------------------------------ formats
def test_format_labels_name_the_library(tmp_path: Path) -> None:
    """Official DINO (main_dino.py's save_dict: student, teacher, args, dino_loss) and an
    online/target BYOL file (sthalles/PyTorch-BYOL: nn.Sequential encoders) are named so."""
    state = {k: v for k, v in _resnet("resnet18").items() if not k.startswith("fc.")}
    index = {"conv1": "0", "bn1": "1", "layer1": "4", "layer2": "5", "layer3": "6", "layer4": "7"}
    sequential = {f"encoder.{index[k.split('.')[0]]}.{k.split('.', 1)[1]}": v
                  for k, v in state.items()}
    torch.save({"student": {f"module.backbone.{k}": v for k, v in state.items()},
                "teacher": {f"backbone.{k}": v for k, v in state.items()},
                "args": argparse.Namespace(arch="resnet18"), "epoch": 100,
                "dino_loss": {"center": torch.zeros(1, 8)}}, tmp_path / "dino.pth")
    torch.save({"online_network_state_dict": sequential,
                "target_network_state_dict": sequential}, tmp_path / "byol.pth")
    assert read_backbone(tmp_path / "dino.pth")[1]["source_format"] == \
        "DINO (facebookresearch/dino)"
    meta = read_backbone(tmp_path / "byol.pth")[1]
    assert meta["source_format"].startswith("online/target (BYOL-style) file")
    assert meta["source_prefix"] == "online_network_state_dict.encoder."


# ------------------------------------------------------------------------------------ stems
def _solo_cifar_backbone(seed: int) -> nn.Module:
    """solo/methods/base.py (BaseMethod.__init__), for cfg.data.dataset cifar10/cifar100:
    ``self.backbone.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=2, bias=False)``,
    ``self.backbone.maxpool = nn.Identity()``, ``self.backbone.fc = nn.Identity()``."""
    torch.manual_seed(seed)
    backbone = torchvision.models.resnet18()
    backbone.fc = nn.Identity()
    backbone.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=2, bias=False)
    backbone.maxpool = nn.Identity()
    return randomize_norms(backbone, seed)


@pytest.fixture
def solo_cifar(tmp_path: Path) -> tuple[Path, nn.Module]:
    """solo-learn SimCLR on CIFAR in Lightning's checkpoint layout (backbone, classifier,
    projector)."""
    module = nn.Module()
    module.backbone = _solo_cifar_backbone(31)
    module.classifier = nn.Linear(512, 10)
    module.projector = nn.Sequential(nn.Linear(512, 64), nn.ReLU(), nn.Linear(64, 16))
    path = tmp_path / "simclr-cifar10-ep=99.ckpt"
    torch.save(_lightning_checkpoint(module.state_dict()), path)
    return path, module.backbone


def test_solo_learns_cifar_stem_is_opened_with_its_own_padding(
        solo_cifar: tuple[Path, nn.Module], tmp_path: Path,
        capsys: pytest.CaptureFixture) -> None:
    """The probes' model gives solo-learn's stage sizes (34/17/9/5 on 32x32) and features; the
    engines (ImageNet stem only) refuse it in one line."""
    path, network = solo_cifar
    backbone = open_backbone(path)
    assert backbone.meta["stem"] == "small-pad2" and "solo-learn" in backbone.meta["stem_from"]
    x = X[:, :, :32, :32]
    with torch.no_grad():
        got = stage_outputs(backbone.model.eval(), x)
        reference = torchvision_stages(network)(x)
    assert [got[s].shape[-1] for s in STAGES] == [34, 17, 9, 5]
    worst = max(float((got[s] - reference[s]).abs().max()) for s in STAGES)
    with capsys.disabled():
        print(f"\n[max-abs-diff] solo-learn CIFAR stem -> suite torchvision model: {worst:.3g}")
    assert worst <= 1e-5 * float(reference["res5"].abs().max())
    assert "small-image stem" in _one_line_refusal(path, tmp_path, capsys)


def test_a_cifar_stem_whose_padding_is_not_said_needs_the_flag(
        solo_cifar: tuple[Path, nn.Module], tmp_path: Path) -> None:
    """A bare 3x3 stem needs --stem; the padding matters: padded 1, pooled res5 is far off."""
    path, network = solo_cifar
    bare = tmp_path / "weights.pth"
    torch.save(network.state_dict(), bare)
    with pytest.raises(CheckpointError, match="--stem small .*--stem small-pad2"):
        open_backbone(bare)
    assert open_backbone(bare, stem="small-pad2").meta["stem_from"] == "--stem"
    x = X[:, :, :32, :32]
    with torch.no_grad():
        reference = torchvision_stages(network)(x)["res5"].mean((2, 3))
        padded_1 = stage_outputs(open_backbone(bare, stem="small").model.eval(), x)["res5"]
    off = float((padded_1.mean((2, 3)) - reference).abs().max())
    print(f"\n[max-abs-diff] solo-learn CIFAR stem opened with padding 1: pooled res5 off by "
          f"{off:.3g} (values up to {float(reference.abs().max()):.3g})")
    assert padded_1.shape[-1] == 4 and off > 0.05 * float(reference.abs().max())
    with pytest.raises(CheckpointError, match="--stem small: .*solo-learn"):
        open_backbone(path, stem="small")


# ------------------------------------------------------------------------------------ broken
def test_a_source_whose_features_overflow_is_called_broken(tmp_path: Path) -> None:
    """Finite weights whose features are not (an overflowing conv): the source is broken, not
    'features differ'."""
    state = _resnet("resnet18")
    state["layer1.0.conv1.weight"] = torch.full_like(state["layer1.0.conv1.weight"], 3e38)
    torch.save(state, tmp_path / "file.pth")
    with pytest.raises(CheckpointError, match="source network itself gives non-finite"):
        convert.export_backbone(open_backbone(tmp_path / "file.pth"), "mmpose",
                                tmp_path / "out.pth")
    assert not (tmp_path / "out.pth").exists()
