"""The suite's plan: every stage of a run, from the parsed flags (the panel and its seeds, the
budgets, the data each stage reads, the random-init controls, the names of given checkpoints).
Every stage's command line is built here, and only here.
"""
from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from benchmarks.runner.markers import BOARD_NAME as BOARD
from benchmarks.runner.stages import ROOT, Stage
from benchmarks.runner.tasks import PRETRAIN_EPOCHS, suite_stages
from pretrain.cli import InputError
from pretrain.open_backbone import RANDOM, RANDOM_METHOD

# Each regularizer beside the base method its paper's claims use (RCL's contrastive branch is
# MoCo's training scheme, RCL Implementation); the first is also the path stages' backbone.
DEFAULT_PANEL = ("simclr", "simclr+metamask", "byol", "byol+msr", "barlow_twins",
                 "barlow_twins+mcr", "mocov2", "mocov2+rcl")

@dataclass(frozen=True)
class PlanConfig:
    """What the plan reads, built once from the parsed and checked flags, never changed."""

    panel: tuple[str, ...]                      # METHOD[+REGULARIZER] entries to pretrain
    tasks: tuple[str, ...]                      # suite stage names (benchmarks/runner/tasks.py)
    arch: str
    budget: str                                 # cpu | smoke | full
    gpus: int                                   # per stage
    data: Mapping[str, str]                     # every data set's root, given or embedded
    synthetic: frozenset[str]                   # the sets that are the embedded default
    checkpoint: tuple[tuple[str, str], ...] = ()  # (NAME, PATH) of backbones trained elsewhere
    checkpoint_archs: Mapping[str, str] | None = None  # {NAME: arch} of those readable
    seeds: int = 1                              # --seeds N
    seeded: tuple[str, ...] | None = None       # the entries --seeds applies to (None: all)
    seed_tasks: tuple[str, ...] | None = None   # the stages an extra seed runs (None: all)
    pretrain_per_task: bool = False
    pretrain_steps: int | None = None
    pretrain_save_every: int | None = None


# The main job judges one claim over pretraining seeds: RCL's (mocov2+rcl against mocov2, on
# Colorful-MNIST, where its shortcut is); the other pairs keep one seed. The extra seeds run only
# the Colorful-MNIST stages the claim is judged on.
DEFAULT_SEEDS = 3
DEFAULT_SEEDED = ["mocov2", "mocov2+rcl"]
SEED_TASKS = ["colorful_mnist_fixed", "colorful_mnist_finetune"]

# Pretraining's flags per budget (each task's own are in benchmarks/runner/tasks.py). "cpu" sizes
# every stage so that the main job (the default panel, its RCL pair over 3 seeds) takes at most 20
# minutes on 2 cores at 63 images/s, the slow machine of its kind (the cost model: 9.2 min at the
# reference speed, 17.5 at 63; its costs: runner/speed.py): every stage runs for real,
# but far too briefly for its numbers to rank backbones (see the README). Its pretraining extras,
# by method or regularizer: a 2048-d Barlow Twins projector (the paper's 8192-d one alone costs
# 3.9 s a step on 2 cores) and the bi-level regularizers' meta step every 4th step (each costs 3-4
# regular steps). "full" is each engine's own protocol (hours on GPUs).
PRETRAIN_BUDGETS = {
    "cpu": ["--steps", "40", "--batch-size", "32"],
    "smoke": ["--steps", "2", "--batch-size", "8"],
    "full": [],
}
PRETRAIN_EXTRAS = {
    "cpu": {"barlow_twins": ["--method-arg", "proj_hidden_dim=2048",
                             "--method-arg", "proj_dim=2048"],
            **{reg: ["--regularizer-arg", "meta_every=4"] for reg in ("msr", "mcr", "metamask")}},
}
PRETRAIN_ONLY = "imagefolder"  # a --data set only pretraining reads


def plan(args: PlanConfig, out: Path) -> list[Stage]:
    """Every stage of the run, in order: pretraining first, then each backbone's tasks."""
    data = args.data
    stages: list[Stage] = []
    weights: dict[str, dict[str | None, str]] = {}  # backbone -> {data set (None: all): file}
    seeds = seeds_of(args)
    seed_of = {_seeded(e, s): s for e, entry_seeds in seeds.items() for s in entry_seeds}
    # --pretrain-per-task: one backbone per data set the tasks read, as RCL pretrains
    sets = (list(dict.fromkeys(suite_stages()[name][0].data for name in args.tasks))
            if getattr(args, "pretrain_per_task", False) else [None])
    for entry, seed, key in [(e, s, k) for e in args.panel for s in seeds[e] for k in sets]:
        method, _, regularizer = entry.partition("+")
        name = _seeded(entry, seed)
        run = out / "pretrain" / (name.replace("+", "_") + (f"_{key}" if key else ""))
        weights.setdefault(name, {})[key] = str(run / "backbone.safetensors")
        argv = ["bash", str(ROOT / "tools" / "pretrain.sh"), "--method", method,
                "--regularizer", regularizer or "none", "--arch", args.arch, "--stem", "imagenet",
                "--out", str(run), *_gpus(args, "--gpus"),
                *PRETRAIN_BUDGETS[args.budget],
                *(["--seed", str(seed)] if len(seeds[entry]) > 1 else [])]
        extra = PRETRAIN_EXTRAS.get(args.budget, {})
        argv += [*extra.get(method, []), *extra.get(regularizer, [])]
        if key and args.budget == "full" and key in PRETRAIN_EPOCHS:
            argv += ["--epochs", str(PRETRAIN_EPOCHS[key])]
        if args.pretrain_steps:
            argv += ["--steps", str(args.pretrain_steps)]  # the last --steps wins
        if getattr(args, "pretrain_save_every", None):
            argv += ["--save-every", str(args.pretrain_save_every)]
        source = pretrain_source(key, data)
        if source:
            argv += ["--data", f"{source}={data[source]}"]
        stages.append(Stage(name, f"pretrain_{key}" if key else "pretrain", argv,
                            outputs=[weights[name][key]], gpus=args.gpus, folder=str(run),
                            resumable=True, rows=False))
    controls = control_archs(args)
    weights.update({_seeded(control, seed): {None: RANDOM} for control in controls
                    for seed in seeds[RANDOM_METHOD]})
    seed_of.update({_seeded(control, s): s for control in controls for s in seeds[RANDOM_METHOD]})
    weights.update({name: {None: path} for name, path in args.checkpoint})
    named = dict(args.checkpoint)
    # a path check below the full budget runs on one backbone: the first pretrained (its
    # conversion is on the path), else the control
    path_backbone = next((b for b, paths in weights.items() if RANDOM not in paths.values()),
                         next(iter(controls)))

    for backbone, paths in weights.items():
        seed = seed_of.get(backbone, 0)
        entry = backbone.rpartition(".seed")[0] if ".seed" in backbone else backbone
        for name, (task, protocol) in suite_stages().items():
            if name not in args.tasks or (protocol in task.path_checks and args.budget != "full"
                                          and backbone != path_backbone):
                continue
            if seed > 0 and getattr(args, "seed_tasks", None) and name not in args.seed_tasks:
                continue  # an extra seed runs only the tasks its claim is judged on
            path = paths.get(task.data, paths.get(None))
            # the random-init control: the same one in every stage (pretrain/open_backbone.py)
            chosen = (["--weights", RANDOM, "--arch", controls.get(entry, args.arch), "--stem",
                       "imagenet"] if path == RANDOM else ["--weights", path])
            entry_seeds = seeds[RANDOM_METHOD] if entry in controls else seeds.get(entry, ())
            if backbone in named:  # every stage's backbone flags take it
                chosen += ["--backbone-name", backbone]
            folder = out / name / backbone
            argv = [sys.executable, "-m", task.module,
                    *_gpus(args, task.gpus_flag),
                    *task.protocol_flags(protocol),
                    *(task.synthetic_flags if task.data in args.synthetic else ()),
                    *chosen, "--out", str(folder), "--leaderboard", str(folder / BOARD),
                    "--data", str(data[task.data]),
                    *(_seed_flags(task.module, seed) if len(entry_seeds) > 1 else []),
                    *task.budget_flags(args.budget, protocol)]
            stages.append(Stage(backbone, name, argv, needs=None if path == RANDOM else path,
                                gpus=args.gpus if task.gpus_flag else 1, folder=str(folder)))
    return stages


def seeds_of(args: PlanConfig) -> dict[str, range]:
    """The pretraining seeds of each panel entry and of the random-init control: 0..N-1
    (``--seeds N``) for the entries of ``--seeded`` (default: all of them), seed 0 for the
    others."""
    count = getattr(args, "seeds", 1) or 1
    seeded = getattr(args, "seeded", None)
    return {entry: range(count if seeded is None or entry in seeded else 1)
            for entry in (*args.panel, RANDOM_METHOD)}


def control_archs(args: PlanConfig) -> dict[str, str]:
    """{control name: arch}: one random-init control per arch compared, that of the panel
    (``--arch``) named ``random-init``, any other arch of a ``--checkpoint`` ``random-init.ARCH``
    (a checkpoint whose arch cannot be read compares with the panel's)."""
    archs = ([args.arch] if args.panel else []) + list((getattr(args, "checkpoint_archs", None)
                                                        or {}).values())
    archs = list(dict.fromkeys(archs or [args.arch]))
    return {RANDOM_METHOD if arch == args.arch else f"{RANDOM_METHOD}.{arch}": arch
            for arch in archs}



def checkpoint_archs(named: list[tuple[str, str]]) -> dict[str, str]:
    """{name: arch} of the ``--checkpoint`` files whose ResNet can be read (one that cannot
    fails in its own stages)."""
    from pretrain.foreign import read_source

    archs = {}
    for name, path in named:
        try:
            archs[name] = read_source(path).meta["arch"]
        except (InputError, OSError, ValueError):
            continue
    return archs


def pretrain_source(key: str | None, data: dict[str, str]) -> str | None:
    """The data set a pretraining stage reads: its task's set (``--pretrain-per-task``), else
    ``--data imagefolder=ROOT`` when given, else Colorful-MNIST (the embedded default unless
    ``--data colorful_mnist=ROOT``)."""
    if key:
        return key
    return next((name for name in (PRETRAIN_ONLY, "colorful_mnist") if name in data), None)


def _seeded(name: str, seed: int) -> str:
    """The panel name of ``name`` pretrained (or initialised) with ``seed`` (--seeds)."""
    return name if seed == 0 else f"{name}.seed{seed}"


def _seed_flags(module: str, seed: int) -> list[str]:
    """A stage's seed: the probe's first trial seed and random-init seed of a probe, the run's
    seed (which seeds the random-init control too) of an engine."""
    if module.startswith("benchmarks."):
        return ["--seed", str(seed), "--init-seed", str(seed)]
    return ["--seed", str(seed)]


def _gpus(args: PlanConfig, flag: str) -> list[str]:
    return [flag, str(args.gpus)] if flag and args.gpus > 1 else []
