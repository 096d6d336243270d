"""A leaderboard row's identity: recipe, budget and deviations in every row and in the key, so a
quick run never replaces a full one; older files still read."""
from __future__ import annotations

import csv
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from benchmarks.results.leaderboard import (
    BUDGET_ENV,
    LEGACY_KEY,
    embedded_data,
    read_rows,
    run_identity,
    write_rows,
)


def test_budget_is_full_only_for_a_published_recipe_run_unchanged(monkeypatch) -> None:
    monkeypatch.delenv(BUDGET_ENV, raising=False)
    assert run_identity("R50-FPN-1x", {"val_images": None}) == {
        "recipe": "R50-FPN-1x", "budget": "full", "deviations": ""}
    quick = run_identity("R50-FPN-1x", {"val_images": 10, "iterations": "30"})
    assert quick["budget"] == "custom" and quick["deviations"] == "iterations=30;val_images=10"
    assert run_identity("coco_cpu_FPN_128px", {}, published=False)["budget"] == "custom"
    monkeypatch.setenv(BUDGET_ENV, "cpu")
    assert run_identity("R50-FPN-1x", {"epochs": 0.25})["budget"] == "cpu"
    assert run_identity("R50-FPN-1x", {})["budget"] == "full"  # the suite's label never hides
    monkeypatch.setenv(BUDGET_ENV, "full")  # a suite "full" run that deviates is not full
    assert run_identity("R50-FPN-1x", {"data": "synthetic"})["budget"] == "custom"


def test_embedded_data_is_recognised(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SUITE_DATA_DIR", str(tmp_path))
    assert embedded_data(tmp_path / "synthetic-tiny-seed0" / "coco")
    assert not embedded_data(tmp_path / "real" / "coco")
    assert not embedded_data(tmp_path.parent)


def _coco_rows(tmp_path: Path, board: Path, ap: float, **changes) -> None:
    """coco_det's own writer, as after a run of the published FPN recipe on real data."""
    from transfer import coco_det, detectron2_setup

    cfg = detectron2_setup.get_cfg()
    cfg.OUTPUT_DIR = str(tmp_path / f"run{ap}")
    settings = SimpleNamespace(**{"leaderboard": board, "data": tmp_path / "coco", "seed": 0,
                                  "backbone_name": None,
                                  "val_images": None, "opts": (),
                                  "config_file": coco_det.FULL_CONFIG, **changes})
    record = {"source": "w.pth", "backbone_id_from_file": False, "convert_seconds": 0.1,
              "meta": {"method": "simclr", "arch": "resnet50", "backbone_id": "x", "seed": 3,
                       "data": "imagenet", "epochs": 200}}
    results = {task: dict.fromkeys(coco_det.METRICS, ap) for task in ("bbox", "segm")}
    coco_det.write_outputs(settings, cfg, record, results, 1.0, 1.0)


def test_a_val_images_rerun_leaves_the_full_rows_untouched(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv(BUDGET_ENV, raising=False)
    board = tmp_path / "board.csv"
    _coco_rows(tmp_path, board, 38.0)
    _coco_rows(tmp_path, board, 1.0, val_images=10, opts=("SOLVER.MAX_ITER", "30"))
    rows = [r for r in read_rows(board)[1] if r["metric"] == "bbox_AP"]
    by_budget = {r["budget"]: r for r in rows}
    assert set(by_budget) == {"full", "custom"}
    assert by_budget["full"]["value"] == "38" and by_budget["full"]["deviations"] == ""
    assert by_budget["full"]["recipe"] == "R50-FPN-1x"
    assert by_budget["custom"]["deviations"] == "iterations=30;val_images=10"
    assert by_budget["full"]["pretrain_seed"] == "3"
    assert by_budget["full"]["pretrain_epochs"] == "200"
    _coco_rows(tmp_path, board, 39.0)  # the same full run again does replace its own rows
    values = sorted(r["value"] for r in read_rows(board)[1] if r["metric"] == "bbox_AP")
    assert values == ["1", "39"]


def test_the_cpu_config_is_never_full(tmp_path: Path, monkeypatch) -> None:
    from transfer import coco_det

    monkeypatch.setenv(BUDGET_ENV, "smoke")
    board = tmp_path / "board.csv"
    _coco_rows(tmp_path, board, 1.0, config_file=coco_det.CPU_CONFIG)
    row = read_rows(board)[1][0]
    assert (row["recipe"], row["budget"]) == ("coco_cpu_FPN_128px", "smoke")


@pytest.mark.parametrize("changed", ["recipe", "budget", "deviations", "pretrain_seed"])
def test_every_identity_field_is_in_the_key(tmp_path: Path, changed: str) -> None:
    board = tmp_path / "board.csv"
    row = {"backbone_id": "a", "task": "t", "protocol": "linear", "metric": "m", "value": 1,
           "recipe": "r", "budget": "full", "deviations": "", "pretrain_seed": 0}
    write_rows(board, [row])
    write_rows(board, [{**row, changed: "other", "value": 2}])
    assert sorted(r["value"] for r in read_rows(board)[1]) == ["1", "2"]


def test_an_older_file_reads_with_an_unrecorded_budget(tmp_path: Path) -> None:
    board = tmp_path / "old.csv"
    with open(board, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[*LEGACY_KEY, "value"])
        writer.writeheader()
        writer.writerow({"backbone_id": "a", "task": "t", "protocol": "linear", "metric": "m",
                         "seed": 0, "source": "measured", "value": 5})
    (row,) = read_rows(board)[1]
    assert row["budget"] == "unrecorded" and row["recipe"] == ""
    write_rows(board, [{"backbone_id": "a", "task": "t", "protocol": "linear", "metric": "m",
                        "value": 6, "recipe": "r", "budget": "full"}])
    assert sorted((r["budget"], r["value"]) for r in read_rows(board)[1]) == [
        ("full", "6"), ("unrecorded", "5")]


def test_probe_rows_carry_their_recipe_and_deviations(tmp_path: Path, tiny_data: Path,
                                                       monkeypatch) -> None:
    from benchmarks.probes import colorful_mnist

    monkeypatch.setenv(BUDGET_ENV, "smoke")
    monkeypatch.setenv("SUITE_DATA_DIR", str(tmp_path))  # an embedded set, as the suite makes
    data = tmp_path / "synthetic-tiny-seed0" / "colorful_mnist"
    shutil.copytree(tiny_data / "colorful_mnist", data)
    board = tmp_path / "board.csv"
    assert colorful_mnist.main(
        lambda argv: colorful_mnist.run_task(colorful_mnist.TASK, argv),
        ["--weights", "random", "--arch", "resnet18", "--linear-epochs", "2", "--data", str(data),
         "--out",
         str(tmp_path / "run"), "--leaderboard", str(board), "--cache-dir",
         str(tmp_path / "cache"), "--device", "cpu"]) == 0
    rows = read_rows(board)[1]
    linear = {r["recipe"]: r for r in rows if r["protocol"] == "linear"}
    assert set(linear) == {"linear-adamw-100e"}
    (row,) = {r["deviations"]: r for r in linear.values()}.values()
    assert row["budget"] == "smoke" and row["deviations"] == "data=synthetic;linear_epochs=2"
    knn = [r for r in rows if r["protocol"] == "knn5"]
    assert knn and knn[0]["deviations"] == "data=synthetic"  # kNN has no epochs
