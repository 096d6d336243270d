"""The papers' claims tested on the measured rows: each published ``method+regularizer`` versus
``method`` difference, its measured difference over pretraining seeds (or the test-set interval of
one run, labelled so), the report's family of claims adjusted for multiplicity, and the verdict by
size and sign (:mod:`benchmarks.results.stats`); and the markdown section that says all of it.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from benchmarks.results import stats
from benchmarks.results.gaps import gap_of
from benchmarks.results.leaderboard import markdown_table, reference_rows
from benchmarks.results.predictions import load_correct

# what makes two measured rows comparable: same test set, recipe and budget
CONDITION = ("task", "protocol", "metric", "recipe", "budget", "deviations")


def _measured_groups(rows: list[dict[str, str]]) -> dict[tuple, list[dict[str, str]]]:
    """Measured rows by (method, regularizer, *CONDITION)."""
    groups: dict[tuple, list[dict[str, str]]] = {}
    for r in rows:
        if r["source"] == "measured":
            key = (r["method"], r.get("regularizer") or "none", *(r.get(c, "") for c in CONDITION))
            groups.setdefault(key, []).append(r)
    return groups


def _pretraining_seeds(rows: list[dict[str, str]]) -> dict[str, list[dict[str, str]]]:
    """Rows by pretraining seed (a backbone with no recorded seed is its own); the probe seeds
    of one pretraining seed are averaged, never counted as seeds."""
    seeds: dict[str, list[dict[str, str]]] = {}
    for r in rows:
        seeds.setdefault(str(r.get("pretrain_seed", "")) or r["backbone_id"], []).append(r)
    return seeds


def _seed_correctness(rows: list[dict[str, str]]) -> tuple[str, Any] | None:
    """(test set, mean per-example correctness) over one pretraining seed's rows, or None when a
    row has no saved predictions."""
    found = [load_correct(r) for r in rows]
    if any(f is None for f in found) or len({f[0] for f in found}) != 1:
        return None
    return found[0][0], sum(f[1].astype(float) for f in found) / len(found)


def difference(a: list[dict[str, str]], b: list[dict[str, str]]) -> dict[str, Any]:
    """A measured difference between two groups of rows under one condition: ``diff`` (mean of
    A's pretraining seeds minus B's), ``seeds`` (per side), and either ``over_seeds``
    (:class:`benchmarks.results.stats.Difference`, each side with two seeds or more, the test set's
    variance folded in when every row saved predictions on one test set) or the test-set
    interval of one run per side (``low``, ``high``: paired bootstrap, None without
    predictions); ``interval`` says which."""
    seeds_a, seeds_b = _pretraining_seeds(a), _pretraining_seeds(b)
    means_a = [sum(float(r["value"]) for r in rs) / len(rs) for rs in seeds_a.values()]
    means_b = [sum(float(r["value"]) for r in rs) / len(rs) for rs in seeds_b.values()]
    found = {"diff": sum(means_a) / len(means_a) - sum(means_b) / len(means_b),
             "seeds": (sorted(seeds_a), sorted(seeds_b)), "over_seeds": None,
             "low": None, "high": None}
    if len(means_a) > 1 and len(means_b) > 1:
        correct_a = [_seed_correctness(rs) for rs in seeds_a.values()]
        correct_b = [_seed_correctness(rs) for rs in seeds_b.values()]
        sets = {c[0] if c else None for c in correct_a + correct_b}
        variance = 0.0
        how = (f"Welch t over pretraining seeds ({len(means_a)} and {len(means_b)}), "
               "test-set variance not included (no saved predictions on one test set)")
        if len(sets) == 1 and None not in sets:
            variance = stats.examples_variance(np.stack([c[1] for c in correct_a]),
                                               np.stack([c[1] for c in correct_b]))
            how = (f"Welch t over pretraining seeds ({len(means_a)} and {len(means_b)}) + "
                   f"test-set variance ({len(correct_a[0][1])} examples)")
        over = stats.seed_difference(means_a, means_b, variance)
        return {**found, "over_seeds": over, "interval": how}
    if len(means_a) + len(means_b) > 2:
        return {**found, "interval": f"none (pretraining seeds: {len(means_a)} and "
                                     f"{len(means_b)}; an interval over seeds needs two a side)"}
    for row_a in a:  # one run per side: pair the test examples of two rows of one probe seed
        for row_b in b:
            if row_a["seed"] != row_b["seed"]:
                continue
            found_a, found_b = load_correct(row_a), load_correct(row_b)
            if found_a and found_b and found_a[0] == found_b[0]:
                _, low, high = stats.paired_bootstrap(found_a[1], found_b[1])
                return {**found, "low": low, "high": high,
                        "interval": f"95% over {len(found_a[1])} test examples only (paired "
                                    "bootstrap, one pretraining run per side)"}
    return {**found, "interval": "none (one pretraining run per side, no paired predictions)"}


def claims(rows: list[dict[str, str]], q: float = 1 - stats.LEVEL) -> list[dict[str, Any]]:
    """Each published ``method+regularizer`` versus ``method`` difference (same source, task,
    protocol and metric) that the measured rows can test, once per measured condition (recipe,
    budget, deviations), with the measured difference, its interval and the verdict
    (:func:`benchmarks.results.stats.verdict`); and each measured pair no paper tests (``published``
    None), on the headline metrics (those of the published tables and the shortcut gaps).

    The family for multiplicity is the claims that can get a verdict (two pretraining seeds or
    more per side, a published difference outside its paper's noise): their intervals are drawn
    at the Benjamini-Hochberg false-coverage level of the family
    (:func:`benchmarks.results.stats.fcr_level` at rate ``q``); every other interval is a plain
    95% one.
    """
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
            found.append(_claim(method, regularizer, condition, group, base_group, ref, base))
    headline = {(r["task"], r["metric"]) for r in reference_rows()} | {
        (task, m) for task in {c[0] for _, _, *c in measured} if gap_of(task)
        for m in gap_of(task).plus + gap_of(task).minus}
    for (method, regularizer, *condition), group in sorted(measured.items()):
        base_group = measured.get((method, "none", *condition))
        if (regularizer != "none" and base_group and (method, regularizer, *condition) not in tested
                and (condition[0], condition[2]) in headline):
            found.append(_claim(method, regularizer, condition, group, base_group, None, None))
    _judge(found, q)
    return found


def _claim(method: str, regularizer: str, condition: list[str], group: list[dict[str, str]],
           base_group: list[dict[str, str]], ref: dict[str, str] | None,
           base: dict[str, str] | None) -> dict[str, Any]:
    claim = {"claim": f"{method}+{regularizer} vs {method}", **dict(zip(CONDITION, condition)),
             **difference(group, base_group), "published": None, "published_diff": None,
             "source": "", "published_recipe": "", "note": "", "noise": None,
             "noise_source": "", "level": stats.LEVEL, "family": False}
    claim["measured_diff"] = claim.pop("diff")
    if ref is None or base is None:
        return claim
    # the noisier of the two published numbers (reference.csv: noise, noise_source)
    noise, noise_source = max((float(r["noise"]), r["noise_source"]) for r in (ref, base))
    published = (float(ref["value"]), float(base["value"]))
    claim.update(published=published, published_diff=published[0] - published[1],
                 source=ref.get("source", ""), published_recipe=ref.get("recipe", ""),
                 note=ref.get("note", ""), noise=noise, noise_source=noise_source)
    claim["family"] = (claim["over_seeds"] is not None
                       and not stats.within_noise(claim["published_diff"], noise))
    return claim


def _judge(found: list[dict[str, Any]], q: float) -> None:
    """Draw each claim's interval (the family's at its adjusted level) and give its verdict."""
    family = [c for c in found if c["family"]]
    level, _ = stats.fcr_level([c["over_seeds"].p_value() for c in family], q)
    for c in found:
        if c["over_seeds"] is not None:
            c["level"] = level if c["family"] else stats.LEVEL
            c["low"], c["high"] = c["over_seeds"].interval(c["level"])
        if c["published"] is None:
            c["verdict"] = "no published claim"
            continue
        c["verdict"] = stats.verdict(
            c["published_diff"], c["low"], c["high"], noise=c["noise"],
            seeds=min(len(s) for s in c["seeds"]),
            published_recipe=c["budget"] == "full" and c["recipe"] == c["published_recipe"])


VERDICT_RULES = (
    "How a verdict is read, for a published difference d and the measured interval: "
    "`not testable` when |d| < 1.96 x sqrt(2) x the paper's run-to-run std of one number "
    "(reference.csv's noise column: a std the paper reports, else the suite default of 1 point "
    "of accuracy or AP per run, named as such): two single runs differ by that much one time in "
    "twenty when nothing differs; `one run` when a side has one pretraining run: "
    "its interval is over the test examples only and says nothing about another pretraining "
    "seed, so no verdict is given; `contradicted` when the interval over pretraining seeds "
    "excludes 0 on the other side; `reproduced` when it excludes 0 on d's side, the row ran the "
    "published recipe (budget `full`, same recipe) and d lies in the interval; `direction "
    "reproduced` when it excludes 0 on d's side otherwise; `inconclusive` else. On the `cpu` and "
    "`smoke` budgets every backbone is pretrained for tens of steps on synthetic data, so at most "
    "a direction can be reproduced there.")


def claims_markdown(found: list[dict[str, Any]]) -> list[str]:
    if not found:
        return []
    tested = [c for c in found if c["published"] is not None]
    lines = ["## The papers' claims, tested on this panel", "", VERDICT_RULES, ""]
    if tested:
        lines += [_family_line(tested), "", *_seed_lines(tested), "",
                  "Noise std of the published numbers: " + "; ".join(
                      f"{n:g} from {source}" for n, source in sorted(
                          {(c["noise"], c["noise_source"]) for c in tested})) + ".", ""]
        lines += markdown_table(
            ["claim", "task", "protocol", "metric", "budget", "recipe (published / measured)",
             "published", "published difference (noise std)", "pretraining seeds",
             "measured difference [interval]", "interval", "verdict", "source"],
            [[c["claim"], c["task"], c["protocol"], c["metric"], c["budget"],
              f"{c['published_recipe']} / {c['recipe']}",
              f"{c['published'][0]:.1f} vs {c['published'][1]:.1f}",
              f"{c['published_diff']:+.2f} ({c['noise']:g})",
              _seed_cell(c), _interval(c), _interval_kind(c), c["verdict"],
              c["source"] + (f" ({c['note']})" if c["note"] else "")] for c in tested]) + [""]
    untested = [c for c in found if c["published"] is None]
    if untested:
        lines += ["Pairs of the panel under a task, protocol or metric that no stored paper table "
                  "reports (RCL, for one, is published on MoCo v2 only: `mocov2+rcl`):", ""]
        lines += markdown_table(["pair", "task", "protocol", "metric", "budget", "recipe",
                         "pretraining seeds", "measured difference [interval]", "interval"],
                        [[c["claim"], c["task"], c["protocol"], c["metric"], c["budget"],
                          c["recipe"], _seed_cell(c), _interval(c), _interval_kind(c)]
                         for c in untested]) + [""]
    return lines


def _family_line(tested: list[dict[str, Any]]) -> str:
    family = [c for c in tested if c["family"]]
    if not family:
        return ("Multiplicity: no claim here has two pretraining seeds per side and a published "
                "difference outside its noise, so none gets a verdict and none is adjusted.")
    return (f"Multiplicity: the family is the {len(family)} claim(s) of this report with two "
            "pretraining seeds or more per side and a published difference outside its noise; "
            "Benjamini-Hochberg at a false discovery rate of 5% over that family, each of its "
            f"intervals drawn at {100 * family[0]['level']:.2f}% (false coverage rate, "
            "Benjamini and Yekutieli 2005). Every other interval is a plain 95% one.")


def _seed_lines(tested: list[dict[str, Any]]) -> list[str]:
    """Which claims have seeds and which do not, from the rows."""
    def where(c: dict[str, Any]) -> str:
        return f"{c['claim']} ({c['task']}, {c['protocol']}, budget {c['budget']})"

    over = sorted({where(c) for c in tested if c["over_seeds"] is not None})
    one = sorted({where(c) for c in tested if c["over_seeds"] is None})
    lines = []
    if over:
        lines.append("Judged over pretraining seeds (the rows record two or more `pretrain_seed`s "
                     f"per side): {', '.join(over)}.")
    if one:
        lines.append("One pretraining run per side in the rows, hence `one run` (the suite's "
                     f"`--seeds N` pretrains more): {', '.join(one)}.")
    return lines


def _seed_cell(c: dict[str, Any]) -> str:
    return " vs ".join(f"{len(s)} ({', '.join(s)})" for s in c["seeds"])


def _interval_kind(c: dict[str, Any]) -> str:
    if c["over_seeds"] is None:
        return c["interval"]
    return f"{100 * c['level']:.2f}%, {c['interval']}"


def _interval(c: dict[str, Any]) -> str:
    if c["low"] is None:
        return f"{c['measured_diff']:+.2f}"
    return f"{c['measured_diff']:+.2f} [{c['low']:+.2f}, {c['high']:+.2f}]"


# ----------------------------------------------------------------------------- the report
