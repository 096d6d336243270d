"""The suite's report: ``report.md`` in the run folder, and its pictures.

- the leaderboard by budget (:func:`benchmarks.results.leaderboard.budget_sections`): published
  numbers only beside ``full`` rows of the same task, protocol and recipe;
- the papers' claims: each published regularizer-versus-base difference that the measured rows can
  test, the measured difference with its 95% interval (Welch's t over seeds when each side has
  several, else a paired bootstrap over the test examples of the saved predictions) and a verdict
  (:func:`benchmarks.results.stats.verdict`);
- the shortcut pictures: per task with a shortcut gap, the easy cue's accuracy against the hard
  one's per backbone with interval bars, published points marked, one figure per task and one
  panel per protocol;
- each backbone's parameters and FLOPs (fvcore, at the benchmark's input size), failures, timings.

Every cell of every table is escaped with :func:`benchmarks.results.leaderboard.markdown_text`.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from benchmarks.results import stats
from benchmarks.results.gaps import gap_of
from benchmarks.results.leaderboard import (
    budget_sections,
    load_correct,
    markdown_text,
    name_of,
    read_rows,
    reference_rows,
    summarize,
)
from benchmarks.results.speed_record import report_lines as speed_lines
from pretrain.files import atomic_write, git_commit

# what makes two measured rows comparable: same test set, recipe and budget
CONDITION = ("task", "protocol", "metric", "recipe", "budget", "deviations")


def _table(head: list[str], rows: list[list[Any]]) -> list[str]:
    """A markdown table, every cell escaped."""
    def line(cells: list[Any]) -> str:
        return "| " + " | ".join(markdown_text(c) for c in cells) + " |"

    return [line(head), "|" + "---|" * len(head), *map(line, rows)]


def _measured_groups(rows: list[dict[str, str]]) -> dict[tuple, list[dict[str, str]]]:
    """Measured rows by (method, regularizer, *CONDITION)."""
    groups: dict[tuple, list[dict[str, str]]] = {}
    for r in rows:
        if r["source"] == "measured":
            key = (r["method"], r.get("regularizer") or "none", *(r.get(c, "") for c in CONDITION))
            groups.setdefault(key, []).append(r)
    return groups


def _per_seed(rows: list[dict[str, str]]) -> dict[str, float]:
    """Mean value per seed (pretraining and probe seed; several backbones of one seed average)."""
    values: dict[str, list[float]] = {}
    for r in rows:
        values.setdefault(f"{r.get('pretrain_seed', '')}/{r['seed']}", []).append(
            float(r["value"]))
    return {seed: sum(v) / len(v) for seed, v in values.items()}


def difference(a: list[dict[str, str]], b: list[dict[str, str]]
               ) -> tuple[float, float | None, float | None, str]:
    """(mean of A - mean of B, low, high, how the interval was had) for two groups of measured
    rows under one condition; low and high are None when no interval can be had."""
    seeds_a, seeds_b = _per_seed(a), _per_seed(b)
    diff = (sum(seeds_a.values()) / len(seeds_a)) - (sum(seeds_b.values()) / len(seeds_b))
    if len(seeds_a) > 1 and len(seeds_b) > 1:
        _, low, high = stats.welch_interval(list(seeds_a.values()), list(seeds_b.values()))
        return diff, low, high, f"Welch t over seeds ({len(seeds_a)} and {len(seeds_b)})"
    for row_a in a:  # one seed: pair the test examples of two rows of one seed
        for row_b in b:
            if row_a["seed"] != row_b["seed"]:
                continue
            found_a, found_b = load_correct(row_a), load_correct(row_b)
            if found_a and found_b and found_a[0] == found_b[0]:
                _, low, high = stats.paired_bootstrap(found_a[1], found_b[1])
                return diff, low, high, f"paired bootstrap over {len(found_a[1])} test examples"
    return diff, None, None, "no interval (no paired predictions, one seed)"


def claims(rows: list[dict[str, str]]) -> list[dict[str, Any]]:
    """Each published ``method+regularizer`` versus ``method`` difference (same source, task,
    protocol and metric) that the measured rows can test, once per measured condition (recipe,
    budget, deviations), with the measured difference, its 95% interval and the verdict; and each
    measured pair no paper tests (``published`` None), on the headline metrics (those of the
    published tables and the shortcut gaps)."""
    published = {(r["source"], r["method"], r["regularizer"], r["task"], r["protocol"],
                  r["metric"]): r for r in reference_rows()}
    measured = _measured_groups(rows)
    found, tested = [], set()
    for (source, method, regularizer, task, protocol, metric), ref in published.items():
        base = published.get((source, method, "none", task, protocol, metric))
        if regularizer == "none" or base is None:
            continue
        for (m, reg, *condition), group in sorted(measured.items(), key=lambda kv: kv[0]):
            if (m, reg, *condition[:3]) != (method, regularizer, task, protocol, metric):
                continue
            base_group = measured.get((method, "none", *condition))
            if base_group is None:
                continue
            tested.add((method, regularizer, *condition))
            found.append(_claim(method, regularizer, condition, group, base_group,
                                (float(ref["value"]), float(base["value"])), ref))
    headline = {(r["task"], r["metric"]) for r in reference_rows()} | {
        (task, m) for task in {c[0] for _, _, *c in measured} if gap_of(task)
        for m in gap_of(task).plus + gap_of(task).minus}
    for (method, regularizer, *condition), group in sorted(measured.items()):
        base_group = measured.get((method, "none", *condition))
        if (regularizer != "none" and base_group and (method, regularizer, *condition) not in tested
                and (condition[0], condition[2]) in headline):
            found.append(_claim(method, regularizer, condition, group, base_group, None, None))
    return found


def _claim(method: str, regularizer: str, condition: list[str], group: list[dict[str, str]],
           base_group: list[dict[str, str]], published: tuple[float, float] | None,
           ref: dict[str, str] | None) -> dict[str, Any]:
    diff, low, high, kind = difference(group, base_group)
    published_diff = None if published is None else published[0] - published[1]
    if published_diff is None:
        verdict = "no published claim"
    elif low is None:
        verdict = "inconclusive"
    else:
        verdict = stats.verdict(published_diff, low, high)
    return {"claim": f"{method}+{regularizer} vs {method}", **dict(zip(CONDITION, condition)),
            "published": published, "published_diff": published_diff,
            "source": (ref or {}).get("source", ""),
            "published_recipe": (ref or {}).get("recipe", ""), "note": (ref or {}).get("note", ""),
            "measured_diff": diff, "low": low,
            "high": high, "interval": kind, "verdict": verdict}


WHY_INCONCLUSIVE = (
    "A verdict is `reproduced` when the measured difference's 95% interval excludes 0 on the "
    "published side, `contradicted` when it excludes 0 on the other side, `inconclusive` "
    "otherwise. With one pretraining run per backbone the interval is over the test examples "
    "only (paired bootstrap): it says whether these two backbones differ on this test set, not "
    "whether another pretraining seed would give the same sign; use `--seeds N` for an interval "
    "over seeds. On the `cpu` and `smoke` budgets every backbone is pretrained for tens of steps "
    "and probed briefly on synthetic data, so their differences are mostly noise and nearly every "
    "verdict there is `inconclusive`; even a `reproduced` there tests a different recipe from the "
    "paper's (see the recipe column).")


def claims_markdown(found: list[dict[str, Any]]) -> list[str]:
    if not found:
        return []
    tested = [c for c in found if c["published"] is not None]
    lines = ["## The papers' claims, tested on this panel", "", WHY_INCONCLUSIVE, ""]
    if tested:
        lines += _table(
            ["claim", "task", "protocol", "metric", "budget", "recipe (published / measured)",
             "published", "published difference", "measured difference [95% interval]",
             "interval", "verdict", "source"],
            [[c["claim"], c["task"], c["protocol"], c["metric"], c["budget"],
              f"{c['published_recipe']} / {c['recipe']}",
              f"{c['published'][0]:.1f} vs {c['published'][1]:.1f}",
              f"{c['published_diff']:+.2f}", _interval(c), c["interval"], c["verdict"],
              c["source"] + (f" ({c['note']})" if c["note"] else "")] for c in tested]) + [""]
    untested = [c for c in found if c["published"] is None]
    if untested:
        lines += ["Pairs of the panel under a task, protocol or metric that no stored paper table "
                  "reports (RCL, for one, is published on MoCo v2 only: `mocov2+rcl`):", ""]
        lines += _table(["pair", "task", "protocol", "metric", "budget", "recipe",
                         "measured difference [95% interval]", "interval"],
                        [[c["claim"], c["task"], c["protocol"], c["metric"], c["budget"],
                          c["recipe"], _interval(c), c["interval"]] for c in untested]) + [""]
    return lines


def _interval(c: dict[str, Any]) -> str:
    if c["low"] is None:
        return f"{c['measured_diff']:+.2f}"
    return f"{c['measured_diff']:+.2f} [{c['low']:+.2f}, {c['high']:+.2f}]"


# ----------------------------------------------------------------------------- pictures
def shortcut_tasks(rows: list[dict[str, str]]) -> list[str]:
    """The tasks of measured rows that have a shortcut gap, in order."""
    return sorted({r["task"] for r in rows if r["source"] == "measured" and gap_of(r["task"])})


def _axis(entry: dict[str, Any], metrics: tuple[str, ...]) -> tuple[float, float, float] | None:
    """(mean, low, high) of the mean of ``metrics`` (intervals averaged: an approximation when
    there are several)."""
    found = [entry["metrics"].get(m) for m in metrics]
    if None in found:
        return None
    mean = sum(f[0] for f in found) / len(found)
    if any(f[1] is None for f in found):
        return mean, mean, mean
    return (mean, sum(f[1] for f in found) / len(found), sum(f[2] for f in found) / len(found))


def shortcut_figure(rows: list[dict[str, str]], png: str | Path, tasks: list[str] | None = None,
                    mark: str = "python -m benchmarks.suite") -> Path:
    """One figure: per task of ``tasks`` (default every measured task with a shortcut gap) and
    per measured protocol, one panel plotting each backbone's hard-cue accuracy (x: digit, mean
    of age and gender, ...) against its easy-cue accuracy (y: background, race, ...) with 95%
    interval bars; published points of the same task and protocol as black crosses."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = tasks or shortcut_tasks(rows)
    table = summarize(rows + reference_rows())
    panels = [(task, protocol) for task in tasks for protocol in sorted(
        {e["protocol"] for e in table.get(task, []) if e["source"] == "measured"})]
    if not panels:
        raise ValueError("no measured rows of a task with a shortcut gap to plot")
    columns = min(2, len(panels))
    rows_of_panels = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows_of_panels, columns, figsize=(6.5 * columns, 5.5 * rows_of_panels),
                             squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, (task, protocol) in zip(axes.flat, panels):
        gap = gap_of(task)
        published = 0
        for e in table[task]:
            if e["protocol"] != protocol:
                continue
            x, y = _axis(e, gap.plus), _axis(e, gap.minus)
            if x is None or y is None:
                continue
            if e["source"] != "measured":
                ax.plot(x[0], y[0], "kx", markersize=9,
                        label="published" if published == 0 else None)
                # staggered so that nearby published points keep readable names
                ax.annotate(e["name"], (x[0], y[0]), fontsize=8,
                            xytext=(6, 6 - 11 * (published % 4)), textcoords="offset points")
                published += 1
                continue
            label = e["name"] + ("" if e["budget"] == "full" else f" ({e['budget']})")
            ax.errorbar(x[0], y[0], xerr=[[x[0] - x[1]], [x[2] - x[0]]],
                        yerr=[[y[0] - y[1]], [y[2] - y[0]]], fmt="o", capsize=3, label=label)
        ax.set_xlim(0, 100)
        ax.set_ylim(0, 100)
        ax.set_xlabel(" + ".join(gap.plus).replace("_top1", "") + " accuracy (%)", fontsize=10)
        ax.set_ylabel(" + ".join(gap.minus).replace("_top1", "") + " accuracy (%)", fontsize=10)
        ax.set_title(f"{task} / {protocol} (bars: 95% interval)", fontsize=11)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110, metadata={"Software": mark})
    plt.close(fig)
    return png


# ----------------------------------------------------------------------------- the report
def cost_markdown(rows: list[dict[str, str]]) -> list[str]:
    """Parameters and FLOPs per backbone and input size (fvcore, recorded by the probes)."""
    seen: dict[tuple[str, ...], None] = {}
    for r in rows:
        if r["source"] == "measured" and r.get("params"):
            seen[(name_of(r), r["backbone_id"], r["task"], r.get("input_size", ""),
                  r["params"], r.get("gflops", ""))] = None
    if not seen:
        return []
    return ["## Backbone cost (fvcore, forward pass of one image at the task's input size)", "",
            *_table(["backbone", "id", "task", "input (px)", "parameters (M)", "GFLOPs"],
                    [list(k) for k in seen]), ""]


def write(out: Path, records: list[dict]) -> Path:
    """``<out>/report.md`` (leaderboard by budget, claims, pictures, cost, failures, timings)
    and one ``shortcut_<task>.png`` per task with a shortcut gap."""
    csv = out / "leaderboard.csv"
    rows = read_rows(csv)[1] if csv.exists() else []
    lines = [f"# Suite report ({time.strftime('%Y-%m-%d %H:%M')}, commit {git_commit()})", ""]
    problems = [r for r in records if r["status"] != "done"]
    if problems:
        lines += ["## Stages that did not finish", ""]
        lines += _table(["backbone", "stage", "status", "reason"],
                        [[r["backbone"], r["stage"], r["status"], r.get("reason", "")]
                         for r in problems]) + [""]
    lines += ["# Leaderboard", "", budget_sections(rows) if rows else "(no rows)", ""]
    lines += claims_markdown(claims(rows))
    for task in shortcut_tasks(rows):
        png = shortcut_figure(rows, out / f"shortcut_{task}.png", [task])
        lines += [f"![{task}: shortcut picture]({png.name})", ""]
    lines += cost_markdown(rows)
    lines += speed_lines(out)
    total = sum(r.get("seconds", 0.0) for r in records)
    lines += [f"## Timings (total {total / 60:.1f} min of stage time)", ""]
    lines += _table(["backbone", "stage", "status", "seconds"],
                    [[r["backbone"], r["stage"], r["status"], r.get("seconds", "")]
                     for r in records])
    path = out / "report.md"
    atomic_write(path, lambda f: f.write("\n".join(lines).encode()))
    return path
