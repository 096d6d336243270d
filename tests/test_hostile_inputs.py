"""Hostile inputs, phase 2 (issue 18): benchmark outputs that would land on another command's
files, failures while recording results, non-finite scores, malformed or mis-encoded data files,
oversized images and bad numeric flags. Each test asserts the exit code, a single error line
naming the file or flag (no traceback) and that no file outside the command's own outputs changed
(checksums before and after)."""
from __future__ import annotations

import errno
import json
import shutil
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
from test_hostile import _assert_untouched, _checksums, _one_error_line, _row

import transfer.compat  # noqa: F401,I001  (its guards, before detectron2 and mmengine)
from benchmarks.probes import coco_fgbg, colorful_mnist, fairface, probe
from benchmarks.results import leaderboard
from benchmarks.runner import suite
from pretrain import data as data_module
from pretrain import train
from pretrain.cli import OUTPUT_MARK, InputError, claim_output
from pretrain.data import DataError
from transfer import coco_det, mpii_pose
from transfer.mpii_config import CPU_CONFIG

pytestmark = pytest.mark.reliability
# the smallest probe run: ResNet-18 at 32 px, one linear-probe epoch, one kNN
FAST = ["--weights", "random", "--arch", "resnet18", "--image-size", "32", "--linear-epochs", "1"]


def _probe(task: probe.Task, tmp_path: Path, data: Path, *extra: str,
           board: str = "board.csv") -> int:
    return probe.main(lambda argv: probe.run_task(task, argv),
                      [*FAST, "--data", str(data), "--leaderboard", str(tmp_path / board),
                       "--cache-dir", str(tmp_path / "cache"), *extra])


def _copy(tiny_data: Path, tmp_path: Path, name: str) -> Path:
    """A private copy of one tiny set, to break."""
    return Path(shutil.copytree(tiny_data / name, tmp_path / "data" / name))


# ----------------------------------------------------------------------------- 1: outputs
def _pretraining_run(folder: Path) -> None:
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({"history": [{"step": 1, "loss": 4.2}]}))
    (folder / "config.yaml").write_text("method: simclr\n")
    (folder / "last_state.pt").write_bytes(b"state")


def _suite_folder(folder: Path) -> None:
    folder.mkdir(parents=True)
    leaderboard.write_rows(folder / "leaderboard.csv", [_row("a", 20.0)])
    (folder / "report.md").write_text("# Suite report\n")


def _other_benchmark(folder: Path) -> None:
    folder.mkdir(parents=True)
    (folder / OUTPUT_MARK).write_text(json.dumps({"command": "benchmarks/fairface.py fixed"}))
    (folder / "metrics.json").write_text("{}")


FOREIGN_FOLDERS: dict[str, Callable[[Path], None]] = {
    "a pretraining run": _pretraining_run, "a suite's folder": _suite_folder,
    "another benchmark's run": _other_benchmark}


def _entry_points(tiny_data: Path, tmp_path: Path) -> dict[str, Callable[[Path], int]]:
    board = str(tmp_path / "board.csv")
    return {
        "colorful_mnist probe": lambda out: _probe(colorful_mnist.TASK, tmp_path,
                                                   tiny_data / "colorful_mnist", "--out", str(out)),
        "coco_fgbg probe": lambda out: probe.main(coco_fgbg.run, [
            *FAST, "--data", str(tiny_data / "coco"), "--out", str(out), "--leaderboard", board]),
        "coco_det": lambda out: coco_det.main([
            "--weights", "random", "--arch", "resnet18", "--data", str(tiny_data / "coco"),
            "--out", str(out), "--leaderboard", board]),
        "mpii_pose": lambda out: mpii_pose.main([
            "--weights", "random", "--arch", "resnet18", "--data", str(tiny_data / "mpii"),
            "--config", str(CPU_CONFIG), "--out", str(out), "--leaderboard", board,
            "--max-iters", "1"]),
    }


@pytest.mark.parametrize("kind", list(FOREIGN_FOLDERS))
def test_benchmark_out_on_another_commands_folder_is_refused(
        kind: str, tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = tmp_path / "taken"
    FOREIGN_FOLDERS[kind](folder)
    before = _checksums(tmp_path)
    for name, run in _entry_points(tiny_data, tmp_path).items():
        assert run(folder) == 2, name
        line = _one_error_line(capsys.readouterr().err, f"--out {folder}")
        assert "nothing there is overwritten" in line, line
        _assert_untouched(tmp_path, before, outputs=("cache/",))


@pytest.mark.parametrize("kind", ["a suite's folder", "another benchmark's run"])
def test_pretraining_into_another_commands_folder_is_refused(
        kind: str, tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = tmp_path / "runs" / "taken"
    FOREIGN_FOLDERS[kind](folder)
    before = _checksums(tmp_path)
    assert train.main(["--method", "simclr", "--arch", "resnet18", "--steps", "1",
                       "--data", f"colorful_mnist={tiny_data / 'colorful_mnist'}",
                       "--out", str(folder)]) == 2
    line = _one_error_line(capsys.readouterr().err, f"--out {folder}")
    assert "nothing there is overwritten" in line, line
    _assert_untouched(tmp_path, before)


def test_a_benchmark_reruns_into_its_own_folder(tiny_data: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    for _ in range(2):  # made, then its own
        assert _probe(colorful_mnist.TASK, tmp_path, tiny_data / "colorful_mnist",
                      "--out", str(out)) == 0
    assert json.loads((out / OUTPUT_MARK).read_text()) == {
        "command": "benchmarks/colorful_mnist.py fixed"}
    (out / OUTPUT_MARK).unlink()  # a run folder made before folders were marked
    assert _probe(colorful_mnist.TASK, tmp_path, tiny_data / "colorful_mnist",
                  "--out", str(out)) == 0
    assert (out / OUTPUT_MARK).is_file()
    # the same folder for the other protocol is another command's
    before = _checksums(tmp_path)
    assert _probe(colorful_mnist.TASK, tmp_path, tiny_data / "colorful_mnist", "--out", str(out),
                  "--protocol", "finetune") == 2
    _one_error_line(capsys.readouterr().err, "benchmarks/colorful_mnist.py fixed")
    _assert_untouched(tmp_path, before)


def test_claim_output_refuses_a_file_and_an_unreadable_mark(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="is a file, not a folder"):
        claim_output(tmp_path / "file", "a")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / OUTPUT_MARK).write_text("{not json")
    with pytest.raises(InputError, match="unreadable"):
        claim_output(tmp_path / "d", "a")
    assert claim_output(tmp_path / "new" / "run", "a") == tmp_path / "new" / "run"
    assert claim_output(tmp_path / "new" / "run", "a") == tmp_path / "new" / "run"


# ----------------------------------------------------------------------------- 2, 3: recording
def _not_a_leaderboard(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, ...]:
    (tmp_path / "board.csv").write_text("name,score\nme,1\n")
    return ("board.csv", "not a leaderboard CSV")


def _disk_full_at_the_append(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, ...]:
    def no_space(path, write) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(leaderboard, "atomic_write", no_space)
    return ("No space left on device",)


def _nan_score(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, ...]:
    def diverged(predicted: dict, labels: dict) -> dict[str, float]:
        return dict.fromkeys(predicted, float("nan"))

    monkeypatch.setattr(probe, "accuracy", diverged)
    return ("digit_top1", "nan, not a finite number")


RECORDING_FAULTS = {"not a leaderboard": _not_a_leaderboard,
                    "disk full at the append": _disk_full_at_the_append,
                    "NaN score": _nan_score}


@pytest.mark.parametrize("fault", list(RECORDING_FAULTS))
def test_a_failed_leaderboard_append_is_one_line_and_keeps_metrics(
        fault: str, tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture) -> None:
    names = RECORDING_FAULTS[fault](tmp_path, monkeypatch)
    before = _checksums(tmp_path)
    out = tmp_path / "run"
    assert _probe(colorful_mnist.TASK, tmp_path, tiny_data / "colorful_mnist",
                  "--out", str(out)) == 2
    _one_error_line(capsys.readouterr().err, *names,
                    f"the results are kept in {out / 'metrics.json'}")
    assert json.loads((out / "metrics.json").read_text())["results"]["linear"]
    # the board unchanged (its lock file aside)
    _assert_untouched(tmp_path, before, outputs=("run/", "cache/", "board.csv.lock"))


def test_non_finite_scores_never_become_rows(tmp_path: Path) -> None:
    board = tmp_path / "board.csv"
    leaderboard.write_rows(board, [_row("a", 20.0)])
    before = _checksums(tmp_path)
    for value in (float("nan"), float("inf"), -float("inf"), "nan"):
        with pytest.raises(leaderboard.LeaderboardError, match=f"score background_top1 .* is "
                           f"{value}, not a finite number"):
            leaderboard.write_rows(board, [_row("b", 30.0),
                                           _row("b", value, metric="background_top1")])
    _assert_untouched(tmp_path, before)


def test_coco_det_keeps_its_metrics_when_the_append_fails(tmp_path: Path) -> None:
    from detectron2.config import get_cfg

    (tmp_path / "board.csv").write_text("name,score\n")
    record = {"source": "random", "backbone_id_from_file": False, "convert_seconds": 1.0,
              "meta": {"arch": "resnet18", "method": "random", "backbone_id": "r18"}}
    cfg = get_cfg()
    cfg.OUTPUT_DIR = str(tmp_path)
    settings = coco_det.parse_args(["--weights", "random", "--out", str(tmp_path), "--data",
                                    str(tmp_path), "--leaderboard", str(tmp_path / "board.csv"),
                                    "--config-file", str(coco_det.CPU_CONFIG)])
    with pytest.raises(InputError, match="not a leaderboard CSV.*kept in .*metrics.json"):
        coco_det.write_outputs(settings, cfg, record, {"bbox": {"AP": 1.0}}, 1.0, 1.0)
    assert (tmp_path / "board.csv").read_text() == "name,score\n"
    assert json.loads((tmp_path / "metrics.json").read_text())["metrics"]["bbox"]["AP"] == 1.0


@pytest.mark.slow  # mmpose builds and trains a SimpleBaseline for one iteration
def test_mpii_pose_keeps_its_metrics_when_the_append_fails(tiny_data: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "board.csv").write_text("name,score\n")
    before = _checksums(tmp_path)
    assert mpii_pose.main(["--weights", "random", "--arch", "resnet18", "--data",
                           str(tiny_data / "mpii"), "--out", str(tmp_path / "run"),
                           "--leaderboard", str(tmp_path / "board.csv"), "--max-iters", "1",
                           "--batch-size", "4", "--val-images", "4",
                           "--config", str(CPU_CONFIG)]) == 2
    _one_error_line(capsys.readouterr().err, "not a leaderboard CSV",
                    f"kept in {tmp_path / 'run' / 'metrics.json'}")
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["metrics"]
    _assert_untouched(tmp_path, before, outputs=("run/", "board.csv.lock"))


# ----------------------------------------------------------------------------- 4: data files
def _latin1_csv(root: Path) -> tuple[Path, tuple[str, ...]]:
    csv_path = root / "fairface_label_train.csv"
    lines = csv_path.read_text().splitlines()
    lines[3] += ",caf\xe9"
    csv_path.write_bytes("\n".join(lines).encode("latin-1"))
    return root, ("fairface_label_train.csv, line 4", "not UTF-8", "save the file as UTF-8")


def _missing_column(root: Path) -> tuple[Path, tuple[str, ...]]:
    csv_path = root / "fairface_label_val.csv"
    lines = csv_path.read_text().splitlines()
    csv_path.write_text("\n".join(line.rsplit(",", 3)[0] for line in lines))
    return root, ("fairface_label_val.csv", "missing column(s)")


def _huge_field(root: Path) -> tuple[Path, tuple[str, ...]]:
    csv_path = root / "train.csv"
    lines = csv_path.read_text().splitlines()
    lines[2] = '"' + "x" * 200_000 + '",1,1'  # an unbalanced quote swallows the file, say
    csv_path.write_text("\n".join(lines))
    return root, ("train.csv, line 3", "not CSV", "field larger than field limit")


def _wrong_label_type(root: Path) -> tuple[Path, tuple[str, ...]]:
    csv_path = root / "test.csv"
    lines = csv_path.read_text().splitlines()
    file, _, background = lines[1].split(",")
    lines[1] = f"{file},seven,{background}"
    csv_path.write_text("\n".join(lines))
    return root, ("test.csv, line 2", "digit must be an integer", "'seven'")


def _coco_doc(root: Path, edit: Callable[[dict], None]) -> Path:
    path = root / "annotations" / "instances_train2017.json"
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))
    return path


def _truncated_json(root: Path) -> tuple[Path, tuple[str, ...]]:
    path = root / "annotations" / "instances_val2017.json"
    path.write_bytes(path.read_bytes()[:-40])
    return root, ("instances_val2017.json: not valid JSON at line 1 column", "truncated")


def _wrong_field_type(field: str, value: object, where: str) -> Callable:
    def edit(root: Path) -> tuple[Path, tuple[str, ...]]:
        _coco_doc(root, lambda doc: doc[where][0].update({field: value}))
        return root, ("instances_train2017.json", f"{where}[0]", f"'{field}' must be")
    return edit


def _mpii_latin1(root: Path) -> tuple[Path, tuple[str, ...]]:
    path = root / "annotations" / "mpii_val.json"
    path.write_bytes(path.read_bytes().replace(b'"image"', b'"im\xe9ge"', 1))
    return root, ("mpii_val.json, line 1", "not UTF-8")


def _mpii_image_type(root: Path) -> tuple[Path, tuple[str, ...]]:
    path = root / "annotations" / "mpii_train.json"
    anns = json.loads(path.read_text())
    anns[0]["image"] = 17
    path.write_text(json.dumps(anns))
    return root, ("mpii_train.json", "entry 0", "'image' must be str")


def _mat_empty(root: Path) -> tuple[Path, tuple[str, ...]]:
    (root / "annotations" / "mpii_gt_val.mat").write_bytes(b"")
    return root, ("mpii_gt_val.mat", "not a readable MATLAB file", "appears to be truncated")


def _mat_garbage(root: Path) -> tuple[Path, tuple[str, ...]]:
    mat = root / "annotations" / "mpii_gt_val.mat"
    mat.write_bytes(mat.read_bytes()[:150])
    return root, ("mpii_gt_val.mat", "not a readable MATLAB file")


# case -> (data set, how to break a copy of it)
BAD_FILES: dict[str, tuple[str, Callable[[Path], tuple[Path, tuple[str, ...]]]]] = {
    "FairFace CSV in Latin-1": ("fairface", _latin1_csv),
    "FairFace CSV without a column": ("fairface", _missing_column),
    "Colorful-MNIST CSV with a field over csv's limit": ("colorful_mnist", _huge_field),
    "Colorful-MNIST label that is not a number": ("colorful_mnist", _wrong_label_type),
    "COCO json truncated": ("coco", _truncated_json),
    "COCO file_name a number": ("coco", _wrong_field_type("file_name", 5, "images")),
    "COCO id a list": ("coco", _wrong_field_type("id", [1], "categories")),
    "COCO bbox a string": ("coco", _wrong_field_type("bbox", "0 0 4 4", "annotations")),
    "COCO iscrowd true": ("coco", _wrong_field_type("iscrowd", True, "annotations")),
    "MPII json in Latin-1": ("mpii", _mpii_latin1),
    "MPII image a number": ("mpii", _mpii_image_type),
    "MPII head boxes truncated": ("mpii", _mat_garbage),
    "MPII head boxes empty": ("mpii", _mat_empty),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_malformed_data_files_are_one_line_naming_the_file(case: str, tiny_data: Path,
                                                           tmp_path: Path) -> None:
    name, breaks = BAD_FILES[case]
    root, names = breaks(_copy(tiny_data, tmp_path, name))
    with pytest.raises(DataError) as raised:
        data_module.LAYOUTS[name].check(root)
    message = str(raised.value)
    assert "\n" not in message
    for part in names:
        assert part in message, message


def test_bad_data_files_end_each_entry_point_in_one_line(tiny_data: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    fair, _ = _latin1_csv(_copy(tiny_data, tmp_path, "fairface"))
    coco, _ = _truncated_json(_copy(tiny_data, tmp_path, "coco"))
    mpii, _ = _mat_garbage(_copy(tiny_data, tmp_path, "mpii"))
    before = _checksums(tmp_path)
    assert _probe(fairface.TASK, tmp_path, fair, "--out", str(tmp_path / "run")) == 2
    _one_error_line(capsys.readouterr().err, "fairface_label_train.csv, line 4")
    assert coco_det.main(["--weights", "random", "--data", str(coco),
                          "--out", str(tmp_path / "det")]) == 2
    _one_error_line(capsys.readouterr().err, "instances_val2017.json: not valid JSON at line 1")
    assert mpii_pose.main(["--weights", "random", "--data", str(mpii),
                           "--out", str(tmp_path / "pose")]) == 2
    _one_error_line(capsys.readouterr().err, "mpii_gt_val.mat")
    with pytest.raises(SystemExit) as exited:
        suite.main(["--out", str(tmp_path / "suite"), f"--data=coco={coco}"])
    assert exited.value.code == 2
    _one_error_line(capsys.readouterr().err, "--data coco=", "instances_val2017.json")
    _assert_untouched(tmp_path, before)


def _png_header(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` pixels in a few bytes (a decompression bomb's
    header: readers learn the size before decoding anything)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body)))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2,
                                                              0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


@pytest.mark.parametrize("side", [9000, 100_000])  # over the suite's limit; over PIL's too
def test_an_oversized_image_is_one_line(side: int, tiny_data: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture) -> None:
    root = _copy(tiny_data, tmp_path, "colorful_mnist")
    first = root / next(iter((root / "train.csv").read_text().splitlines()[1:])).split(",")[0]
    first.write_bytes(_png_header(side, side))
    before = _checksums(tmp_path)
    assert _probe(colorful_mnist.TASK, tmp_path, root, "--out", str(tmp_path / "run")) == 2
    line = _one_error_line(capsys.readouterr().err, first.name)
    assert "decompression bomb" in line
    _assert_untouched(tmp_path, before, outputs=("run/",))  # found when read: the run started


def test_a_bad_image_read_in_a_loader_worker_is_one_line(tiny_data: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    root = _copy(tiny_data, tmp_path, "colorful_mnist")
    last = root / (root / "train.csv").read_text().splitlines()[-1].split(",")[0]
    last.write_bytes(b"not an image")  # the first image (read for the size) stays whole
    assert _probe(colorful_mnist.TASK, tmp_path, root, "--out", str(tmp_path / "run"),
                  "--workers", "1") == 2
    line = _one_error_line(capsys.readouterr().err, last.name, "cannot decode image")
    assert "DataLoader worker" not in line


def test_mmengine_load_names_the_file(tmp_path: Path) -> None:
    import mmengine

    for name, content, says in (("a.pkl", b"garbage", "not a pickle"),
                                ("b.json", b'{"a": [1,', "cannot be read"),
                                ("c.yaml", b"a: !!python/object/apply:os.getcwd []",
                                 "Python tags are refused")):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ValueError, match=f"^{tmp_path / name}: .*{says}") as raised:
            mmengine.load(str(tmp_path / name))
        assert "<stream>" not in str(raised.value) and "\n" not in str(raised.value)


# ----------------------------------------------------------------------------- 5: numeric flags
def _run_probe(argv: list[str]) -> int:
    return probe.main(lambda args: probe.run_task(fairface.TASK, args), argv)


BAD_FLAGS: dict[str, tuple[Callable[[list[str]], int], list[list[str]]]] = {
    "suite": (suite.main, [["--jobs", "0"], ["--jobs", "-1"], ["--gpus", "0"],
                           ["--pretrain-steps", "0"], ["--jobs", "two"]]),
    "probe": (_run_probe, [["--epochs", "0"], ["--epochs", "nan"], ["--trials", "0"],
                           ["--batch-size", "0"], ["--lr", "inf"], ["--linear-epochs", "0"],
                           ["--workers", "-1"], ["--image-size", "0"]]),
    "coco_det": (coco_det.main, [["--val-images", "-1"], ["--num-gpus", "0"],
                                 ["--num-machines", "0"], ["--machine-rank", "-1"]]),
    "mpii_pose": (mpii_pose.main, [["--max-iters", "0"], ["--batch-size", "0"],
                                   ["--val-images", "-1"]]),
}


@pytest.mark.parametrize("entry", list(BAD_FLAGS))
def test_bad_numeric_flags_are_one_line_at_parse_time(entry: str, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    main, cases = BAD_FLAGS[entry]
    before = _checksums(tmp_path)
    # data that does not exist: past the flags, a command stops there at once (not a real run)
    absent = tmp_path / "absent"
    for flags in cases:
        with pytest.raises(SystemExit) as exited:
            main(["--weights", "random", "--out", str(tmp_path / "out"), "--data", str(absent),
                  *flags] if entry != "suite" else
                 ["--out", str(tmp_path / "out"), f"--data=coco={absent}", *flags])
        assert exited.value.code == 2, flags
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "usage:" not in err, err
        _one_error_line(err, f"argument {flags[0]}", repr(flags[1]))
    _assert_untouched(tmp_path, before)
