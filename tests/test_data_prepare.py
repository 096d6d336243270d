"""datasets/prepare_*.py on tiny fake raw inputs in the raw formats (idx, STL-10 binary, CSV)."""
from __future__ import annotations

import gzip
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pretrain.data import ColorfulMNIST, DataError, FairFace
from pretrain.synthetic import GENERATORS

REPO = Path(__file__).resolve().parent.parent


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "datasets" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write_idx(path: Path, array: np.ndarray, magic: int, gz: bool = False) -> None:
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if gz:
        path.with_name(path.name + ".gz").write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)


@pytest.fixture
def raw_mnist_stl(tmp_path: Path) -> tuple[Path, Path, dict]:
    """Fake MNIST idx files (one gzipped) and STL-10 binaries: STL image k of class c is uniform
    grey 20 c + k, with one red top-left pixel (to check the column-major decoding)."""
    rng = np.random.default_rng(0)
    mnist, stl = tmp_path / "mnist", tmp_path / "stl10_binary"
    mnist.mkdir()
    stl.mkdir()
    truth = {}
    for split, prefix, n in (("train", "train", 12), ("test", "t10k", 6)):
        digits = np.zeros((n, 28, 28), np.uint8)
        digits[:, 8:20, 12:16] = 255  # a "1" inside MNIST's empty 4 px margin
        labels = rng.integers(0, 10, n)
        _write_idx(mnist / f"{prefix}-images-idx3-ubyte", digits, 2051, gz=split == "test")
        _write_idx(mnist / f"{prefix}-labels-idx1-ubyte", labels, 2049)
        classes = np.arange(5) % 10
        hwc = (20 * classes[:, None, None, None] + np.arange(5)[:, None, None, None]
               + np.zeros((5, 96, 96, 3))).astype(np.uint8)
        hwc[:, 0, 0] = (255, 0, 0)
        (stl / f"{split}_X.bin").write_bytes(hwc.transpose(0, 3, 2, 1).tobytes())
        (stl / f"{split}_y.bin").write_bytes((classes + 1).astype(np.uint8).tobytes())
        truth[split] = labels, hwc
    return mnist, stl, truth


def test_prepare_colorful_mnist_from_raw_files(raw_mnist_stl, tmp_path):
    mnist, stl, truth = raw_mnist_stl
    prep = _script("prepare_colorful_mnist")
    images, classes = prep.read_stl10(stl, "train")
    assert np.array_equal(images, truth["train"][1]) and list(classes) == [0, 1, 2, 3, 4]
    out = prep.prepare(mnist, stl, tmp_path / "out", seed=0)
    for split in ("train", "test"):
        ds = ColorfulMNIST(out, split)
        assert len(ds) == len(truth[split][0])
        for i, (img, lab) in enumerate(ds):
            assert img.size == (64, 64) and lab["digit"] == truth[split][0][i]
            # the bottom-right pixel is background (the digit's margin is empty): grey 20 c + k
            grey = np.asarray(img)[63, 63, 0]
            assert grey // 20 == lab["background"]
    again = prep.prepare(mnist, stl, tmp_path / "again", seed=0)
    assert (again / "train.csv").read_text() == (out / "train.csv").read_text()
    with pytest.raises(DataError, match="already holds"):
        prep.prepare(mnist, stl, out)


def test_prepare_colorful_mnist_names_missing_and_malformed_files(raw_mnist_stl, tmp_path):
    mnist, stl, _ = raw_mnist_stl
    prep = _script("prepare_colorful_mnist")
    (mnist / "train-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte: missing"):
        prep.prepare(mnist, stl, tmp_path / "out")
    _write_idx(mnist / "train-labels-idx1-ubyte", np.zeros(11), 2049)
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte: 11 labels for 12 images"):
        prep.prepare(mnist, stl, tmp_path / "out")
    path = mnist / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte: header says .*truncated"):
        prep.prepare(mnist, stl, tmp_path / "out")
    (stl / "test_y.bin").write_bytes(b"\x01\x02")
    with pytest.raises(DataError, match=r"test_y\.bin: 2 labels for 5 images"):
        prep.read_stl10(stl, "test")
    assert not (tmp_path / "out").exists()  # nothing written from bad input
    result = subprocess.run([sys.executable, str(REPO / "datasets/prepare_colorful_mnist.py"),
                             "--mnist", str(mnist), "--stl10", str(stl), "--out",
                             str(tmp_path / "cli")], capture_output=True, text=True)
    assert result.returncode != 0 and "train-images-idx3-ubyte" in result.stderr


def test_prepare_fairface_links_and_validates(tiny_data, tmp_path):
    prep = _script("prepare_fairface")
    raw = Path(shutil.copytree(tiny_data / "fairface", tmp_path / "raw"))
    csvs = {s: raw / f"fairface_label_{s}.csv" for s in ("train", "val")}
    out = prep.prepare(raw, csvs, tmp_path / "out")
    assert (out / "train").is_symlink()
    assert len(FairFace(out, "train")) == 40 and len(FairFace(out, "val")) == 20

    csvs["val"].write_text(csvs["val"].read_text().replace("Indian", "South Asian", 1))
    with pytest.raises(DataError, match=r"fairface_label_val\.csv, line \d+: unknown race"):
        prep.prepare(raw, csvs, tmp_path / "bad")
    assert not (tmp_path / "bad").exists() and not (tmp_path / "bad.check").exists()
    shutil.rmtree(raw / "val")
    with pytest.raises(DataError, match=r"raw/val: missing image folder"):
        prep.prepare(raw, csvs, tmp_path / "bad")
    assert (raw / "train/1.jpg").is_file()  # the cleanup never follows links into the source


def test_make_synthetic_cli(tmp_path):
    out = tmp_path / "syn"
    result = subprocess.run([sys.executable, str(REPO / "datasets/make_synthetic.py"), "--out",
                             str(out), "--size", "tiny", "--seed", "2"],
                            capture_output=True, text=True, check=True)
    assert "wrote" in result.stdout
    assert sorted(p.name for p in out.iterdir()) == sorted(GENERATORS)  # one folder per set
    assert Image.open(out / "colorful_mnist/train/00000.png").size == (64, 64)
    result = subprocess.run([sys.executable, str(REPO / "datasets/make_synthetic.py"), "--out",
                             str(out), "--size", "tiny"], capture_output=True, text=True)
    assert result.returncode != 0 and "not empty" in result.stderr
