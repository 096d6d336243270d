"""The shortcut pictures: per task with a shortcut gap and per measured protocol, one panel of
each backbone's hard-cue accuracy (x) against its easy-cue accuracy (y), saying what the report
says.

- Published points only on a panel that has measured ``full`` rows, and only those of the same
  task, protocol and recipe (:func:`benchmarks.results.tables.references_for`); a quick
  budget's panel says it has none.
- A regularized backbone shares its base's hue and an arrow runs from the base to it (one arrow
  per measured condition: budget, recipe, deviations; dashed between published points). Base
  backbones are hollow, regularized ones filled, published ones crosses.
- Names and values go in a legend beside the panel (they never overlap the points or each
  other, and points that crowd one corner stay readable); the axes
  are named in words; the limits leave room around 0 and 100 and interval bars are cut at the
  possible range, so nothing is clipped.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.results.gaps import gap_of
from benchmarks.results.tables import references_for, summarize
from pretrain.files import atomic_write

# what each gap metric measures, in words (the axis labels)
METRIC_WORDS = {
    "digit_top1": "digit", "background_top1": "background colour",
    "age_top1": "age", "gender_top1": "gender", "race_top1": "race",
    "train_fg_test_fg_top1": "foreground-only images",
    "train_full_test_full_top1": "full images (object and context)",
}
PROTOCOL_WORDS = {"linear": "linear probe", "fixed": "frozen backbone, trained head",
                  "finetune": "fine-tuned", "knn5": "5-nearest-neighbour"}
TASK_WORDS = {"colorful_mnist": "Colorful-MNIST", "fairface": "FairFace",
              "coco_fgbg": "COCO foreground / background"}
MARGIN = 4.0  # percentage points shown beyond 0 and 100


@dataclass(frozen=True)
class Point:
    """One backbone (or published number) on one panel."""

    label: str                           # its legend entry
    pair: str                            # what shares a hue: a base and its regularized ones
    link: tuple[str, ...]                # the condition an arrow stays within
    regularized: bool
    published: bool
    x: tuple[float, float, float]        # (mean, low, high), percent
    y: tuple[float, float, float]


def shortcut_tasks(rows: list[dict[str, str]]) -> list[str]:
    """The tasks of measured rows that have a shortcut gap, in order."""
    return sorted({r["task"] for r in rows if r["source"] == "measured" and gap_of(r["task"])})


def axis_label(metrics: tuple[str, ...]) -> str:
    """An axis named in words: ``age and gender accuracy (mean of the two, %)``."""
    words = [METRIC_WORDS.get(m, m) for m in metrics]
    if len(words) == 1:
        return f"accuracy on {words[0]} (%)" if "images" in words[0] else f"{words[0]} accuracy (%)"
    return f"{' and '.join(words)} accuracy (mean of the {len(words)}, %)"


def _axis(entry: dict[str, Any], metrics: tuple[str, ...]) -> tuple[float, float, float] | None:
    """(mean, low, high) of the mean of ``metrics`` (intervals averaged: an approximation when
    there are several), the interval cut at 0 and 100."""
    found = [entry["metrics"].get(m) for m in metrics]
    if None in found:
        return None
    mean = sum(f[0] for f in found) / len(found)
    if any(f[1] is None for f in found):
        return mean, mean, mean
    low = sum(f[1] for f in found) / len(found)
    high = sum(f[2] for f in found) / len(found)
    return mean, max(low, 0.0), min(high, 100.0)


def panels(rows: list[dict[str, str]], tasks: list[str] | None = None
           ) -> dict[tuple[str, str], list[Point]]:
    """(task, protocol) -> its points, for every measured protocol of ``tasks`` (default every
    measured task with a shortcut gap); a panel whose rows lack a metric of the gap has none."""
    table = summarize(rows + references_for(rows))
    found: dict[tuple[str, str], list[Point]] = {}
    for task in tasks or shortcut_tasks(rows):
        gap = gap_of(task)
        measured = sorted({e["protocol"] for e in table.get(task, [])
                           if e["source"] == "measured"})
        for protocol in measured:
            points = found.setdefault((task, protocol), [])
            for e in table[task]:
                x, y = _axis(e, gap.plus), _axis(e, gap.minus)
                if e["protocol"] != protocol or x is None or y is None:
                    continue
                published = e["source"] != "measured"
                # the values in the legend: points near one another stay readable
                label = (f"{e['name']} · published, {e['source']}" if published
                         else f"{e['name']} · {e['budget']}") + f" ({x[0]:.1f}, {y[0]:.1f})"
                points.append(Point(
                    label=label, pair=e["backbone_name"] or e["method"],
                    link=(e["source"], e["budget"], e["recipe"], e["deviations"]),
                    regularized=e["regularizer"] != "none" and not e["backbone_name"],
                    published=published, x=x, y=y))
    return found


def shortcut_figure(rows: list[dict[str, str]], png: str | Path, tasks: list[str] | None = None,
                    mark: str = "python -m benchmarks.suite") -> Path:
    """One figure of the :func:`panels` of ``rows``, two panels a row, written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    found = panels(rows, tasks)
    if not found:
        raise ValueError("no measured rows of a task with a shortcut gap to plot")
    columns = min(2, len(found))
    lines = -(-len(found) // columns)
    fig, axes = plt.subplots(lines, columns, figsize=(10.5 * columns, 6.0 * lines),
                             squeeze=False, layout="constrained")
    for ax in axes.flat[len(found):]:
        ax.set_visible(False)
    # one hue per pair across the figure's panels
    pairs = dict.fromkeys(p.pair for points in found.values() for p in points)
    hues = {pair: plt.get_cmap("tab10")(i % 10) for i, pair in enumerate(pairs)}
    for ax, ((task, protocol), points) in zip(axes.flat, found.items()):
        _draw(ax, task, protocol, points, hues)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, metadata={"Software": mark})
    plt.close(fig)
    return atomic_write(Path(png), lambda f: f.write(buffer.getvalue()))


def _draw(ax: Any, task: str, protocol: str, points: list[Point], hues: dict[str, Any]) -> None:
    for p in points:
        hue = hues[p.pair]
        style = {"marker": "X" if p.published else "o", "markersize": 9 if p.published else 7,
                 "markerfacecolor": hue if p.regularized else "white", "markeredgecolor": hue,
                 "markeredgewidth": 1.8}
        ax.errorbar(p.x[0], p.y[0], xerr=[[p.x[0] - p.x[1]], [p.x[2] - p.x[0]]],
                    yerr=[[p.y[0] - p.y[1]], [p.y[2] - p.y[0]]], color=hue, capsize=3,
                    label=p.label, linestyle="none", **style)
    for base in (p for p in points if not p.regularized):
        for other in points:
            if other.regularized and (other.pair, other.link) == (base.pair, base.link):
                ax.annotate("", xy=(other.x[0], other.y[0]), xytext=(base.x[0], base.y[0]),
                            arrowprops={"arrowstyle": "->", "color": hues[base.pair], "lw": 1.3,
                                        "linestyle": "--" if base.published else "-"})
    gap = gap_of(task)
    ax.set_xlim(-MARGIN, 100 + MARGIN)
    ax.set_ylim(-MARGIN, 100 + MARGIN)
    ax.set_xlabel(axis_label(gap.plus), fontsize=10)
    ax.set_ylabel(axis_label(gap.minus), fontsize=10)
    note = ("published numbers of the same recipe: crosses" if any(p.published for p in points)
            else "no published numbers: no row of this panel ran a published recipe (budget full)")
    ax.set_title(f"{TASK_WORDS.get(task, task)}: {PROTOCOL_WORDS.get(protocol, protocol)}\n"
                 f"bars: 95% intervals; {note}", fontsize=10)
    ax.grid(alpha=0.3)
    if not points:
        ax.text(50, 50, "nothing to plot: no backbone has both accuracies", ha="center",
                va="center", fontsize=10)
        return
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False,
              title="hollow: base, filled: regularized,\narrow: base to regularized",
              title_fontsize=8, alignment="left")
