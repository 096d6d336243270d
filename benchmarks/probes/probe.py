"""The probe protocols' drivers, on a prepared :class:`~benchmarks.probes.run_folder.Run`.

``--protocol fixed`` runs the linear probe (per seed) and kNN (k=5, 200) on frozen features
(:mod:`benchmarks.probes.features`; a MetaMask backbone's kNN on its features times its mask, as
its paper scores it, the plain kNN as ``knnK_unmasked``; ``--feature-mask off`` for plain kNN
only); ``finetune`` fine-tunes the whole backbone with one head per
attribute (light augmentation: random crop with reflect padding + horizontal flip, no flip where
the task says its labels mirror, as Colorful-MNIST's digits do); ``--supervised-on A[,B]`` is the
RCL paper's "supervised on X" ceiling: the fine-tuning code trains a backbone from random init (or
``--weights``) with heads for the named attributes only, then the linear probe measures every
attribute on it. The protocols themselves are :mod:`benchmarks.probes.protocols`; the command line
:mod:`benchmarks.probes.config`; what a run writes :mod:`benchmarks.probes.rows`. The backbone
comes from :func:`pretrain.open_backbone.open_backbone`.
"""
from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import torch
from torch import nn

from benchmarks.probes.config import ProbeTask, supervised_attrs
from benchmarks.probes.features import eval_transform, extract, masked_features, train_transform
from benchmarks.probes.protocols import (
    FinetuneRecipe,
    LinearRecipe,
    accuracy,
    finetune,
    heads_predict,
    knn_predict,
    linear_predict,
)
from benchmarks.probes.rows import write_probe_results
from benchmarks.probes.run_folder import Run, backbone_columns, prepare
from pretrain.checkpoint import save_backbone
from pretrain.cli import run_main
from pretrain.files import git_commit
from pretrain.open_backbone import Backbone, open_backbone


def _top1(predicted: dict[str, torch.Tensor], labels: dict[str, torch.Tensor]
          ) -> dict[str, float]:
    """The ``<attribute>_top1`` metrics of ``predicted``."""
    return {f"{a}_top1": v for a, v in accuracy(predicted, labels).items()}


def _fixed(run: Run, backbone: Backbone, seeds: range, linear_as: str = "linear"
           ) -> list[dict[str, dict[str, float]]]:
    """Linear probe (per seed) and kNN (deterministic: reported under the first seed); their
    predictions go to ``run.predictions``, the linear probe's under ``linear_as`` (kNN's only when
    that is ``linear``: the rows they belong to)."""
    task, cfg = run.task, run.cfg
    train = run.features(run.load("train", eval_transform(cfg.image_size)),
                         f"{task.name}/train", backbone)
    test = run.features(run.load("test", eval_transform(cfg.image_size)),
                        f"{task.name}/test", backbone)
    recipe = LinearRecipe(epochs=cfg.linear_epochs)
    per_seed = []
    for seed in seeds:
        predicted = linear_predict(train, {"test": test}, task.classes, seed, recipe,
                                   cfg.device)["test"]
        run.predictions.add(linear_as, seed, predicted, test.labels, cfg.data)
        per_seed.append({"linear": _top1(predicted, test.labels)})
    masked = masked_features(train, backbone) if cfg.feature_mask == "on" else None
    knn_on = {"": (train, test)} if masked is None else \
        {"": (masked, masked_features(test, backbone)), "_unmasked": (train, test)}
    for suffix, (known, queries) in knn_on.items():
        for k, predicted in knn_predict(known, queries.x, task.classes,
                                        device=cfg.device).items():
            if linear_as == "linear":
                run.predictions.add(f"knn{k}{suffix}", seeds[0], predicted, test.labels,
                                    cfg.data)
            per_seed[0][f"knn{k}{suffix}"] = _top1(predicted, test.labels)
    return per_seed


def _finetune_seed(run: Run, classes: dict[str, int], seed: int
                   ) -> tuple[nn.Module, nn.ModuleDict, FinetuneRecipe]:
    """A fresh copy of the backbone fine-tuned with heads for ``classes``."""
    model = copy.deepcopy(run.backbone.model)
    recipe = FinetuneRecipe(epochs=run.cfg.epochs, lr=run.cfg.lr, hflip=run.task.hflip)
    data = run.load("train", train_transform(run.cfg.image_size, recipe.hflip))
    heads = finetune(model, data, classes, run.cfg.device, recipe, seed, run.cfg.workers,
                     tensorboard=run.out / "tb" / f"seed{seed}")
    return model, heads, recipe


def run_task(task: ProbeTask, argv: list[str] | None = None) -> dict:
    """The command line of a multi-attribute probe script (fairface, colorful_mnist, linear)."""
    run = prepare(task, argv)
    task, cfg = run.task, run.cfg
    attrs = supervised_attrs(task, cfg.supervised_on)
    if attrs:
        return _supervised(run, attrs)
    if (cfg.protocol or "fixed") == "fixed":
        return write_probe_results(run, _fixed(run, run.backbone, run.seeds))
    test = run.load("test", eval_transform(cfg.image_size))
    per_seed = []
    for seed in run.seeds:
        model, heads, recipe = _finetune_seed(run, task.classes, seed)
        feats, _ = extract(model, test, cfg.device, cfg.batch_size, cfg.workers,
                           f"{task.name}/test (fine-tuned)")
        predicted = heads_predict(heads.cpu(), feats.x)
        run.predictions.add("finetune", seed, predicted, feats.labels, cfg.data)
        per_seed.append({"finetune": _top1(predicted, feats.labels)})
    return write_probe_results(run, per_seed, extra={"finetune_recipe": asdict(recipe)})


def _supervised(run: Run, attrs: list[str]) -> dict:
    """Train supervised on ``attrs`` per seed, save each backbone, linear-probe every attribute."""
    task, protocol = run.task, f"supervised:{'+'.join(attrs)}"
    per_seed, knn, saved = [], {}, []
    init = backbone_columns(run.backbone)["backbone_id"]
    for seed in run.seeds:
        model, _, recipe = _finetune_seed(run, {a: task.classes[a] for a in attrs}, seed)
        path = run.out / f"seed{seed}" / "backbone.safetensors"
        saved.append(str(path))
        save_backbone(path, model.state_dict(), {
            "method": "supervised", "regularizer": "none", "arch": run.backbone.meta["arch"],
            "stem": run.backbone.meta["stem"], "data": f"{task.name}:{'+'.join(attrs)}",
            "stride_in_1x1": run.backbone.meta["stride_in_1x1"],
            "epochs": recipe.epochs, "seed": seed, "init": init, "commit": git_commit()})
        trained = open_backbone(path)
        result = _fixed(run, trained, range(seed, seed + 1), linear_as=protocol)[0]
        knn.update({f"seed{seed}/{p}": r for p, r in result.items() if p != "linear"})
        per_seed.append({protocol: result["linear"]})
    # One leaderboard identity for all seeds of this recipe, so the board aggregates them.
    backbone = Backbone(run.backbone.model, {
        "method": "supervised", "arch": run.backbone.meta["arch"],
        "stem": run.backbone.meta["stem"], "data": task.name,
        "backbone_id": f"supervised-{'+'.join(attrs)}-{run.backbone.meta['arch']}-"
                       f"{run.backbone.meta['stem']}"
                       + ("" if run.backbone.weights is None else f"-from-{init}")}, None, "")
    return write_probe_results(run, per_seed, backbone,
                               extra={"finetune_recipe": asdict(recipe),
                                      "supervised_backbones": saved, "supervised_knn": knn})


def main(run: Callable[[list[str] | None], Any], argv: list[str] | None = None) -> int:
    """Run a probe's command line, turning bad input (a leaderboard it cannot write included)
    into a one-line error and exit 2."""
    return run_main(lambda: run(argv))
