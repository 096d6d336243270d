"""benchmarks/results/report.py: claims with intervals and verdicts, the report by budget,
pictures."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.probes.probe import Predictions
from benchmarks.results import stats
from benchmarks.results.leaderboard import read_rows, write_rows
from benchmarks.results.report import claims, shortcut_figure, write

N = 400


def _backbone(tmp_path: Path, name: str, correct: dict[str, float], seed: int = 0,
              pretrain_seed: int = 0, values: dict[str, float] | None = None) -> list[dict]:
    """Rows of one colorful_mnist linear run with saved predictions: ``correct`` is the share of
    the N test examples (the first ones) each metric's prediction gets right."""
    method, _, regularizer = name.partition("+")
    labels = torch.arange(N) % 10
    predictions = Predictions()
    for attr, share in correct.items():
        predicted = labels.clone()
        predicted[int(share * N):] = (labels[int(share * N):] + 1) % 10
        predictions.add("linear", seed, {attr: predicted}, {attr: labels}, tmp_path / "data")
    path = predictions.save(tmp_path / f"{name}-{pretrain_seed}-{seed}.npz")
    return [{"backbone_id": f"{name}-{pretrain_seed}", "method": method,
             "regularizer": regularizer or "none", "task": "colorful_mnist", "protocol": "linear",
             "recipe": "linear-adamw-100e", "budget": "cpu", "deviations": "data=synthetic",
             "metric": f"{attr}_top1", "value": (values or {}).get(attr, 100.0 * share),
             "seed": seed, "pretrain_seed": pretrain_seed, "predictions": str(path)}
            for attr, share in correct.items()]


def _claims(tmp_path: Path, rows: list[dict]) -> dict[tuple[str, str], dict]:
    board = tmp_path / "board.csv"
    write_rows(board, rows)
    return {(c["claim"], c["metric"]): c for c in claims(read_rows(board)[1])}


def test_one_seed_verdicts_come_from_a_paired_bootstrap(tmp_path: Path) -> None:
    found = _claims(tmp_path, [
        *_backbone(tmp_path, "mocov2+rcl", {"digit": 0.9, "background": 0.8}),
        *_backbone(tmp_path, "mocov2", {"digit": 0.2, "background": 0.5})])
    digit = found[("mocov2+rcl vs mocov2", "digit_top1")]
    assert digit["published"] == (88.3, 15.7) and digit["source"] == "RCL Table 4"
    assert digit["measured_diff"] == pytest.approx(70.0)
    assert digit["low"] > 0 and digit["verdict"] == "reproduced"
    assert "paired bootstrap over 400" in digit["interval"]
    # published 46.5 vs 48.5 (RCL lower); measured clearly higher: the opposite sign
    background = found[("mocov2+rcl vs mocov2", "background_top1")]
    assert background["low"] > 0 and background["verdict"] == "contradicted"
    assert digit["published_recipe"] == "rcl-fixed-linear" and digit["budget"] == "cpu"


def test_identical_predictions_are_inconclusive(tmp_path: Path) -> None:
    found = _claims(tmp_path, [*_backbone(tmp_path, "mocov2+rcl", {"digit": 0.3}),
                               *_backbone(tmp_path, "mocov2", {"digit": 0.3})])
    digit = found[("mocov2+rcl vs mocov2", "digit_top1")]
    assert (digit["low"], digit["high"]) == (0.0, 0.0) and digit["verdict"] == "inconclusive"


def test_without_predictions_there_is_no_interval_and_no_verdict(tmp_path: Path) -> None:
    rows = [*_backbone(tmp_path, "mocov2+rcl", {"digit": 0.9}),
            *_backbone(tmp_path, "mocov2", {"digit": 0.2})]
    for row in rows:
        row["predictions"] = ""
    digit = _claims(tmp_path, rows)[("mocov2+rcl vs mocov2", "digit_top1")]
    assert digit["low"] is None and digit["verdict"] == "inconclusive"


def test_several_seeds_give_a_welch_interval_over_seeds(tmp_path: Path) -> None:
    ours, base = [30.0, 34.0, 29.0], [20.0, 21.0, 25.0]
    rows = [r for s, v in enumerate(ours) for r in _backbone(
                tmp_path, "mocov2+rcl", {"digit": 0.5}, seed=s, pretrain_seed=s,
                values={"digit": v})]
    rows += [r for s, v in enumerate(base) for r in _backbone(
                tmp_path, "mocov2", {"digit": 0.5}, seed=s, pretrain_seed=s,
                values={"digit": v})]
    digit = _claims(tmp_path, rows)[("mocov2+rcl vs mocov2", "digit_top1")]
    expected = stats.welch_interval(ours, base)
    assert (digit["measured_diff"], digit["low"], digit["high"]) == pytest.approx(expected)
    assert digit["interval"].startswith("Welch t over seeds (3 and 3)")
    assert digit["verdict"] == "reproduced"


def test_pairs_no_paper_tests_are_listed_apart(tmp_path: Path) -> None:
    found = _claims(tmp_path, [*_backbone(tmp_path, "simclr+rcl", {"digit": 0.4}),
                               *_backbone(tmp_path, "simclr", {"digit": 0.3})])
    assert set(found) == {("simclr+rcl vs simclr", "digit_top1")}
    (pair,) = found.values()
    assert pair["published"] is None and pair["verdict"] == "no published claim"


def test_runs_of_another_budget_are_not_paired(tmp_path: Path) -> None:
    rows = _backbone(tmp_path, "mocov2+rcl", {"digit": 0.9})
    base = _backbone(tmp_path, "mocov2", {"digit": 0.2})
    for row in base:
        row["budget"] = "smoke"
    assert _claims(tmp_path, rows + base) == {}


def test_report_is_escaped_sectioned_and_drawn(tmp_path: Path) -> None:
    out = tmp_path / "suite"
    out.mkdir()
    rows = [*_backbone(tmp_path, "mocov2+rcl", {"digit": 0.9, "background": 0.5}),
            *_backbone(tmp_path, "mocov2", {"digit": 0.2, "background": 0.5})]
    rows[0] = {**rows[0], "params": 11.2, "gflops": 0.15, "input_size": 64}
    write_rows(out / "leaderboard.csv", rows)
    records = [{"backbone": "x|y", "stage": "pretrain", "status": "failed",
                "reason": "exit 1: a | b\nsecond line", "seconds": 1.0}]
    text = write(out, records).read_text()
    assert "| x\\|y | pretrain | failed | exit 1: a \\| b second line |" in text
    assert "## Budget `cpu`: published numbers do not apply" in text
    assert "| mocov2+rcl vs mocov2 | colorful_mnist | linear | digit_top1 | cpu |" in text
    assert "reproduced" in text and "RCL Table 4" in text
    assert "| mocov2+rcl | mocov2+rcl-0 | colorful_mnist | 64 | 11.2 | 0.15 |" in text
    png = out / "shortcut_colorful_mnist.png"
    assert png.read_bytes()[:4] == b"\x89PNG" and f"]({png.name})" in text


def test_shortcut_figure_has_a_panel_per_protocol(tmp_path: Path) -> None:
    import matplotlib.image

    rows = _backbone(tmp_path, "mocov2", {"digit": 0.2, "background": 0.5})
    rows += [{**r, "protocol": "finetune"} for r in rows]
    write_rows(tmp_path / "b.csv", rows)
    one = shortcut_figure(read_rows(tmp_path / "b.csv")[1][:2], tmp_path / "one.png")
    two = shortcut_figure(read_rows(tmp_path / "b.csv")[1], tmp_path / "two.png")
    width = [matplotlib.image.imread(p).shape[1] for p in (one, two)]
    assert width[1] == pytest.approx(2 * width[0], rel=0.05)
    with pytest.raises(ValueError, match="no measured rows"):
        shortcut_figure([], tmp_path / "none.png")
    assert np.isfinite(width).all()
