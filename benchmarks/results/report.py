"""The suite's report: ``report.md`` in the run folder, and its pictures.

- the leaderboard by budget (:func:`benchmarks.results.tables.budget_sections`): published
  numbers only beside ``full`` rows of the same task, protocol and recipe;
- the papers' claims with their intervals and verdicts (:mod:`benchmarks.results.claims`);
- the shortcut pictures (:mod:`benchmarks.results.pictures`), one figure per task with a shortcut
  gap;
- each backbone's parameters and FLOPs (fvcore, at the benchmark's input size), failures, timings.

Every cell of every table is escaped with :func:`benchmarks.results.leaderboard.markdown_text`.
"""
from __future__ import annotations

import time
from pathlib import Path

from benchmarks.results.claims import claims, claims_markdown
from benchmarks.results.leaderboard import markdown_table, read_rows
from benchmarks.results.pictures import shortcut_figure, shortcut_tasks
from benchmarks.results.speed_record import speed_markdown
from benchmarks.results.tables import budget_sections, name_of
from pretrain.files import atomic_write, git_commit


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
            *markdown_table(["backbone", "id", "task", "input (px)", "parameters (M)", "GFLOPs"],
                    [list(k) for k in seen]), ""]


def budget_notes(rows: list[dict[str, str]]) -> list[str]:
    """What a budget cannot show, said where its rows are read (figures: the README)."""
    inert_msr = any(r.get("budget") in ("cpu", "smoke") and r.get("regularizer") == "msr"
                    for r in rows)
    if not inert_msr:
        return []
    return ["## What this budget cannot show", "",
            "- MSR is inert at the cpu budget: after its 40 steps, lambda x L_msr's gradient on "
            "the backbone is 1.4-2.0% of BYOL's and nearly orthogonal to it (cosine 0.07-0.10), so "
            "a `+msr` backbone is its base within seed noise here "
            "(`python tools/msr_scale.py --run RUN`; README, What the embedded default shows).",
            ""]


def write(out: Path, records: list[dict]) -> Path:
    """``<out>/report.md`` (leaderboard by budget, claims, pictures, cost, failures, timings)
    and one ``shortcut_<task>.png`` per task with a shortcut gap."""
    csv = out / "leaderboard.csv"
    rows = read_rows(csv)[1] if csv.exists() else []
    lines = [f"# Suite report ({time.strftime('%Y-%m-%d %H:%M')}, commit {git_commit()})", ""]
    problems = [r for r in records if r["status"] != "done"]
    if problems:
        lines += ["## Stages that did not finish", ""]
        lines += markdown_table(["backbone", "stage", "status", "reason"],
                        [[r["backbone"], r["stage"], r["status"], r.get("reason", "")]
                         for r in problems]) + [""]
    lines += ["# Leaderboard", "", budget_sections(rows) if rows else "(no rows)", ""]
    lines += claims_markdown(claims(rows))
    for task in shortcut_tasks(rows):
        png = shortcut_figure(rows, out / f"shortcut_{task}.png", [task])
        lines += [f"![{task}: shortcut picture]({png.name})", ""]
    lines += budget_notes(rows)
    lines += cost_markdown(rows)
    lines += speed_markdown(out)
    total = sum(r.get("seconds", 0.0) for r in records)
    lines += [f"## Timings (total {total / 60:.1f} min of stage time)", ""]
    lines += markdown_table(["backbone", "stage", "status", "seconds"],
                    [[r["backbone"], r["stage"], r["status"], r.get("seconds", "")]
                     for r in records])
    path = out / "report.md"
    atomic_write(path, lambda f: f.write("\n".join(lines).encode()))
    return path
