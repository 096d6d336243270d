"""The leaderboard's tables: rows grouped by backbone recipe (pretraining seeds of one recipe are
one entry), each metric's mean with its interval, the shortcut gap, and the sections by budget with
the published numbers only beside ``full`` rows of the same task, protocol and recipe. Every cell
is escaped (:func:`benchmarks.results.leaderboard.markdown_text`).
"""
from __future__ import annotations

from typing import Any

from benchmarks.results.gaps import gap_of
from benchmarks.results.leaderboard import markdown_text, reference_rows
from benchmarks.results.predictions import load_correct
from benchmarks.results.stats import bootstrap_mean, t_interval


def name_of(row: dict[str, str]) -> str:
    """The name a row's backbone is shown by: the user's ``backbone_name`` when it has one, else
    ``method`` or ``method+regularizer`` (the panel's name of its recipe)."""
    if row.get("backbone_name"):
        return row["backbone_name"]
    regularizer = row.get("regularizer") or "none"
    return (row.get("method") or "?") + (f"+{regularizer}" if regularizer != "none" else "")


# A row's group in the tables: the backbone recipe (backbones that differ only in their recorded
# pretraining seed are one group, so a several-seed run shows one mean; a backbone without a
# recorded seed is its own group), its name, the task, protocol, recipe, budget and deviations.
GROUP = ("task", "backbone_name", "method", "regularizer", "arch", "pretrain_data",
         "pretrain_epochs", "protocol", "recipe", "budget", "deviations", "source")


def group_key(row: dict[str, str]) -> tuple[str, ...]:
    unseeded = "" if str(row.get("pretrain_seed", "")) else row["backbone_id"]
    return (unseeded, *(str(row.get(c, "") or ("none" if c == "regularizer" else ""))
                        for c in GROUP))


def value_interval(rows: list[dict[str, str]]) -> tuple[float, float | None, float | None, str]:
    """(mean, low, high, kind) of one metric's rows: a t-interval over pretraining seeds when there
    are several (the probe seeds of one pretraining seed are averaged first: they share a
    backbone), else the bootstrap interval over the test examples of the one row's predictions,
    else no interval."""
    seeds: dict[str, list[float]] = {}
    for r in rows:
        seeds.setdefault(str(r.get("pretrain_seed", "")) or r["backbone_id"], []).append(
            float(r["value"]))
    means = [sum(v) / len(v) for v in seeds.values()]
    if len(means) > 1:
        return (*t_interval(means), f"t over {len(means)} pretraining seeds")
    found = load_correct(rows[0])
    if found is None or len(rows) > 1:
        return means[0], None, None, ""
    _, low, high = bootstrap_mean(found[1])
    return means[0], low, high, "test set, one run"


def summarize(rows: list[dict[str, str]]) -> dict[str, list[dict[str, Any]]]:
    """Per task, one entry per group (:data:`GROUP`): metric -> (mean, low, high, kind) over seeds
    (:func:`value_interval`), plus the task's shortcut gap when its metrics are present."""
    groups: dict[tuple[str, ...], dict[str, list[dict[str, str]]]] = {}
    for row in rows:
        groups.setdefault(group_key(row), {}).setdefault(row["metric"], []).append(row)
    tasks: dict[str, list[dict[str, Any]]] = {}
    for metrics in groups.values():
        row = next(iter(metrics.values()))[0]
        ids = sorted({r["backbone_id"] for rs in metrics.values() for r in rs})
        stats = {m: value_interval(rs) for m, rs in metrics.items()}
        entry = {"backbone": _label(row, ids), "name": name_of(row), "backbone_ids": ids,
                 "method": row.get("method", ""), "regularizer": row.get("regularizer") or "none",
                 "backbone_name": row.get("backbone_name", ""), "protocol": row["protocol"],
                 "recipe": row.get("recipe", ""),
                 "budget": row.get("budget", ""), "deviations": row.get("deviations", ""),
                 "source": row["source"], "note": row.get("note", ""), "metrics": stats}
        gap = gap_of(row["task"])  # the task's shortcut gap (benchmarks/results/gaps.py)
        value = gap.of({m: s[0] for m, s in stats.items()}) if gap else None
        if value is not None:
            entry["gap"] = (gap.name, value)
        tasks.setdefault(row["task"], []).append(entry)
    for entries in tasks.values():
        entries.sort(key=lambda e: (e["source"] != "measured", e["protocol"], e["backbone"]))
    return tasks


def _label(row: dict[str, str], ids: list[str]) -> str:
    if row.get("source") != "measured":
        return name_of(row)
    return f"{name_of(row)} [{', '.join(ids)}]"


def markdown(rows: list[dict[str, str]]) -> str:
    """The tables of ``rows``, one per task, one column per metric (mean and 95% interval where
    one can be had), and the shortcut gap. The protocol cell names the recipe and deviations."""
    out = []
    for task, entries in sorted(summarize(rows).items()):
        metrics = sorted({m for e in entries for m in e["metrics"]})
        has_gap = any("gap" in e for e in entries)
        gap_column = [gap_of(task).name] if has_gap else []
        head = ["backbone", "protocol", *map(markdown_text, metrics), *gap_column, "source"]
        out += [f"### {markdown_text(task)}", "", "| " + " | ".join(head) + " |",
                "|" + "---|" * len(head)]
        for e in entries:
            protocol = " · ".join(x for x in (e["protocol"], e["recipe"], e["deviations"]) if x)
            cells = [markdown_text(e["backbone"]), markdown_text(protocol)]
            cells += [_fmt(e["metrics"].get(m)) for m in metrics]
            cells += [f"{e['gap'][1]:+.1f}" if "gap" in e else ""] if has_gap else []
            source = e["source"] + (f" ({e['note']})" if e["note"] else "")
            out.append("| " + " | ".join(cells + [markdown_text(source)]) + " |")
        out.append("")
    return "\n".join(out)


def _fmt(stat: tuple[float, float | None, float | None, str] | None) -> str:
    if stat is None:
        return ""
    mean, low, high, _ = stat
    return f"{mean:.1f}" if low is None else f"{mean:.1f} [{low:.1f}, {high:.1f}]"


BUDGET_ORDER = ("full", "cpu", "smoke", "custom", "unrecorded")
NOT_PUBLISHED = ("Published numbers do not apply to these rows: their recipe did not run "
                 "unchanged (see each row's deviations), so they show that the path works, not how "
                 "the backbones rank under a paper's protocol.")


def references_for(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """The published rows of the same task, protocol and recipe as measured ``full`` rows."""
    shown = {(r["task"], r["protocol"], r.get("recipe", "")) for r in rows
             if r["source"] == "measured" and r.get("budget") == "full"}
    return [r for r in reference_rows() if (r["task"], r["protocol"], r["recipe"]) in shown]


def budget_sections(rows: list[dict[str, str]], all_references: bool = False) -> str:
    """The measured rows by budget: ``full`` beside the published numbers of the same task,
    protocol and recipe; every other budget in its own section, saying published numbers do not
    apply; with ``all_references`` every published number in a last section."""
    measured = [r for r in rows if r["source"] == "measured"]
    budgets = sorted({r.get("budget", "") for r in measured},
                     key=lambda b: (BUDGET_ORDER.index(b) if b in BUDGET_ORDER else 99, b))
    out = []
    for budget in budgets:
        chunk = [r for r in measured if r.get("budget", "") == budget]
        if budget == "full":
            out += ["## Budget `full`: measured beside published numbers of the same task, "
                    "protocol and recipe", "", markdown(chunk + references_for(chunk))]
        else:
            out += [f"## Budget `{markdown_text(budget)}`: published numbers do not apply", "",
                    NOT_PUBLISHED, "", markdown(chunk)]
    if all_references:
        out += ["## Published numbers", "", markdown(reference_rows())]
    return "\n".join(out)
