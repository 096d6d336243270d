"""Reading (pretrain/foreign/) and writing (transfer/convert.py): every source format round-trips
exactly into detectron2 and mmpose, and every bad input is a clear error that writes nothing."""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from pretrain.backbones import build_resnet, stage_outputs
from pretrain.checkpoint import CheckpointError, load_pickle_arrays, save_backbone
from pretrain.foreign import read_backbone
from pretrain.open_backbone import open_backbone
from transfer import convert, export_formats
from transfer.convert import detectron2_name, export_backbone


def convert_checkpoint(src: Path, to: str, out: Path, prefix: str | None = None) -> Path:
    """What ``python transfer/convert.py SRC --to TO --out OUT`` does."""
    return export_backbone(open_backbone(src, prefix=prefix), to, out)


def _random_resnet(arch: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """A torchvision ResNet state_dict (with fc) where every tensor, BN statistics included, is
    distinct, so that any swapped or dropped tensor changes the features."""
    torch.manual_seed(seed)
    state = getattr(torchvision.models, arch)(weights=None).state_dict()
    for key, value in state.items():
        if key.endswith("running_var"):
            value.uniform_(0.5, 1.5)
        elif key.endswith(("running_mean", "bias")):
            value.normal_(0, 0.1)
        elif key.endswith("weight") and value.dim() == 1:  # BN scale
            value.uniform_(0.5, 1.0)
    return state


@pytest.fixture(scope="module")
def resnet18() -> dict[str, torch.Tensor]:
    return _random_resnet("resnet18")


@pytest.fixture(scope="module")
def resnet50() -> dict[str, torch.Tensor]:
    return _random_resnet("resnet50")


def _backbone(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if not k.startswith("fc.")}


def _reference_features(state: dict[str, torch.Tensor], x: torch.Tensor) -> dict:
    model = build_resnet("resnet50" if "layer1.0.conv3.weight" in state else "resnet18")
    model.load_state_dict(_backbone(state))
    with torch.no_grad():
        return stage_outputs(model.eval(), x)


def _assert_close(got: dict, expected: dict) -> None:
    for stage, ref in expected.items():
        assert got[stage].shape == ref.shape
        assert (got[stage] - ref).abs().max() <= 1e-4 * ref.abs().max(), stage


def _detectron2_features(pkl: Path, arch: str, x: torch.Tensor) -> dict:
    """Load ``pkl`` the way detectron2's trainer does (DetectionCheckpointer.load) into its
    ResNet built with the protocol settings, independently of convert.verify_detectron2."""
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.layers import ShapeSpec
    from detectron2.modeling.backbone.resnet import build_resnet_backbone

    backbone = build_resnet_backbone(convert.detectron2_resnet_cfg(arch), ShapeSpec(channels=3))
    DetectionCheckpointer(backbone).load(str(pkl))
    with torch.no_grad():
        return backbone.eval()(x)


X = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))


# ------------------------------------------------------------------------------ round trips
@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_torchvision_resnet_round_trips_into_detectron2(arch: str, tmp_path: Path,
                                                        request: pytest.FixtureRequest) -> None:
    state = request.getfixturevalue(arch)
    src = tmp_path / "tv.pth"
    torch.save(state, src)
    out = convert_checkpoint(src, to="detectron2", out=tmp_path / "d2.pkl")
    data = load_pickle_arrays(out)
    assert data["matching_heuristics"] is True and data["__author__"]
    expected = {detectron2_name(k): v for k, v in _backbone(state).items()
                if not k.endswith("num_batches_tracked")}
    assert set(data["model"]) == set(expected)
    assert len(expected) == (265 if arch == "resnet50" else 100)
    assert all(np.array_equal(data["model"][k], v.numpy()) for k, v in expected.items())
    assert {"stem.conv1.weight", "stem.conv1.norm.running_var", "res2.0.shortcut.norm.bias"
            if arch == "resnet50" else "res3.0.shortcut.norm.bias"} <= set(data["model"])
    _assert_close(_detectron2_features(out, arch, X), _reference_features(state, X))
    assert sorted(os.listdir(tmp_path)) == ["d2.pkl", "tv.pth"]  # no temporary file left


def test_torchvision_resnet50_round_trips_into_mmpose(resnet50: dict, tmp_path: Path) -> None:
    from mmpose.models.backbones import ResNet

    state, arch = resnet50, "resnet50"
    src = tmp_path / "tv.pth"
    torch.save(state, src)
    out = convert_checkpoint(src, to="mmpose", out=tmp_path / "mm.pth")
    saved = torch.load(out, weights_only=True)["state_dict"]
    assert set(saved) == set(_backbone(state))  # unprefixed torchvision keys without fc
    backbone = ResNet(depth=int(arch[6:]), out_indices=(0, 1, 2, 3),
                      init_cfg=dict(type="Pretrained", checkpoint=str(out)))
    backbone.init_weights()
    backbone.eval()
    with torch.no_grad():
        features = dict(zip(("res2", "res3", "res4", "res5"), backbone(X)))
    _assert_close(features, _reference_features(state, X))


def _formats(state: dict[str, torch.Tensor]) -> dict[str, tuple[object, str, str | None]]:
    """name -> (file content, expected source_format, --prefix) made by renaming keys."""
    bb = _backbone(state)
    pre = lambda prefix, sd: {prefix + k: v for k, v in sd.items()}  # noqa: E731
    mlp = {"fc.0.weight": torch.zeros(8, 512), "fc.0.bias": torch.zeros(8),
           "fc.2.weight": torch.zeros(4, 8), "fc.2.bias": torch.zeros(4)}
    index = {"conv1": "0", "bn1": "1", "layer1": "4", "layer2": "5", "layer3": "6", "layer4": "7"}
    sequential = {index[k.split(".")[0]] + "." + k.split(".", 1)[1]: v for k, v in bb.items()}
    d2 = {detectron2_name(k): v.numpy() for k, v in bb.items()}
    d2.update({"stem.fc.weight": state["fc.weight"].numpy(),
               "stem.fc.bias": state["fc.bias"].numpy()})  # as MoCo's converter leaves them
    return {
        "torchvision.pth": (state, "torchvision/timm state_dict", None),
        "timm.pth": ({"state_dict": state, "state_dict_ema": state, "arch": "resnet18",
                      "epoch": 3}, "torchvision/timm state_dict", None),
        "moco.pth.tar": ({"epoch": 200, "arch": "resnet18", "state_dict": {
            **pre("module.encoder_q.", {**bb, **mlp}), **pre("module.encoder_k.", {**bb, **mlp}),
            "module.queue": torch.zeros(8, 16), "module.queue_ptr": torch.zeros(1)}},
            "MoCo v1/v2", None),
        "mocov3.pth": ({"state_dict": {**pre("module.base_encoder.", {**bb, **mlp}),
                                       **pre("module.momentum_encoder.", {**bb, **mlp}),
                                       "module.predictor.0.weight": torch.zeros(4, 4)}},
                       "MoCo v3", None),
        "solo_learn.ckpt": ({"state_dict": {**pre("backbone.", bb),  # BYOL: a predictor
                                            **pre("momentum_backbone.", bb),
                                            "predictor.0.weight": torch.zeros(8, 8),
                                            "projector.0.weight": torch.zeros(8, 512),
                                            "classifier.weight": torch.zeros(10, 512)},
                             "epoch": 99}, "solo-learn", None),
        "mmselfsup.pth": ({"meta": {"epoch": 200}, "state_dict": {
            **pre("backbone.", bb), "neck.mlp.0.weight": torch.zeros(8, 512),
            "head.loss.weight": torch.zeros(1)}}, "prefix 'state_dict.backbone.'", None),
        "vissl.torch": ({"classy_state_dict": {"base_model": {"model": {
            "trunk": pre("_feature_blocks.", bb), "heads": {"0.clf.0.weight": torch.zeros(8)}}}},
            "phase_idx": 3}, "VISSL", None),
        "lightly.ckpt": ({"state_dict": {**pre("backbone.", sequential),
                                         "projection_head.layers.0.weight": torch.zeros(8, 512)}},
                         "nn.Sequential ResNet (lightly's examples)", None),
        "moco_d2.pkl": ({"model": d2, "__author__": "MOCO", "matching_heuristics": True},
                        "detectron2", None),
        "custom.pth": ({"net.trunk.a." + k: v for k, v in bb.items()}
                       | {"net.trunk.b." + k: v for k, v in bb.items()},
                       "prefix 'net.trunk.a.'", "net.trunk.a."),
    }


@pytest.mark.parametrize("name", ["torchvision.pth", "timm.pth", "moco.pth.tar", "mocov3.pth",
                                  "solo_learn.ckpt", "mmselfsup.pth", "vissl.torch",
                                  "lightly.ckpt", "moco_d2.pkl", "custom.pth"])
def test_every_source_format_converts_exactly(name: str, resnet18: dict, tmp_path: Path) -> None:
    content, source_format, prefix = _formats(resnet18)[name]
    src = tmp_path / name
    if name.endswith(".pkl"):
        src.write_bytes(pickle.dumps(content, protocol=4))
    else:
        torch.save(content, src)
    state, meta = read_backbone(src, prefix=prefix)
    assert meta["source_format"] == source_format and meta["arch"] == "resnet18"
    assert meta["stem"] == "imagenet"
    expected = _backbone(resnet18)
    assert set(state) == set(expected)
    assert all(torch.equal(state[k], v.float() if v.is_floating_point() else v)
               for k, v in expected.items())
    convert_checkpoint(src, to="detectron2", out=tmp_path / "out.pkl", prefix=prefix)  # verified


def test_suite_checkpoint_keeps_its_meta(resnet18: dict, tmp_path: Path) -> None:
    src = save_backbone(tmp_path / "backbone.safetensors", _backbone(resnet18),
                        {"method": "simclr", "regularizer": "msr", "arch": "resnet18",
                         "stem": "imagenet", "data": "synthetic-default", "epochs": 1})
    state, meta = read_backbone(src)
    assert meta["source_format"] == "suite" and meta["method"] == "simclr"
    assert meta["regularizer"] == "msr" and meta["arch"] == "resnet18"
    out = convert_checkpoint(src, to="mmpose", out=tmp_path / "mm.pth")
    assert '"method": "simclr"' in torch.load(out, weights_only=True)["meta"]["suite_meta"]


# ------------------------------------------------------------------------------ bad input
def _error(src: Path, tmp_path: Path, to: str = "detectron2", prefix: str | None = None) -> str:
    before = set(os.listdir(tmp_path))
    out = tmp_path / ("out.pkl" if to == "detectron2" else "out.pth")
    with pytest.raises(CheckpointError) as info:
        convert_checkpoint(src, to=to, out=out, prefix=prefix)
    assert set(os.listdir(tmp_path)) == before, "a failed conversion left a file behind"
    return str(info.value)


def test_wrong_prefix_names_the_prefixes_found(resnet18: dict, tmp_path: Path) -> None:
    src = tmp_path / "moco.pth"
    torch.save({"state_dict": {"module.encoder_q." + k: v for k, v in resnet18.items()}}, src)
    message = _error(src, tmp_path, prefix="module.encoder.")
    assert "module.encoder." in message and "'state_dict.module.encoder_q.'" in message


def test_two_resnets_need_a_prefix(resnet18: dict, tmp_path: Path) -> None:
    src = tmp_path / "two.pth"
    torch.save({f"{p}.{k}": v for p in ("student", "online") for k, v in resnet18.items()}, src)
    message = _error(src, tmp_path)
    assert "--prefix" in message and "'online.'" in message and "'student.'" in message


def test_momentum_copy_without_evidence_of_the_method_is_refused(resnet18: dict,
                                                                 tmp_path: Path) -> None:
    """backbone + momentum_backbone is MoCo/BYOL (evaluate the online one) or solo-learn's DINO
    (evaluate the momentum teacher): with no head that shows which, the choice is the user's."""
    bb = _backbone(resnet18)
    src = tmp_path / "solo.ckpt"
    torch.save({"state_dict": {**{f"backbone.{k}": v for k, v in bb.items()},
                               **{f"momentum_backbone.{k}": v for k, v in bb.items()},
                               "projector.0.weight": torch.zeros(8, 512)}}, src)
    message = _error(src, tmp_path)
    assert "'state_dict.backbone.'" in message and "'state_dict.momentum_backbone.'" in message
    assert "--prefix" in message
    state, meta = read_backbone(src, prefix="state_dict.momentum_backbone.")
    assert meta["copy"] == "'state_dict.momentum_backbone.', chosen by --prefix"


@pytest.mark.parametrize("names, chosen", [
    (("module.encoder_q.", "module.encoder_k."), "module.encoder_q."),  # MoCo v1/v2
    (("online_network.", "target_network."), "online_network."),  # BYOL reimplementations
    (("student.backbone.", "teacher.backbone."), "teacher.backbone."),  # DINO's own checkpoints
    (("model.", "model_ema."), "model."),  # an EMA copy is never chosen unasked
])
def test_the_copy_rule_by_name(names: tuple[str, str], chosen: str, resnet18: dict,
                               tmp_path: Path) -> None:
    src = tmp_path / "two.pth"
    torch.save({name + k: v for name in names for k, v in _backbone(resnet18).items()}, src)
    meta = read_backbone(src)[1]
    assert meta["source_prefix"] == chosen and chosen in meta["copy"]


def test_an_ema_copy_alone_is_read_only_when_asked(resnet18: dict, tmp_path: Path) -> None:
    src = tmp_path / "ema.pth"
    torch.save({"model_ema": _backbone(resnet18)}, src)
    assert "--prefix 'model_ema.'" in _error(src, tmp_path)
    assert read_backbone(src, prefix="model_ema.")[1]["source_prefix"] == "model_ema."


def test_missing_tensors_are_listed(resnet18: dict, tmp_path: Path) -> None:
    src = tmp_path / "partial.pth"
    torch.save({k: v for k, v in resnet18.items()
                if k not in ("layer3.1.bn2.running_var", "layer4.0.downsample.0.weight")}, src)
    message = _error(src, tmp_path)
    assert "layer3.1.bn2.running_var" in message and "layer4.0.downsample.0.weight" in message


def test_unmapped_keys_are_listed(resnet18: dict, tmp_path: Path) -> None:
    src = tmp_path / "se.pth"
    torch.save({**resnet18, "layer1.0.se.fc1.weight": torch.zeros(4, 64)}, src)
    assert "layer1.0.se.fc1.weight" in _error(src, tmp_path)


def test_classifier_only_file(tmp_path: Path) -> None:
    src = tmp_path / "linear.pth"
    torch.save({"fc.weight": torch.zeros(10, 512), "fc.bias": torch.zeros(10)}, src)
    message = _error(src, tmp_path)
    assert "no ResNet backbone" in message and "classifier" in message


def test_caffe2_named_weights_are_refused(tmp_path: Path) -> None:
    src = tmp_path / "R-50.pkl"  # detectron2's ImageNetPretrained/MSRA naming
    src.write_bytes(pickle.dumps({"conv1_w": np.zeros((64, 3, 7, 7), np.float32),
                                  "res2_0_branch2a_w": np.zeros((64, 64, 1, 1), np.float32)}))
    assert "Caffe2" in _error(src, tmp_path)


def test_truncated_file(resnet18: dict, tmp_path: Path) -> None:
    full = tmp_path / "full.pth"
    torch.save(resnet18, full)
    src = tmp_path / "truncated.pth"
    src.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    assert "truncated" in _error(src, tmp_path)


@pytest.mark.parametrize("to", ["detectron2", "mmpose"])
def test_small_image_stem_is_refused(to: str, tmp_path: Path) -> None:
    """A 3x3 conv1 whose padding the file does not say is refused naming --stem; once said, the
    engines (ImageNet stem only) refuse it."""
    src = tmp_path / "cifar.pth"
    torch.save(build_resnet("resnet18", stem="small").state_dict(), src)
    message = _error(src, tmp_path, to=to)
    assert "--stem small (padding 1)" in message and "--stem small-pad2" in message
    with pytest.raises(CheckpointError, match="small-image stem .*'--stem imagenet'"):
        export_backbone(open_backbone(src, stem="small-pad2"), to, tmp_path / "out.pth")
    assert not (tmp_path / "out.pth").exists()


class _RunsCode:
    def __reduce__(self) -> tuple:
        return (os.system, ("touch pwned",))


@pytest.mark.parametrize("suffix", [".pkl", ".pth"])
def test_a_pickle_that_runs_code_is_refused(suffix: str, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    src = tmp_path / f"evil{suffix}"
    payload = {"model": {"conv1.weight": np.zeros(3)}, "x": _RunsCode()}
    if suffix == ".pkl":
        src.write_bytes(pickle.dumps(payload, protocol=4))
    else:
        torch.save(payload, src)
    message = _error(src, tmp_path)
    assert "refused" in message
    assert not (tmp_path / "pwned").exists()


def test_existing_output_survives_a_failed_conversion(resnet18: dict, tmp_path: Path) -> None:
    good = tmp_path / "good.pth"
    torch.save(resnet18, good)
    out = convert_checkpoint(good, to="detectron2", out=tmp_path / "out.pkl")
    before = out.read_bytes()
    bad = tmp_path / "bad.pth"
    torch.save({k: v for k, v in resnet18.items() if "layer2" not in k}, bad)
    _error(bad, tmp_path)
    assert out.read_bytes() == before


def test_verification_catches_a_wrong_detectron2_mapping(resnet18: dict, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A renaming bug (BN 1 and 2 swapped) writes a file that loads completely, so only the
    feature comparison can catch it; the file must not appear."""
    src = tmp_path / "tv.pth"
    torch.save(resnet18, src)
    right = export_formats.detectron2_name
    swapped = {"conv1.norm": "conv2.norm", "conv2.norm": "conv1.norm"}

    def wrong(key: str) -> str:
        name = right(key)
        for a, b in swapped.items():
            if f".{a}." in name and name.startswith("res"):
                return name.replace(f".{a}.", f".{b}.")
        return name

    monkeypatch.setattr(export_formats, "detectron2_name", wrong)
    message = _error(src, tmp_path)
    assert "features differ" in message, message  # every key loads: only the features tell
    assert not (tmp_path / "out.pkl").exists()


def test_verification_catches_an_mmpose_file_that_loads_nothing(
        resnet18: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """mmpose only warns when a 'backbone.'-prefixed file matches no key; verification fails."""
    src = tmp_path / "tv.pth"
    torch.save(resnet18, src)
    right = convert.mmpose_bytes
    monkeypatch.setattr(convert, "mmpose_bytes", lambda state, meta: right(
        {"backbone." + k: v for k, v in state.items()}, meta))
    assert "did not load" in _error(src, tmp_path, to="mmpose")


def test_command_line(resnet18: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src = tmp_path / "tv.pth"
    torch.save(resnet18, src)
    assert convert.main([str(src), "--to", "detectron2", "--out", str(tmp_path / "a.pkl")]) == 0
    assert "verified" in capsys.readouterr().out
    assert convert.main([str(src), "--to", "mmpose", "--out", str(tmp_path / "a.pth"),
                         "--no-verify"]) == 0
    assert "NOT verified" in capsys.readouterr().out
    assert convert.main([str(tmp_path / "absent.pth"), "--to", "mmpose", "--out",
                         str(tmp_path / "b.pth")]) == 2
    assert "no such checkpoint file" in capsys.readouterr().err
