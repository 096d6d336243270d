"""What a probe run writes: ``metrics.json`` (mean and std over seeds) and one leaderboard row per
(protocol, metric, seed), each with its row identity (recipe, budget, deviations) and the
backbone's columns and cost."""
from __future__ import annotations

import copy
import json
import logging
from typing import Any

import torch
from torch import nn

from benchmarks.probes.config import FINETUNE_EPOCHS
from benchmarks.probes.example_predictions import PREDICTIONS_FILE
from benchmarks.probes.features import native_image_size
from benchmarks.probes.protocols import KNN_TEMPERATURE, LinearRecipe
from benchmarks.probes.run_folder import Run, backbone_columns
from benchmarks.results import leaderboard
from benchmarks.results.gaps import gap_of
from pretrain.cli import keeping
from pretrain.files import atomic_write, git_commit
from pretrain.open_backbone import Backbone

log = logging.getLogger("benchmarks")


def probe_summary(per_seed: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, Any]]:
    """[{protocol: {metric: value}}] per seed -> {protocol: {metric: {mean, std, values}}}."""
    out: dict[str, dict[str, Any]] = {}
    for result in per_seed:
        for protocol, metrics in result.items():
            for metric, value in metrics.items():
                out.setdefault(protocol, {}).setdefault(metric, {"values": []})["values"].append(
                    round(value, 4))
    for metrics in out.values():
        for stat in metrics.values():
            values = torch.tensor(stat["values"], dtype=torch.float64)
            stat["mean"] = round(values.mean().item(), 4)
            stat["std"] = round(values.std().item(), 4) if len(values) > 1 else 0.0
            stat["n"] = len(values)
    return out


# The suite's probe recipes by name (benchmarks/probes/protocols.py): a row is on budget "full"
# when one of them ran unchanged on real data.
def probe_recipe(protocol: str) -> str:
    """The name of the recipe behind a row's protocol (linear, knn5, finetune, supervised:X)."""
    if protocol.startswith("knn"):
        return f"{protocol}-T{KNN_TEMPERATURE:g}"
    if protocol == "linear":
        return f"linear-adamw-{LinearRecipe.epochs}e"
    fine = f"finetune-sgd-{FINETUNE_EPOCHS['cuda']:g}e"
    linear = probe_recipe("linear")
    return fine if protocol == "finetune" else f"supervised-{fine}+{linear}"


def probe_row_identity(run: Run, protocol: str) -> dict[str, str]:
    """The recipe, budget and deviations of one protocol's rows
    (:func:`benchmarks.results.leaderboard.run_identity`)."""
    cfg = run.cfg
    trains = protocol == "finetune" or protocol.startswith("supervised:")
    probes = protocol == "linear" or protocol.startswith("supervised:")
    native = native_image_size(run.load("train", None))
    return leaderboard.run_identity(probe_recipe(protocol), {
        "data": "synthetic" if leaderboard.embedded_data(cfg.data) else None,
        "image_size": cfg.image_size if cfg.image_size != native else None,
        "epochs": cfg.epochs if trains and cfg.epochs != FINETUNE_EPOCHS["cuda"] else None,
        "linear_epochs": (cfg.linear_epochs if probes and cfg.linear_epochs != LinearRecipe.epochs
                          else None)})


def complexity(model: nn.Module, image_size: int) -> dict[str, Any]:
    """Parameters (millions) and forward GFLOPs of one ``image_size`` px image, as fvcore counts
    them (``FlopCountAnalysis``: one flop per fused multiply-add; a torchvision ResNet-50 without
    its classifier counts 4.11 GFLOPs at 224 px and 23.5 M parameters)."""
    # here: fvcore.nn takes seconds to import, and only a run that writes rows needs it
    from fvcore.nn import FlopCountAnalysis, parameter_count

    model = copy.deepcopy(model).cpu().eval()
    flops = FlopCountAnalysis(model, torch.zeros(1, 3, image_size, image_size))
    flops.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    with torch.no_grad():
        total = flops.total()
    return {"params": round(parameter_count(model)[""] / 1e6, 3),
            "gflops": round(total / 1e9, 4), "input_size": image_size}


def write_probe_results(run: Run, per_seed: list[dict[str, dict[str, float]]],
                        backbone: Backbone | None = None, extra: dict[str, Any] | None = None
                        ) -> dict:
    """Write ``<out>/metrics.json`` and one leaderboard row per (protocol, metric, seed);
    ``backbone``: the one measured when it is not the run's own (a supervised backbone, which
    does not carry the run's ``--backbone-name``)."""
    task = run.task
    name = run.cfg.backbone_name if backbone is None else None
    backbone = backbone or run.backbone
    fields = {**backbone_columns(backbone, name),
              **complexity(backbone.model, run.cfg.image_size)}
    results = probe_summary(per_seed)
    identity = {protocol: probe_row_identity(run, protocol) for protocol in results}
    saved = run.predictions.save(run.out / PREDICTIONS_FILE)
    rows = [{**fields, "task": task.name, "protocol": protocol, **identity[protocol],
             "metric": metric, "value": value, "seed": seed,
             "predictions": str(saved.resolve()) if saved else ""}
            for seed, result in zip(run.seeds, per_seed)
            for protocol, metrics in result.items() for metric, value in metrics.items()]
    gaps: dict[str, Any] = {}
    gap = gap_of(task.name)
    if gap is not None:
        gaps = {protocol: round(value, 4) for protocol, stats in results.items()
                if (value := gap.of({m: s["mean"] for m, s in stats.items()})) is not None}
        gaps = {"definition": gap.name, **gaps} if gaps else {}
    metrics = {"task": task.name, "backbone": {**fields, "weights": backbone.origin,
                                               "stem": backbone.meta["stem"]},
               "data": str(run.cfg.data), "image_size": run.cfg.image_size,
               "seeds": list(run.seeds), "results": results, "gap": gaps,
               "extraction_images_per_s": run.timings, "config": run.cfg.to_json(),
               "commit": git_commit(), **(extra or {})}
    atomic_write(run.out / "metrics.json",
                 lambda f: f.write(json.dumps(metrics, indent=1).encode()))
    with keeping(run.out / "metrics.json"):
        leaderboard.write_rows(run.cfg.leaderboard, rows)
    for protocol, stats in results.items():
        shown = ", ".join(f"{m} {s['mean']:.2f}" + (f" ± {s['std']:.2f}" if len(per_seed) > 1
                                                     else "") for m, s in stats.items())
        log.info(f"{protocol}: {shown}")
    log.info(f"wrote {run.out / 'metrics.json'} and {len(rows)} rows to {run.cfg.leaderboard}")
    return metrics
