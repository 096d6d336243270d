"""Leaderboard CSV: concurrent writers, replace-on-rerun, unknown columns kept."""
from __future__ import annotations

import csv
import multiprocessing as mp
from pathlib import Path

import pytest

from benchmarks.results.leaderboard import COLUMNS, backbone_fields, read_rows, write_rows


def _row(backbone: str, metric: str, value: float, seed: int = 0) -> dict:
    return {"backbone_id": backbone, "task": "colorful_mnist", "protocol": "linear",
            "metric": metric, "value": value, "seed": seed}


def _writer(path: str, worker: int, count: int) -> None:
    for i in range(count):
        write_rows(path, [_row(f"b{worker}", f"m{i}", i / 10)])


def test_concurrent_writers_lose_no_row(tmp_path: Path) -> None:
    path = tmp_path / "lb.csv"
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(path), w, 15)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    _, rows = read_rows(path)
    assert len(rows) == 60
    assert {(r["backbone_id"], r["metric"]) for r in rows} == {
        (f"b{w}", f"m{i}") for w in range(4) for i in range(15)}


def test_rerun_replaces_its_rows_and_keeps_others(tmp_path: Path) -> None:
    path = tmp_path / "lb.csv"
    write_rows(path, [_row("a", "digit", 0.1), _row("a", "background", 0.9),
                      _row("b", "digit", 0.5)])
    write_rows(path, [_row("a", "digit", 0.2)])
    _, rows = read_rows(path)
    values = {(r["backbone_id"], r["metric"]): r["value"] for r in rows}
    assert values == {("a", "digit"): "0.2", ("a", "background"): "0.9", ("b", "digit"): "0.5"}
    assert all(r["source"] == "measured" and r["date"] and r["commit"] for r in rows)


def test_unknown_columns_of_an_older_file_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "lb.csv"
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS + ["notes"])
        w.writeheader()
        w.writerow({**_row("old", "digit", 0.3), "notes": "from 2025"})
    write_rows(path, [_row("new", "digit", 0.4)])
    columns, rows = read_rows(path)
    assert "notes" in columns
    assert [r["notes"] for r in rows if r["backbone_id"] == "old"] == ["from 2025"]


def test_rows_without_required_fields_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="lacks"):
        write_rows(tmp_path / "lb.csv", [{"task": "x", "metric": "y", "value": 1}])
    assert not (tmp_path / "lb.csv").exists()


def test_backbone_fields_hash_the_file(tmp_path: Path) -> None:
    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    a.write_bytes(b"one")
    b.write_bytes(b"two")
    fa = backbone_fields(a, {"method": "simclr", "regularizer": None, "arch": "resnet18"})
    assert fa["backbone_id"] != backbone_fields(b, {})["backbone_id"]
    assert fa["regularizer"] == "none" and fa["method"] == "simclr"
    assert backbone_fields(None, {"method": "random-init", "arch": "resnet18"})["backbone_id"] \
        == "random-init-resnet18"


def test_a_named_backbone_is_its_name_in_the_csv_and_every_table(tmp_path: Path) -> None:
    from benchmarks.results.tables import budget_sections

    weights = tmp_path / "tv50.pth"
    weights.write_bytes(b"weights")
    fields = backbone_fields(weights, {"arch": "resnet50"}, name="tv50")
    path = tmp_path / "lb.csv"
    write_rows(path, [{**fields, **_row(fields["backbone_id"], "digit_top1", 41.0)},
                      {**backbone_fields(None, {"method": "random-init", "arch": "resnet50"}),
                       **_row("random-init-resnet50", "digit_top1", 11.0)}])
    columns, rows = read_rows(path)
    assert columns.index("backbone_name") == 1
    assert [(r["backbone_name"], r["method"]) for r in rows] == [("tv50", "unknown"),
                                                                  ("", "random-init")]
    text = budget_sections(rows)
    assert f"| tv50 [{fields['backbone_id']}] |" in text and "unknown" not in text


def test_reference_rows_ship_marked_with_their_source() -> None:
    from benchmarks.results.leaderboard import reference_rows

    refs = reference_rows()
    assert refs and all(r["source"] not in ("", "measured") for r in refs)
    rcl = [r for r in refs if r["task"] == "colorful_mnist" and r["regularizer"] == "rcl"
           and r["protocol"] == "linear" and r["metric"] == "digit_top1"]
    assert [float(r["value"]) for r in rcl] == [88.3]


def test_markdown_shows_interval_over_seeds_and_gap(tmp_path: Path) -> None:
    from benchmarks.results.leaderboard_cli import main
    from benchmarks.results.tables import markdown

    path = tmp_path / "lb.csv"
    seeded = [{**_row(backbone, metric, value), "pretrain_seed": seed}
               for backbone, seed, digit in (("abc", 0, 20.0), ("abd", 1, 30.0))
               for metric, value in (("digit_top1", digit), ("background_top1", 90.0))]
    probe_seeds = [_row("xyz", "digit_top1", 20.0, seed=0), _row("xyz", "digit_top1", 30.0, 1)]
    write_rows(path, seeded + probe_seeds)
    text = markdown(read_rows(path)[1])
    measured = next(line for line in text.splitlines() if "[abc, abd]" in line)
    # two pretraining seeds: mean 25, t(0.975, 1) = 12.706 times the standard error 5
    assert "25.0 [-38.5, 88.5]" in measured and "-65.0" in measured and "measured" in measured
    # two probe seeds of one backbone are no interval over pretraining seeds
    assert "| ? [xyz] | linear |  | 25.0 |" in text
    png = tmp_path / "panel.png"
    assert main(["plot", "--csv", str(path), "--out", str(png)]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG"


def _coco(backbone: str, recipe: str, budget: str, value: float) -> dict:
    return {"backbone_id": backbone, "method": "simclr", "task": "coco_det",
            "protocol": "finetune", "recipe": recipe, "budget": budget, "metric": "bbox_AP",
            "value": value}


def test_published_numbers_only_beside_full_rows_of_the_same_recipe(tmp_path: Path) -> None:
    from benchmarks.results.tables import budget_sections

    path = tmp_path / "lb.csv"
    write_rows(path, [_coco("c4full", "R50-C4-1x", "full", 38.0),
                      _coco("cpu1", "coco_cpu_FPN_128px", "cpu", 0.1),
                      {**_row("cpu1", "digit_top1", 20.0), "budget": "cpu"}])
    text = budget_sections(read_rows(path)[1])
    full = text[text.index("## Budget `full`"):text.index("## Budget `cpu`")]
    cpu = text[text.index("## Budget `cpu`"):]
    assert "[c4full]" in full and "MCR/CompMod Table 5" in full and "36.8" in full  # zoo C4
    assert "38.6" not in full  # the zoo's FPN number: another recipe
    assert "RCL Table 4" not in text  # no full colorful_mnist row
    assert "published numbers do not apply" in cpu and "[cpu1]" in cpu
    assert "Table" not in cpu and "zoo" not in cpu
    everything = budget_sections(read_rows(path)[1], all_references=True)
    assert "## Published numbers" in everything and "RCL Table 4" in everything


def test_pretraining_seeds_of_one_recipe_are_one_entry(tmp_path: Path) -> None:
    from benchmarks.results.tables import summarize

    path = tmp_path / "lb.csv"
    write_rows(path, [{**_row(f"s{seed}", "digit_top1", value), "method": "simclr",
                       "pretrain_seed": seed} for seed, value in ((0, 20.0), (1, 30.0))]
               + [{**_row("x", "digit_top1", 50.0), "method": "simclr"},
                  {**_row("y", "digit_top1", 60.0), "method": "simclr"}])
    entries = summarize(read_rows(path)[1])["colorful_mnist"]
    by_ids = {tuple(e["backbone_ids"]): e["metrics"]["digit_top1"] for e in entries}
    assert set(by_ids) == {("s0", "s1"), ("x",), ("y",)}  # no recorded seed: its own entry
    assert by_ids[("s0", "s1")][:3] == pytest.approx((25.0, -38.53, 88.53), abs=0.01)
    assert by_ids[("s0", "s1")][3] == "t over 2 pretraining seeds"
    # probe seeds of one pretraining seed are averaged, not counted as seeds
    write_rows(path, [{**_row("s0", "digit_top1", 24.0, seed=1), "method": "simclr",
                       "pretrain_seed": 0}])
    entries = summarize(read_rows(path)[1])["colorful_mnist"]
    (seeded,) = [e["metrics"]["digit_top1"] for e in entries if e["backbone_ids"] == ["s0", "s1"]]
    assert seeded[:3] == pytest.approx((26.0, -24.82, 76.82), abs=0.01)
