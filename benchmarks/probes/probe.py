"""The task command line every probe script shares: flags into a :class:`ProbeConfig`, the run
folder, the protocols of :mod:`benchmarks.probes.protocols` on the features of
:mod:`benchmarks.probes.features`,
``metrics.json`` and the leaderboard rows.

A script (``benchmarks/fairface.py``, ...) contributes a :class:`Task`: its name, attributes and how
to read a split. ``--protocol fixed`` runs the linear probe (per seed) and kNN (k=5, 200) on frozen
features; ``finetune`` fine-tunes the whole backbone with one head per attribute (light
augmentation: random crop with reflect padding + horizontal flip, no flip where the task says
its labels mirror, as Colorful-MNIST's digits do); ``--supervised-on A[,B]`` is
the RCL paper's "supervised on X" ceiling: the fine-tuning code trains a backbone from random init
(or ``--weights``) with heads for the named attributes only, then the linear probe measures every
attribute on it. The backbone comes from :func:`pretrain.open_backbone.open_backbone`.
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import io
import json
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from benchmarks.probes.features import (
    Features,
    cached_features,
    eval_transform,
    extract,
    native_image_size,
    train_transform,
)
from benchmarks.probes.protocols import (
    KNN_TEMPERATURE,
    FinetuneRecipe,
    LinearRecipe,
    accuracy,
    finetune,
    heads_predict,
    knn_predict,
    linear_predict,
)
from benchmarks.results import leaderboard
from benchmarks.results.gaps import gap_of
from benchmarks.results.predictions import prediction_key
from pretrain.checkpoint import save_backbone
from pretrain.cli import InputError, claim_output, keeping, number, one_line_errors, run_main
from pretrain.files import atomic_write, git_commit
from pretrain.open_backbone import (
    RANDOM,
    Backbone,
    add_backbone_arguments,
    is_random,
    open_backbone,
)

# Default fine-tuning length: on the CPU a quarter epoch (the embedded default in a few minutes
# with the ImageNet stem), on a GPU a real schedule.
FINETUNE_EPOCHS = {"cpu": 0.25, "cuda": 30.0}

log = logging.getLogger("benchmarks")


class ProbeError(InputError):
    """Bad input to a benchmark (flag or data); the message names it and the fix."""


def backbone_fields(backbone: Backbone) -> dict[str, Any]:
    """The leaderboard's backbone columns."""
    return leaderboard.backbone_fields(backbone.weights, backbone.meta)


# ----------------------------------------------------------------------------- the task runner
@dataclass(frozen=True)
class Task:
    """What a benchmark script contributes: its name, attributes and how to read a split."""

    name: str                                   # leaderboard task
    # attribute -> number of classes, or a function of the data root that returns it
    classes: dict[str, int] | Callable[[Path], dict[str, int]]
    load: Callable[[Path, str, Any], Dataset]   # (root, "train"|"test", transform) -> reader
    default_data: Callable[[], Path] | None     # embedded default root (None: --data required)
    description: str = ""
    protocols: tuple[str, ...] = ("fixed", "finetune")   # its --protocol choices
    supervised: bool = True                     # whether it offers --supervised-on
    hflip: bool = True                          # fine-tuning may flip images (False: digits)
    command: str = ""                           # its console script; default ssl-<name>


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass(frozen=True)
class ProbeConfig:
    """One benchmark run's settings: parsed from the command line, then resolved once by
    :func:`resolve` (data root, resolution, stem of the random-init control, workers, fine-tuning
    length); never changed after that. ``config.json`` in the run folder holds it."""

    weights: str | None = None
    prefix: str | None = None
    stride_in_1x1: bool | None = None
    arch: str | None = None
    stem: str | None = None
    init_seed: int = 0
    data: Path | None = None
    out: Path | None = None
    leaderboard: Path = leaderboard.DEFAULT_PATH
    protocol: str | None = None
    supervised_on: str | None = None
    trials: int = 1
    seed: int = 0
    epochs: float | None = None
    lr: float = FinetuneRecipe.lr
    linear_epochs: int = LinearRecipe.epochs
    image_size: int | None = None
    batch_size: int = 128
    workers: int | None = None
    cache_dir: Path | None = None
    device: str = "cpu"

    def to_json(self) -> dict[str, Any]:
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}


def parser(task: Task) -> argparse.ArgumentParser:
    """The flags every benchmark script shares (each sets a :class:`ProbeConfig` field)."""
    p = one_line_errors(argparse.ArgumentParser(
        prog=task.command or f"ssl-{task.name.replace('_', '-')}", description=task.description,
        formatter_class=argparse.RawDescriptionHelpFormatter))
    add_backbone_arguments(p, random_stem="'small' for images of 64 px or less, else "
                           "'imagenet'")
    p.add_argument("--data", type=Path, help="data root" + (
        "" if task.default_data is None else " (default: the embedded synthetic default)"))
    p.add_argument("--out", type=Path, help="output folder (default runs/benchmarks/"
                   f"{task.name}/<backbone>/<protocol>)")
    p.add_argument("--leaderboard", type=Path, default=ProbeConfig.leaderboard,
                   help=f"leaderboard CSV to add rows to (default {ProbeConfig.leaderboard})")
    if len(task.protocols) > 1:
        p.add_argument("--protocol", choices=task.protocols, help="fixed: frozen features, "
                       "linear probe and kNN (k=5, 200); finetune: whole backbone + heads "
                       "(default fixed)")
    if task.supervised:
        names = "class" if callable(task.classes) else ", ".join(task.classes)
        p.add_argument("--supervised-on", metavar="ATTR[,ATTR]",
                       help="train a backbone from --weights (default random init) supervised on "
                       f"these attributes of {names} ('all' for every one), then "
                       "linear-probe every attribute: the 'supervised on X' ceiling")
    p.add_argument("--trials", type=number(), default=ProbeConfig.trials, metavar="N",
                   help="probe repetitions with seeds S..S+N-1 (S: --seed), reported as "
                        "mean/std (default %(default)s)")
    p.add_argument("--seed", type=number(int, 0), default=ProbeConfig.seed, metavar="S",
                   help="the first trial's seed (the suite gives backbone of pretraining seed S "
                        "the probe seed S; default %(default)s)")
    if "finetune" in task.protocols or task.supervised:
        positive = number(float, 0, above=True)
        p.add_argument("--epochs", type=positive, help="fine-tuning epochs (fractions allowed; "
                       f"default {FINETUNE_EPOCHS['cpu']:g} on the CPU, a quick look sized "
                       f"for minutes; {FINETUNE_EPOCHS['cuda']:g} on a GPU)")
        p.add_argument("--lr", type=positive, default=ProbeConfig.lr, help="fine-tuning "
                       "learning rate (SGD, batch 64; default %(default)s)")
    p.add_argument("--linear-epochs", type=number(), default=ProbeConfig.linear_epochs,
                   help="linear-probe epochs (default %(default)s)")
    p.add_argument("--init-seed", type=int, default=ProbeConfig.init_seed,
                   help="seed of the random-init control")
    p.add_argument("--image-size", type=number(int, 8), help="resolution fed to the backbone "
                   "(default: the first train image's shorter side, at most 224)")
    p.add_argument("--batch-size", type=number(), default=ProbeConfig.batch_size,
                   help="extraction batch size")
    p.add_argument("--workers", type=number(int, 0), help="DataLoader workers (default 0 on "
                   "the CPU, 8 on a GPU)")
    p.add_argument("--cache-dir", type=Path, help="feature cache folder (default: cache/ in "
                   "the run folder --out; a folder of its own shares it between runs)")
    p.add_argument("--device", default=default_device(), help="cpu or cuda (default %(default)s)")
    return p


def parse_config(task: Task, argv: list[str] | None = None) -> ProbeConfig:
    """The command line of ``task``'s script as a :class:`ProbeConfig` (not yet resolved)."""
    return ProbeConfig(**vars(parser(task).parse_args(argv)))


def resolve(task: Task, cfg: ProbeConfig) -> tuple[Task, ProbeConfig]:
    """Check the config and fill what it leaves to the data and device; returns the task with
    its classes (read from the data for an ImageFolder) and the resolved config."""
    if cfg.trials < 1:
        raise ProbeError(f"--trials must be at least 1, got {cfg.trials}")
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise ProbeError(f"--device {cfg.device}: no CUDA device here; use --device cpu")
    data = cfg.data
    if data is None:
        if task.default_data is None:
            raise ProbeError(f"{task.name}: --data is required (no embedded default)")
        data = task.default_data()
    if not data.exists():
        raise ProbeError(f"--data {data}: no such folder")
    if callable(task.classes):
        task = replace(task, classes=task.classes(data))
    train = task.load(data, "train", None)  # both splits' files checked before any is written
    task.load(data, "test", None)
    image_size = cfg.image_size or native_image_size(train)
    stem = cfg.stem
    if is_random(cfg.weights or RANDOM) and stem is None:
        stem = "small" if image_size <= 64 else "imagenet"
    cpu = cfg.device == "cpu"
    return task, replace(
        cfg, data=data, image_size=image_size, stem=stem,
        workers=cfg.workers if cfg.workers is not None else (
            0 if cpu else min(8, os.cpu_count() or 1)),
        epochs=cfg.epochs if cfg.epochs is not None else FINETUNE_EPOCHS["cpu" if cpu else "cuda"])


PREDICTIONS_FILE = "predictions.npz"


@dataclass
class Predictions:
    """The per-example predictions of one run, saved as ``predictions.npz`` in its folder: predicted
    labels per (protocol, metric, seed), the true labels per metric, and ``test_set``, a hash of
    the test data's root and labels, so that two backbones scored on the same test set are paired
    example by example (benchmarks/results/stats.py)."""

    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    roots: set[str] = field(default_factory=set)

    def add(self, protocol: str, seed: int, predicted: dict[str, torch.Tensor],
            labels: dict[str, torch.Tensor], root: Path, metric: str = "{}_top1") -> None:
        """Record ``predicted`` (attribute -> labels) of ``protocol`` and ``seed``; the metric of
        an attribute is ``metric.format(attribute)``."""
        self.roots.add(str(Path(root).resolve()))
        for attr, p in predicted.items():
            name = metric.format(attr)
            self.arrays[prediction_key(protocol, name, seed)] = p.cpu().numpy().astype(np.int64)
            self.arrays[f"labels.{name}"] = labels[attr].cpu().numpy().astype(np.int64)

    def test_set(self) -> str:
        digest = hashlib.sha256("\n".join(sorted(self.roots)).encode())
        for name in sorted(k for k in self.arrays if k.startswith("labels.")):
            digest.update(name.encode() + self.arrays[name].tobytes())
        return digest.hexdigest()[:16]

    def save(self, path: Path) -> Path | None:
        if not self.arrays:
            return None
        buffer = io.BytesIO()
        np.savez_compressed(buffer, test_set=np.array(self.test_set()), **self.arrays)
        atomic_write(path, lambda f: f.write(buffer.getvalue()))
        return path


@dataclass(frozen=True)
class Run:
    """One benchmark run: its task, resolved config, backbone, output folder and timings."""

    task: Task
    cfg: ProbeConfig
    backbone: Backbone
    out: Path
    timings: dict[str, float]

    predictions: Predictions = field(default_factory=lambda: Predictions())

    @property
    def seeds(self) -> range:
        return range(self.cfg.seed, self.cfg.seed + self.cfg.trials)

    def load(self, split: str, transform: Any, **kwargs: Any) -> Dataset:
        return self.task.load(self.cfg.data, split, transform, **kwargs)

    def features(self, dataset: Dataset, desc: str, backbone: Backbone | None = None) -> Features:
        return cached_features(backbone or self.backbone, dataset,
                               self.cfg.cache_dir or self.out / "cache",
                               self.cfg.device, self.cfg.batch_size, self.cfg.workers, desc,
                               self.timings)


def _setup_logging(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    log.setLevel(logging.INFO)
    log.handlers.clear()
    for handler in (logging.StreamHandler(sys.stderr), logging.FileHandler(out / "log.txt")):
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        log.addHandler(handler)


def prepare(task: Task, argv: list[str] | None, protocol: str | None = None) -> Run:
    """Parse and resolve the command line, open the backbone, and make the output folder
    (config.json, log.txt) of one run; ``protocol``: the one the task runs, if it has one."""
    task, cfg = resolve(task, parse_config(task, argv))
    attrs = _supervised_attrs(task, cfg.supervised_on)
    if attrs and cfg.protocol:
        raise ProbeError("--supervised-on and --protocol exclude each other: --supervised-on "
                         "trains a backbone and then runs the fixed protocol on it")
    if not attrs and cfg.weights is None:
        raise ProbeError("--weights is required (a checkpoint, or 'random')")
    protocol = protocol or (f"supervised:{'+'.join(attrs)}" if attrs else
                            cfg.protocol or "fixed")
    backbone = open_backbone(cfg.weights or RANDOM, cfg.arch, cfg.stem, cfg.init_seed,
                             cfg.prefix, cfg.stride_in_1x1)
    name = backbone_fields(backbone)["backbone_id"]
    out = cfg.out or Path("runs/benchmarks") / task.name / name / protocol.replace(":", "_")
    claim_output(out, f"benchmarks/{task.name}.py {protocol}",
                 own=lambda folder: _earlier_run(folder, task.name, protocol))
    _setup_logging(out)
    atomic_write(out / "config.json", lambda f: f.write(json.dumps(
        {**cfg.to_json(), "task": task.name, "protocol": protocol}, indent=1).encode()))
    log.info(f"{task.name} / {protocol}: backbone {name} ({backbone.meta['arch']}, "
             f"{backbone.meta['stem']} stem) on {cfg.data} at {cfg.image_size} px, "
             f"device {cfg.device}; output {out}")
    return Run(task, cfg, backbone, out, {})


def _earlier_run(folder: Path, task: str, protocol: str) -> bool:
    """Whether ``folder`` holds a run of this task and protocol made before folders were marked
    (its config.json says so)."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and (config.get("task"), config.get("protocol")) == (
        task, protocol)


def summarize(per_seed: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, Any]]:
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


def run_identity(run: Run, protocol: str) -> dict[str, str]:
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
    from fvcore.nn import FlopCountAnalysis, parameter_count

    model = copy.deepcopy(model).cpu().eval()
    flops = FlopCountAnalysis(model, torch.zeros(1, 3, image_size, image_size))
    flops.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    with torch.no_grad():
        total = flops.total()
    return {"params": round(parameter_count(model)[""] / 1e6, 3),
            "gflops": round(total / 1e9, 4), "input_size": image_size}


def report(run: Run, per_seed: list[dict[str, dict[str, float]]],
           backbone: Backbone | None = None, extra: dict[str, Any] | None = None) -> dict:
    """Write ``<out>/metrics.json`` and one leaderboard row per (protocol, metric, seed)."""
    task, backbone = run.task, backbone or run.backbone
    fields = {**backbone_fields(backbone), **complexity(backbone.model, run.cfg.image_size)}
    results = summarize(per_seed)
    identity = {protocol: run_identity(run, protocol) for protocol in results}
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
        per_seed.append({"linear": {f"{a}_top1": v
                                    for a, v in accuracy(predicted, test.labels).items()}})
    for k, predicted in knn_predict(train, test.x, task.classes, device=cfg.device).items():
        if linear_as == "linear":
            run.predictions.add(f"knn{k}", seeds[0], predicted, test.labels, cfg.data)
        per_seed[0][f"knn{k}"] = {f"{a}_top1": v
                                  for a, v in accuracy(predicted, test.labels).items()}
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


def run_task(task: Task, argv: list[str] | None = None) -> dict:
    """The command line of a multi-attribute benchmark script (fairface, colorful_mnist, linear)."""
    run = prepare(task, argv)
    task, cfg = run.task, run.cfg
    attrs = _supervised_attrs(task, cfg.supervised_on)
    if attrs:
        return _supervised(run, attrs)
    if (cfg.protocol or "fixed") == "fixed":
        return report(run, _fixed(run, run.backbone, run.seeds))
    test = run.load("test", eval_transform(cfg.image_size))
    per_seed = []
    for seed in run.seeds:
        model, heads, recipe = _finetune_seed(run, task.classes, seed)
        feats, _ = extract(model, test, cfg.device, cfg.batch_size, cfg.workers,
                           f"{task.name}/test (fine-tuned)")
        predicted = heads_predict(heads.cpu(), feats.x)
        run.predictions.add("finetune", seed, predicted, feats.labels, cfg.data)
        per_seed.append({"finetune": {f"{a}_top1": v
                                      for a, v in accuracy(predicted, feats.labels).items()}})
    return report(run, per_seed, extra={"finetune_recipe": asdict(recipe)})


def _supervised(run: Run, attrs: list[str]) -> dict:
    """Train supervised on ``attrs`` per seed, save each backbone, linear-probe every attribute."""
    task, protocol = run.task, f"supervised:{'+'.join(attrs)}"
    per_seed, knn, saved = [], {}, []
    init = backbone_fields(run.backbone)["backbone_id"]
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

    return report(run, per_seed, backbone,
                  extra={"finetune_recipe": asdict(recipe), "supervised_backbones": saved,
                         "supervised_knn": knn})


def _supervised_attrs(task: Task, value: str | None) -> list[str]:
    if not value:
        return []
    attrs = list(task.classes) if value == "all" else [a.strip() for a in value.split(",")]
    unknown = [a for a in attrs if a not in task.classes]
    if unknown or not attrs:
        raise ProbeError(f"--supervised-on {value}: unknown attribute(s) {unknown}; choose "
                         f"among {', '.join(task.classes)} or 'all'")
    return attrs


def main(run: Callable[[list[str] | None], Any], argv: list[str] | None = None) -> int:
    """Run a benchmark's command line, turning bad input into a one-line error and exit 2."""
    return run_main(lambda: run(argv), statuses={leaderboard.LeaderboardError: 2})
