"""Hostile inputs on the results side (issue #30): each refused in one line, nothing lost."""
from __future__ import annotations

import errno
import io
import os
import pickle
import stat
import zipfile
from pathlib import Path

import numpy as np
import pytest

from benchmarks.results import leaderboard_cli
from benchmarks.results import predictions as saved_predictions
from benchmarks.results.leaderboard import LeaderboardError, read_rows, write_rows
from benchmarks.results.report import write


def _row(backbone: str, value: float, predictions: str = "", **fields: str) -> dict:
    return {"backbone_id": backbone, "method": "mocov2", "task": "colorful_mnist",
            "protocol": "linear", "recipe": "linear-adamw-100e", "budget": "cpu",
            "metric": "digit_top1", "value": value, "seed": 0, "predictions": predictions,
            **fields}


def test_a_read_only_leaderboard_is_refused_and_stays_read_only(tmp_path: Path) -> None:
    board = tmp_path / "leaderboard.csv"
    write_rows(board, [_row("a", 20.0)])
    board.chmod(0o444)
    before = board.read_bytes()
    with pytest.raises(LeaderboardError, match="read-only; no row of this run was written"):
        write_rows(board, [_row("b", 30.0)])
    assert board.read_bytes() == before and stat.S_IMODE(board.stat().st_mode) == 0o444


def test_a_symlinked_leaderboard_is_written_through_at_its_target(tmp_path: Path) -> None:
    shared = tmp_path / "shared" / "board.csv"
    write_rows(shared, [_row("a", 20.0)])
    link = tmp_path / "run" / "leaderboard.csv"
    link.parent.mkdir()
    link.symlink_to(shared)
    write_rows(link, [_row("b", 30.0)])
    assert link.is_symlink() and link.resolve() == shared.resolve()
    assert {r["backbone_id"] for r in read_rows(shared)[1]} == {"a", "b"}
    assert not list(link.parent.glob("*.tmp")) and not (link.parent / "leaderboard.csv.lock")\
        .exists()


def _npz(path: Path, **arrays: np.ndarray) -> Path:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    path.write_bytes(buffer.getvalue())
    return path


def _show(board: Path, capsys: pytest.CaptureFixture[str]) -> tuple[str, list[str]]:
    assert leaderboard_cli.main(["show", "--csv", str(board)]) == 0
    out, err = capsys.readouterr()
    return out, [line for line in err.splitlines() if line]


def test_predictions_that_are_no_predictions_file_cost_only_their_interval(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(saved_predictions, "UNPACKED_LIMIT", 1 << 20)
    pickled = tmp_path / "pickled.npz"
    pickled.write_bytes(pickle.dumps({"test_set": "x"}))
    bomb = _npz(tmp_path / "bomb.npz", test_set=np.array("x"), big=np.zeros(1 << 20))
    objects = tmp_path / "objects.npz"
    np.savez(objects, test_set=np.array("x"), labels=np.array([{"a": 1}], dtype=object))
    liar = tmp_path / "liar.npz"
    with zipfile.ZipFile(liar, "w") as archive:
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(
            header, {"descr": "<f8", "fortran_order": False, "shape": (10 ** 12,)})
        archive.writestr("test_set.npy", header.getvalue() + b"\0" * 64)
    files = [pickled, bomb, objects, liar]
    board = tmp_path / "board.csv"
    write_rows(board, [_row(f"b{i}", 20.0 + i, str(f)) for i, f in enumerate(files)])
    out, err = _show(board, capsys)
    assert all(f"| mocov2 [b{i}] | linear · linear-adamw-100e | {20 + i}.0 |" in out
               for i in range(4))
    assert len(err) == 4 and all(str(f) in line for f, line in zip(files, err))
    assert "not a predictions file" in err[0] and "would unpack to" in err[1]
    assert "never unpickles" in err[2] and "claims more data" in err[3]
    assert not any("allow_pickle" in line for line in err)


def test_disk_full_while_writing_the_report_keeps_the_previous_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_rows(tmp_path / "leaderboard.csv", [_row("a", 20.0)])
    before = write(tmp_path, []).read_bytes()

    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(OSError, match="No space left on device; any previous file there is "
                                      "unchanged") as caught:
        write(tmp_path, [])
    assert "\n" not in str(caught.value)
    assert (tmp_path / "report.md").read_bytes() == before
    assert not list(tmp_path.glob(".*.tmp"))


def test_tampered_rows_are_set_aside_or_escaped(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    board = tmp_path / "board.csv"
    write_rows(board, [_row("a", 20.0, backbone_name="=HYPERLINK(x)|**y**"),
                       _row("b", 21.0, predictions=str(board))])
    columns = read_rows(board)[0]
    tampered = {**_row("c", 0.0), "value": "1e999", "source": "measured"}
    with open(board, "a") as f:
        f.write(",".join(str(tampered.get(c, "")) for c in columns) + "\n")
    assert "'=HYPERLINK(x)|**y**" in board.read_text()
    out, err = _show(board, capsys)
    assert "| '=HYPERLINK(x)\\|**y** [a] |" in out   # the formula is quoted, the pipe escaped
    assert len(err) == 2 and "not a finite number" in err[0] and str(board) in err[1]
    assert "mocov2 [b]" in out and "[c]" not in out
