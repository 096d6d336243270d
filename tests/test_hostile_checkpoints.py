"""Hostile and broken checkpoints (issue #18, the checkpoint cases): every one is refused with one
line naming the file and what is wrong, exit code 2, no traceback, no hang, from every entry point
that reads a backbone (convert, coco_det, mpii_pose, the probes), and nothing runs from the file."""
from __future__ import annotations

import io
import json
import os
import pickle
import resource
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from safetensors.torch import save_file
from test_checkpoint import _PlantsAFile
from test_untrusted import ENTRY_POINTS

import transfer.compat  # noqa: F401,I001  (before detectron2 and mmpose)
from pretrain.checkpoint import save_backbone
from pretrain.foreign import MAX_DEPTH, TRAINING_FILE_GLOBALS, reading
from transfer import convert
from transfer.convert import detectron2_name

pytestmark = pytest.mark.reliability
READERS = {name: run for name, run in ENTRY_POINTS.items() if name != "pretrain --resume"}


@pytest.fixture(scope="module")
def resnet18() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {k: v for k, v in torchvision.models.resnet18().state_dict().items()
            if not k.startswith("fc.")}


def nested_bomb(path: Path, levels: int = 40) -> Path:
    """issue #18 case 8: dicts nested ``levels`` deep, each referenced twice: a file of a few
    KB with 2**levels paths through it."""
    node: dict = {}
    for _ in range(levels):
        node = {"a": node, "b": node}
    torch.save(node, path)
    return path


def lfs_pointer(path: Path) -> Path:
    path.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:"
                    f"{'ab' * 32}\nsize 46830571\n")
    return path


def non_finite(path: Path, state: dict[str, torch.Tensor]) -> Path:
    broken = {k: v.clone() for k, v in state.items()}
    broken["layer2.0.bn1.running_var"][3] = float("nan")
    torch.save({"state_dict": broken}, path)
    return path


def planted(path: Path) -> Path:
    torch.save({"state_dict": {"conv1.weight": _PlantsAFile(str(path.parent / "planted"))}},
               path)
    return path


def planted_plain_pickle(path: Path) -> Path:
    """A plain pickle (not torch's format) under a .pth name, holding an object that runs code."""
    path.write_bytes(pickle.dumps({"state_dict": {
        "conv1.weight": _PlantsAFile(str(path.parent / "planted"))}}))
    return path


ZIP_BOMB_BYTES = 512 << 20


def zip_bomb(path: Path) -> Path:
    """A torch zip checkpoint whose tensor record is deflated: a few hundred KB on disk that
    unpack to ZIP_BOMB_BYTES (the issue's 3.9 MB file unpacked to 4.6 GB)."""
    import zipfile

    buffer = io.BytesIO()
    torch.save({"conv1.weight": torch.zeros(4)}, buffer)
    source = zipfile.ZipFile(buffer)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as target:
        for item in source.infolist():
            if not item.filename.endswith("/data/0"):
                target.writestr(item, source.read(item))
                continue
            entry = zipfile.ZipInfo(item.filename)
            entry.compress_type = zipfile.ZIP_DEFLATED
            with target.open(entry, "w") as record:
                for _ in range(ZIP_BOMB_BYTES // (16 << 20)):
                    record.write(bytes(16 << 20))
    return path


def terabyte_view(path: Path, state: dict[str, torch.Tensor]) -> Path:
    """A ResNet-18 whose one tensor is a 0-stride view of 4 bytes claiming 10 TB of floats
    (torch.save keeps a view's size and stride: the file stays small)."""
    torch.save({**state, "layer4.1.conv2.weight": torch.zeros(1).expand(10 * 2**40 // 4)}, path)
    return path


def detectron2_r50_without_convention(path: Path) -> Path:
    """A ResNet-50 with detectron2's names and nothing that says its stride convention."""
    torch.manual_seed(0)
    state = torchvision.models.resnet50().state_dict()
    torch.save({"model": {detectron2_name(k): v for k, v in state.items()
                          if not k.startswith("fc.")}}, path)
    return path


# case -> (how to write it, what the one line must say)
CASES: dict[str, tuple[Callable[[Path, dict], Path], tuple[str, ...]]] = {
    "nested dicts referenced twice": (lambda p, s: nested_bomb(p), ("holds no tensors",)),
    "Git LFS pointer": (lambda p, s: lfs_pointer(p), ("Git LFS pointer", "git lfs pull")),
    "NaN in a BN statistic": (non_finite, ("layer2.0.bn1.running_var", "NaN or infinite")),
    "an object that runs code": (lambda p, s: planted(p), ("refused", "pathlib.Path")),
    "a plain pickle named .pth that runs code": (lambda p, s: planted_plain_pickle(p),
                                                 ("refused", "pathlib.Path")),
    "a zip bomb": (lambda p, s: zip_bomb(p), ("is compressed", "not unpacked")),
    "a 10 TB view": (terabyte_view, ("layer4.1.conv2.weight (2748779069440,)",
                                     "expected (512, 512, 3, 3)")),
    "detectron2 names, no stride convention": (
        lambda p, s: detectron2_r50_without_convention(p),
        ("--stride-in-1x1 true", "--stride-in-1x1 false", "STRIDE_IN_1X1")),
}


class _Hung(Exception):
    pass


@pytest.fixture
def no_hang() -> Iterator[None]:
    """Fail instead of hanging (the nested dicts used to make every reader walk 2**40 paths)."""
    def hung(signum: int, frame: object) -> None:
        raise _Hung("still reading after 120 s")
    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(120)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def one_error_line(err: str) -> str:
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("entry", list(READERS))
@pytest.mark.parametrize("case", list(CASES))
def test_bad_checkpoint_is_one_line_and_exit_2_everywhere(
        case: str, entry: str, resnet18: dict, tiny_data: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture, no_hang: None) -> None:
    write, phrases = CASES[case]
    weights = write(tmp_path / "model.pth", resnet18)
    assert READERS[entry](weights, tmp_path, tiny_data) == 2
    line = one_error_line(capsys.readouterr().err)
    assert str(weights) in line and all(p in line for p in phrases), line
    assert "weights_only" not in line and "add_safe_globals" not in line  # torch's advice
    assert not (tmp_path / "planted").exists()


def _convert_error(src: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                   *flags: str) -> str:
    code = convert.main([str(src), "--to", "detectron2", "--out", str(tmp_path / "out.pkl"),
                         *flags])
    captured = capsys.readouterr()
    assert code == 2, captured.out
    assert not (tmp_path / "out.pkl").exists()
    line = one_error_line(captured.err)
    assert str(src) in line
    return line


def test_a_zip_bomb_is_refused_before_it_unpacks(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture) -> None:
    """Refused from the zip directory: the reader's peak memory does not grow by the bomb."""
    src = zip_bomb(tmp_path / "bomb.pth")
    assert src.stat().st_size < ZIP_BOMB_BYTES // 100
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    line = _convert_error(src, tmp_path, capsys)
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024
    assert "is compressed" in line and grown < ZIP_BOMB_BYTES // 4, (line, grown)


def test_a_self_referencing_checkpoint_is_read_once(resnet18: dict, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture,
                                                    no_hang: None) -> None:
    empty: dict = {"epoch": 3}
    empty["self"] = empty
    torch.save(empty, tmp_path / "loop.pth")
    assert "holds no tensors" in _convert_error(tmp_path / "loop.pth", tmp_path, capsys)
    full: dict = {"state_dict": dict(resnet18)}
    full["again"], full["state_dict"]["parent"] = full, full
    torch.save(full, tmp_path / "loop_with_weights.pth")
    assert convert.main([str(tmp_path / "loop_with_weights.pth"), "--to", "mmpose", "--out",
                         str(tmp_path / "ok.pth")]) == 0


def test_containers_nested_too_deep_are_not_searched(resnet18: dict, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    content: dict = dict(resnet18)
    for _ in range(MAX_DEPTH):
        content = {"inner": content}
    torch.save(content, tmp_path / "deep.pth")
    line = _convert_error(tmp_path / "deep.pth", tmp_path, capsys)
    assert f"nested deeper than {MAX_DEPTH} levels were not searched" in line


def test_a_file_too_large_for_any_resnet_checkpoint_is_refused(
        resnet18: dict, tmp_path: Path, capsys: pytest.CaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    torch.save(resnet18, tmp_path / "big.pth")
    monkeypatch.setattr(reading, "MAX_FILE_BYTES", 1 << 20)  # 1 MiB stands for 4 GiB here
    assert "larger than any ResNet-18/34/50 training checkpoint" in _convert_error(
        tmp_path / "big.pth", tmp_path, capsys)


def _suite_file(path: Path, state: dict, meta: str) -> Path:
    save_file(state, str(path), metadata={"suite_meta": meta})
    return path


@pytest.mark.parametrize("meta, says", [
    ('{"method": "simclr", "arch": ', "not valid JSON"),
    ('["simclr"]', "not a JSON object"),
    ('{"stride_in_1x1": "yes"}', "stride_in_1x1='yes', not true or false"),
])
def test_malformed_suite_metadata_is_one_line(meta: str, says: str, resnet18: dict,
                                              tmp_path: Path,
                                              capsys: pytest.CaptureFixture) -> None:
    state = dict(resnet18)
    if "stride" in meta:  # the convention matters (and is read) for bottleneck ResNets only
        state = {k: v for k, v in torchvision.models.resnet50().state_dict().items()
                 if not k.startswith("fc.")}
    src = _suite_file(tmp_path / "backbone.safetensors", state, meta)
    assert says in _convert_error(src, tmp_path, capsys)


def test_mis_encoded_metadata_is_one_line(resnet18: dict, tmp_path: Path,
                                          capsys: pytest.CaptureFixture) -> None:
    """A safetensors header whose metadata is not UTF-8, and a converted .pkl whose suite_meta
    is bytes that are not JSON."""
    good = save_backbone(tmp_path / "b.safetensors", resnet18, {"method": "byol"}).read_bytes()
    at = good.index(b"byol")
    (tmp_path / "bad.safetensors").write_bytes(good[:at] + b"\xff\xfe" + good[at + 2:])
    assert "not a readable safetensors file" in _convert_error(
        tmp_path / "bad.safetensors", tmp_path, capsys)
    pkl = tmp_path / "bad.pkl"
    pkl.write_bytes(pickle.dumps({"model": {detectron2_name(k): v.numpy()
                                            for k, v in resnet18.items()},
                                  "__author__": "x", "suite_meta": b"\xff{"}))
    assert "'suite_meta' metadata is not valid JSON" in _convert_error(pkl, tmp_path, capsys)


@pytest.mark.parametrize("content, says", [
    (lambda s: [s], "holds a 'list' object, not a dict of tensors"),
    (lambda s: {**s, "conv1.weight": s["conv1.weight"].to(torch.int32)},
     "'conv1.weight' holds torch.int32 values"),
    (lambda s: {**s, "layer1.0.conv1.weight": s["layer1.0.conv1.weight"].to(torch.complex64)},
     "'layer1.0.conv1.weight' holds torch.complex64 values"),
    (lambda s: {**s, "bn1.weight": torch.quantize_per_tensor(s["bn1.weight"], 0.1, 0,
                                                             torch.qint8)},
     "'bn1.weight' is a quantized tensor"),
    (lambda s: {**s, "bn1.bias": s["bn1.bias"].to_sparse()}, "'bn1.bias' is a torch.sparse_coo"),
    (lambda s: {**s, "fc.weight": torch.zeros(10, 512), "layer4.1.bn2.weight":
                torch.full((512,), float("inf"))}, "'layer4.1.bn2.weight' holds 512 NaN"),
])
def test_structure_and_dtype_are_checked_where_the_file_enters(
        content: Callable, says: str, resnet18: dict, tmp_path: Path,
        capsys: pytest.CaptureFixture) -> None:
    torch.save(content(dict(resnet18)), tmp_path / "odd.pth")
    assert says in _convert_error(tmp_path / "odd.pth", tmp_path, capsys)


def test_numpy_weights_of_odd_dtypes_are_refused(resnet18: dict, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture) -> None:
    model = {detectron2_name(k): v.numpy() for k, v in resnet18.items()}
    model["stem.conv1.weight"] = model["stem.conv1.weight"].astype(np.longdouble)
    (tmp_path / "odd.pkl").write_bytes(pickle.dumps({"model": model, "__author__": "x"}))
    assert "'model.stem.conv1.weight' is a numpy array of dtype float128" in _convert_error(
        tmp_path / "odd.pkl", tmp_path, capsys)
    model["stem.conv1.weight"] = np.full((64, 3, 7, 7), np.nan, np.float32)
    (tmp_path / "nan.pkl").write_bytes(pickle.dumps({"model": model, "__author__": "x"}))
    assert "'model.stem.conv1.weight' holds 9408 NaN" in _convert_error(
        tmp_path / "nan.pkl", tmp_path, capsys)


@pytest.mark.parametrize("global_name, hint", [
    ("collections.defaultdict", "torch.save(model.state_dict()"),
    ("mmengine.config.config.ConfigDict", "publish_model.py"),
    ("pytorch_lightning.utilities.parsing.AttributeDict", "LightningModule"),
])
def test_a_refused_object_is_named_with_what_to_do(global_name: str, hint: str, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    """The message names the object the file holds and says how to export the weights, never
    torch's advice to load with weights_only=False."""
    module, name = global_name.rsplit(".", 1)
    payload = (b"\x80\x02}q\x00X\x04\x00\x00\x00argsq\x01c" + module.encode() + b"\n"
               + name.encode() + b"\nq\x02)\x81q\x03s.")  # {"args": module.name()} via NEWOBJ
    buffer = io.BytesIO()
    torch.save({"state_dict": {}}, buffer)
    src = tmp_path / "object.pth"
    src.write_bytes(_replace_pickle(buffer.getvalue(), payload))
    line = _convert_error(src, tmp_path, capsys)
    assert f"holds a '{global_name}' object" in line and hint in line, line
    assert "weights_only" not in line


def _replace_pickle(zip_bytes: bytes, payload: bytes) -> bytes:
    """A torch zip checkpoint whose data.pkl is ``payload``."""
    import zipfile

    source = zipfile.ZipFile(io.BytesIO(zip_bytes))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as target:
        for item in source.infolist():
            data = payload if item.filename.endswith("/data.pkl") else source.read(item)
            target.writestr(item, data)
    return out.getvalue()


def test_training_file_objects_run_none_of_their_code(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    """argparse.Namespace and HistoryBuffer become attribute-only stand-ins, and the only
    getattr a file may call is HistoryBuffer's statistics methods: asking it for anything else
    (here HistoryBuffer.__init__) is refused."""
    stand_ins = [obj for obj, name in TRAINING_FILE_GLOBALS
                 if name in ("argparse.Namespace",
                             "mmengine.logging.history_buffer.HistoryBuffer")]
    assert all(obj.__module__.startswith("pretrain.foreign") and not hasattr(obj, "__setstate__")
               for obj in stand_ins)
    payload = (b"\x80\x02}q\x00X\x01\x00\x00\x00xq\x01c__builtin__\ngetattr\nq\x02cmmengine."
               b"logging.history_buffer\nHistoryBuffer\nq\x03X\x08\x00\x00\x00__init__q\x04"
               b"\x86q\x05Rq\x06s.")  # {"x": getattr(HistoryBuffer, "__init__")}
    buffer = io.BytesIO()
    torch.save({}, buffer)
    src = tmp_path / "getattr.pth"
    src.write_bytes(_replace_pickle(buffer.getvalue(), payload))
    line = _convert_error(src, tmp_path, capsys)
    assert "refused" in line and "__init__" in line


def test_a_benign_training_file_reads_without_its_libraries(tmp_path: Path, resnet18: dict
                                                            ) -> None:
    """What timm's and mmengine's files hold beyond tensors (Namespace, HistoryBuffer with its
    getattr-pickled statistics methods, numpy scalars and arrays), written as those libraries
    pickle them, is read as data."""
    import argparse

    from mmengine.logging import HistoryBuffer

    history = HistoryBuffer()
    history.update(np.float64(1.5))
    content = {"state_dict": resnet18, "args": argparse.Namespace(lr=0.1, mean=(0.5,)),
               "message_hub": {"log_scalars": {"train/loss": history},
                               "runtime_info": {"iter": np.int64(3)}}}
    torch.save(content, tmp_path / "train.pth")
    assert convert.main([str(tmp_path / "train.pth"), "--to", "mmpose", "--out",
                         str(tmp_path / "ok.pth"), "--no-verify"]) == 0
    assert json.loads(torch.load(tmp_path / "ok.pth", weights_only=True)["meta"]["suite_meta"]
                      )["arch"] == "resnet18"
    assert os.path.getsize(tmp_path / "ok.pth") > 0
