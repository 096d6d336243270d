"""benchmarks/results/report.py: claims with intervals and verdicts, the report by budget,
pictures."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.probes.example_predictions import Predictions
from benchmarks.results import stats
from benchmarks.results.claims import claims, claims_markdown
from benchmarks.results.leaderboard import read_rows, write_rows
from benchmarks.results.pictures import axis_label, panels, shortcut_figure
from benchmarks.results.report import write

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


def _claim_list(tmp_path: Path, rows: list[dict]) -> list[dict]:
    board = tmp_path / "board.csv"
    board.unlink(missing_ok=True)
    write_rows(board, rows)
    return claims(read_rows(board)[1])


def _claims(tmp_path: Path, rows: list[dict]) -> dict[tuple[str, str], dict]:
    return {(c["claim"], c["metric"]): c for c in _claim_list(tmp_path, rows)}


def test_one_run_per_side_keeps_the_test_set_interval_and_gives_no_verdict(
        tmp_path: Path) -> None:
    found = _claims(tmp_path, [
        *_backbone(tmp_path, "mocov2+rcl", {"digit": 0.9, "background": 0.8}),
        *_backbone(tmp_path, "mocov2", {"digit": 0.2, "background": 0.5})])
    digit = found[("mocov2+rcl vs mocov2", "digit_top1")]
    assert digit["published"] == (88.3, 15.7) and digit["source"] == "RCL Table 4"
    assert digit["measured_diff"] == pytest.approx(70.0)
    assert digit["low"] > 0 and digit["verdict"] == "one run"
    assert "over 400 test examples only" in digit["interval"]
    assert digit["published_recipe"] == "rcl-fixed-linear" and digit["budget"] == "cpu"
    # published 46.5 vs 48.5: -2.0 is inside 1.96 * sqrt(2) * 1 point of the papers' noise
    background = found[("mocov2+rcl vs mocov2", "background_top1")]
    assert background["low"] > 0 and background["verdict"] == "not testable"
    assert background["noise_source"].startswith("suite default")


def test_without_predictions_one_run_has_no_interval(tmp_path: Path) -> None:
    rows = [*_backbone(tmp_path, "mocov2+rcl", {"digit": 0.9}),
            *_backbone(tmp_path, "mocov2", {"digit": 0.2})]
    for row in rows:
        row["predictions"] = ""
    digit = _claims(tmp_path, rows)[("mocov2+rcl vs mocov2", "digit_top1")]
    assert digit["low"] is None and digit["verdict"] == "one run"


def _seeded(tmp_path: Path, name: str, values: dict[str, list[float]], **fields: str
            ) -> list[dict]:
    """Rows of one backbone recipe pretrained with len(values) seeds (probe seed 0 each)."""
    count = len(next(iter(values.values())))
    return [{**r, **fields} for s in range(count) for r in _backbone(
        tmp_path, name, {m: 0.5 for m in values}, pretrain_seed=s,
        values={m: v[s] for m, v in values.items()})]


def test_several_seeds_give_a_welch_interval_over_pretraining_seeds(tmp_path: Path) -> None:
    ours, base = [30.0, 34.0, 29.0], [20.0, 21.0, 25.0]
    rows = _seeded(tmp_path, "mocov2+rcl", {"digit": ours}) + _seeded(
        tmp_path, "mocov2", {"digit": base})
    digit = _claims(tmp_path, rows)[("mocov2+rcl vs mocov2", "digit_top1")]
    # the predictions are alike for every seed, so the test-set variance adds nothing here
    expected = stats.seed_difference(ours, base)
    assert digit["measured_diff"] == pytest.approx(expected.diff)
    assert (digit["low"], digit["high"]) == pytest.approx(expected.interval(0.95))
    assert digit["interval"].startswith("Welch t over pretraining seeds (3 and 3) + test-set")
    assert digit["seeds"] == (["0", "1", "2"], ["0", "1", "2"])
    # +9 measured against +72.6 published, on the cpu budget: the direction only
    assert digit["verdict"] == "direction reproduced"


def test_the_test_set_variance_is_folded_into_the_interval_over_seeds(tmp_path: Path) -> None:
    shares = {"mocov2+rcl": [0.6, 0.7, 0.65], "mocov2": [0.3, 0.35, 0.2]}
    rows = [r for name, side in shares.items() for s, share in enumerate(side)
            for r in _backbone(tmp_path, name, {"digit": share}, pretrain_seed=s)]
    digit = _claims(tmp_path, rows)[("mocov2+rcl vs mocov2", "digit_top1")]
    correct = {name: np.stack([np.arange(N) < share * N for share in side])
               for name, side in shares.items()}
    variance = stats.examples_variance(correct["mocov2+rcl"], correct["mocov2"])
    values = {name: [100 * share for share in side] for name, side in shares.items()}
    expected = stats.seed_difference(values["mocov2+rcl"], values["mocov2"], variance)
    assert variance > 1.0
    assert (digit["low"], digit["high"]) == pytest.approx(expected.interval(0.95))
    assert "+ test-set variance (400 examples)" in digit["interval"]


def test_seeds_on_one_side_only_are_one_run_without_an_interval(tmp_path: Path) -> None:
    rows = _seeded(tmp_path, "mocov2+rcl", {"digit": [85.0, 90.0, 88.0]}) + _backbone(
        tmp_path, "mocov2", {"digit": 0.2})
    digit = _claims(tmp_path, rows)[("mocov2+rcl vs mocov2", "digit_top1")]
    assert digit["verdict"] == "one run" and digit["low"] is None
    assert digit["interval"] == ("none (pretraining seeds: 3 and 1; an interval over seeds "
                                 "needs two a side)")
    assert digit["measured_diff"] == pytest.approx(87.667 - 20.0, abs=1e-3)


def test_the_published_recipe_can_reproduce_the_size(tmp_path: Path) -> None:
    full = {"budget": "full", "recipe": "rcl-fixed-linear", "deviations": ""}
    rows = _seeded(tmp_path, "mocov2+rcl", {"digit": [85.0, 90.0, 88.0]}, **full) + _seeded(
        tmp_path, "mocov2", {"digit": [15.0, 17.0, 14.0]}, **full)
    digit = _claims(tmp_path, rows)[("mocov2+rcl vs mocov2", "digit_top1")]
    assert digit["low"] < 72.6 < digit["high"] and digit["verdict"] == "reproduced"
    other = [{**r, "recipe": "linear-adamw-100e"} for r in rows]
    digit = _claims(tmp_path, other)[("mocov2+rcl vs mocov2", "digit_top1")]
    assert digit["verdict"] == "direction reproduced"


def test_the_family_is_the_testable_claims_over_seeds_adjusted_by_bh(tmp_path: Path) -> None:
    """Colorful-MNIST digit and background, FairFace age, gender and race, all over three seeds:
    background (-2.0) and race (-0.7) are inside the papers' noise and leave the family; the
    other three are one Benjamini-Hochberg family whose intervals are drawn at 1 - R q / m."""
    rows = _seeded(tmp_path, "mocov2+rcl", {"digit": [10.0, 12.0, 11.0],
                                            "background": [50.0, 52.0, 51.0]})
    rows += _seeded(tmp_path, "mocov2", {"digit": [30.0, 33.0, 31.0],
                                         "background": [50.0, 51.0, 52.0]})
    fairface = {"task": "fairface"}
    rows += _seeded(tmp_path, "mocov2+rcl", {"age": [48.0, 50.0, 49.5],
                                             "gender": [80.0, 78.0, 79.5],
                                             "race": [61.0, 60.0, 62.0]}, **fairface)
    rows += _seeded(tmp_path, "mocov2", {"age": [45.0, 46.5, 44.0], "gender": [79.0, 80.0, 78.0],
                                         "race": [61.0, 61.5, 60.0]}, **fairface)
    found = _claims(tmp_path, rows)
    verdicts = {metric: c["verdict"] for (_, metric), c in found.items()}
    assert verdicts == {"digit_top1": "contradicted", "background_top1": "not testable",
                        "age_top1": "direction reproduced", "gender_top1": "inconclusive",
                        "race_top1": "not testable"}
    family = [c for c in found.values() if c["family"]]
    assert sorted(c["metric"] for c in family) == ["age_top1", "digit_top1", "gender_top1"]
    level = 1 - 2 * 0.05 / 3   # two of three selected
    age = found[("mocov2+rcl vs mocov2", "age_top1")]
    expected = stats.seed_difference([48.0, 50.0, 49.5], [45.0, 46.5, 44.0])
    assert age["level"] == pytest.approx(level)
    assert (age["low"], age["high"]) == pytest.approx(expected.interval(level))
    assert age["high"] - age["low"] > np.subtract(*expected.interval(0.95)[::-1])
    text = "\n".join(claims_markdown(list(found.values())))
    assert "the family is the 3 claim(s)" in text and "drawn at 96.67%" in text
    assert "Judged over pretraining seeds" in text and "| 3 (0, 1, 2) vs 3 (0, 1, 2) |" in text


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
    rows += [{**r, "backbone_id": "3f9a0c1e22b7", "backbone_name": "tv50", "method": "unknown",
              "params": 25.6} for r in _backbone(tmp_path, "tv50", {"digit": 0.3})]
    write_rows(out / "leaderboard.csv", rows)
    records = [{"backbone": "x|y", "stage": "pretrain", "status": "failed",
                "reason": "exit 1: a | b\nsecond line", "seconds": 1.0}]
    text = write(out, records).read_text()
    assert "| x\\|y | pretrain | failed | exit 1: a \\| b second line |" in text
    assert "## Budget `cpu`: published numbers do not apply" in text
    assert "| mocov2+rcl vs mocov2 | colorful_mnist | linear | digit_top1 | cpu |" in text
    assert "one run" in text and "RCL Table 4" in text
    assert "One pretraining run per side in the rows, hence `one run`" in text
    assert "Multiplicity: no claim here has two pretraining seeds" in text
    assert "| mocov2+rcl | mocov2+rcl-0 | colorful_mnist | 64 | 11.2 | 0.15 |" in text
    assert "| tv50 [3f9a0c1e22b7] | linear" in text and "| tv50 | 3f9a0c1e22b7 |" in text
    assert "unknown" not in text
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


def test_pictures_show_published_points_only_beside_full_rows_of_the_same_recipe(
        tmp_path: Path) -> None:
    full = {"budget": "full", "recipe": "rcl-fixed-linear", "deviations": ""}
    rows = [{**r, **full} for r in _backbone(tmp_path, "mocov2", {"digit": 0.2, "background": 0.5})]
    rows += [{**r, **full} for r in _backbone(tmp_path, "mocov2+rcl",
                                               {"digit": 0.9, "background": 1.0})]
    rows += [{**r, "protocol": "finetune"} for r in _backbone(
        tmp_path, "mocov2", {"digit": 0.2, "background": 0.5})]   # budget cpu
    other = {**full, "recipe": "linear-adamw-100e", "task": "colorful_mnist"}
    rows += [{**r, **other, "protocol": "knn5"} for r in _backbone(
        tmp_path, "mocov2", {"digit": 0.2, "background": 0.5})]  # full, but no paper's recipe
    write_rows(tmp_path / "b.csv", rows)
    found = panels(read_rows(tmp_path / "b.csv")[1])
    assert set(found) == {("colorful_mnist", p) for p in ("linear", "finetune", "knn5")}
    assert not any(p.published for p in found[("colorful_mnist", "finetune")])
    assert not any(p.published for p in found[("colorful_mnist", "knn5")])
    linear = found[("colorful_mnist", "linear")]
    published = {p.label for p in linear if p.published}
    assert "mocov2+rcl · published, RCL Table 4 (88.3, 46.5)" in published
    assert all("RCL Table 4" in label for label in published)
    # a regularized backbone shares its base's pair and condition: one hue and an arrow
    rcl, base = (next(p for p in linear if not p.published and p.label.startswith(name))
                 for name in ("mocov2+rcl ·", "mocov2 ·"))
    assert rcl.regularized and not base.regularized and (rcl.pair, rcl.link) == (
        base.pair, base.link)
    assert rcl.y[2] <= 100.0   # the interval is cut at the possible range


def test_picture_axes_are_words_and_named_backbones_keep_their_name(tmp_path: Path) -> None:
    assert axis_label(("age_top1", "gender_top1")) == "age and gender accuracy (mean of the 2, %)"
    assert axis_label(("train_fg_test_fg_top1",)) == "accuracy on foreground-only images (%)"
    rows = [{**r, "backbone_name": "tv50", "method": "unknown"}
            for r in _backbone(tmp_path, "mocov2", {"digit": 0.2, "background": 0.5})]
    write_rows(tmp_path / "b.csv", rows)
    (point,) = panels(read_rows(tmp_path / "b.csv")[1])[("colorful_mnist", "linear")]
    assert point.label == "tv50 · cpu (20.0, 50.0)" and point.pair == "tv50"
    assert not point.regularized


def test_the_report_says_msr_is_inert_at_the_cpu_budget_only() -> None:
    from benchmarks.results.report import budget_notes

    row = {"budget": "cpu", "regularizer": "msr", "method": "byol"}
    assert "MSR is inert at the cpu budget" in "\n".join(budget_notes([row]))
    assert budget_notes([{**row, "budget": "full"}]) == []
    assert budget_notes([{**row, "regularizer": "rcl"}]) == []
