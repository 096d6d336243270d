"""The pretraining stage's one typed config: defaults < ``--config FILE.yaml`` < command-line flags.

Every field is a flag (``batch_size`` -> ``--batch-size``); ``--help`` lists them all with their
meaning. Fields left at ``None`` are resolved by :func:`resolve` from the data set, the method's
paper defaults and the device, and the resolved config is what the run folder's ``config.yaml``
holds (so a run can be repeated exactly from it).
"""
from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pretrain.backbones import ARCHS, STEMS
from pretrain.bounded_yaml import load_bounded_yaml
from pretrain.cli import MAX_IMAGE_SIZE, InputError, number
from pretrain.methods import METHODS


class ConfigError(InputError):
    """A bad flag or config file; the message names it and says how to fix it."""


def _opt(default: Any, help: str, type: Any = None, choices: tuple | None = None) -> Any:
    meta = {"help": help, "type": type or (type_of(default)), "choices": choices}
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type_of(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def type_of(value: Any) -> Any:
    return type(value) if value is not None else str


OPTIMIZERS = ("sgd", "lars", "adam")
AUGMENT_ON = ("device", "device-compiled", "cpu")


@dataclass
class PretrainConfig:
    method: str = _opt("simclr", "base SSL method", choices=tuple(METHODS))
    regularizer: str = _opt("none", "regularizer composed with the method (pretrain/regularizers/)")
    data: str = _opt("colorful_mnist", "pretraining data set name (colorful_mnist, fairface, coco, "
                     "mpii, imagefolder); on the command line --data NAME=PATH or --data NAME")
    data_root: str | None = _opt(None, "folder of the data set; unset = the embedded synthetic "
                                 "default (generated on first use)", type=str)
    arch: str = _opt("resnet18", "torchvision backbone", choices=ARCHS)
    stem: str | None = _opt(None, "'small' (3x3 stride-1 conv, no max-pool; for 32-64 px data) or "
                            "'imagenet' (default; the stem detectron2 and mmpose take)", type=str,
                            choices=STEMS)
    image_size: int | None = _opt(None, "training resolution; unset = the data set's preset "
                                  "(colorful_mnist 64, others 224)", type=int)
    epochs: float | None = _opt(None, "training length in epochs (unset and no --steps: 100)",
                                type=float)
    steps: int | None = _opt(None, "training length in optimizer steps (overrides --epochs)",
                             type=int)
    batch_size: int | None = _opt(None, "GLOBAL batch size (split over DDP ranks); unset = 256 on "
                                  "GPU, 32 on CPU", type=int)
    optimizer: str | None = _opt(None, "sgd, lars or adam; unset = the method's paper choice",
                                 type=str, choices=OPTIMIZERS)
    lr: float | None = _opt(None, "base learning rate per 256 images (scaled linearly with the "
                            "batch size); unset = the method's paper value", type=float)
    weight_decay: float | None = _opt(None, "unset = the method's paper value", type=float)
    momentum: float = _opt(0.9, "SGD/LARS momentum")
    warmup_epochs: float | None = _opt(None, "linear warm-up length in epochs, capped at a tenth "
                                       "of the run; unset = the method's paper value", type=float)
    method_args: dict = _opt({}, "method hyperparameters, e.g. temperature, proj_dim, queue_size "
                             "(see pretrain/methods/); on the command line --method-arg K=V")
    regularizer_args: dict = _opt({}, "regularizer options; on the command line "
                                  "--regularizer-arg K=V")
    seed: int = _opt(0, "seed for initialisation, sampling and augmentation")
    device: str = _opt("auto", "auto (cuda when available), cpu or cuda")
    amp: bool = _opt(True, "bf16 autocast and channels_last on CUDA (no effect on CPU)")
    sync_bn: bool = _opt(False, "the method's BatchNorm over the global batch under DDP "
                         "(SyncBatchNorm on CUDA, else pretrain.global_norm's)")
    workers: int | None = _opt(None, "DataLoader workers; unset = 0 on CPU, 8 per GPU", type=int)
    augment_on: str = _opt("device", "device: the workers decode and crop, the training device "
                           "applies flip, jitter, grayscale, blur to the batch (JPEGs decoded on "
                           "a GPU); device-compiled: the same, fused by torch.compile; cpu: the "
                           "per-image PIL pipeline in the workers", choices=AUGMENT_ON)
    out: str | None = _opt(None, "the run folder; unset = runs/pretrain/<name>", type=str)
    name: str | None = _opt(None, "run name under runs/pretrain when --out is unset; unset = "
                            "method[-regularizer]-data-arch-time", type=str)
    save_every: int = _opt(500, "write last_state.pt every N steps (and at the end)")
    log_every: int = _opt(10, "log and TensorBoard scalars every N steps")


def _parse_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def _parse_value(text: str) -> Any:
    """``K=V`` values: YAML scalars (so 0.1 is a float, 4096 an int, true a bool)."""
    return yaml.safe_load(text)


def key_value(text: str) -> tuple[str, Any]:
    """``K=V`` from the command line as (K, YAML scalar of V)."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    return key.strip(), _parse_value(value)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ssl-pretrain",
        description="Pretrain a ResNet backbone with a self-supervised method (+ regularizer). "
        "Writes the run folder --out: config.yaml, log.txt, tb/, last_state.pt, "
        "backbone.safetensors, metrics.json. Without --data: the embedded synthetic "
        "Colorful-MNIST at 64 px, ImageNet stem.",
        argument_default=argparse.SUPPRESS)
    parser.add_argument("--config", metavar="FILE.yaml",
                        help="load settings from a YAML file (flags given here override it)")
    parser.add_argument("--gpus", type=number(), metavar="N",
                        help="processes on this machine, one per GPU: with N > 1 the run starts "
                        "itself under torchrun (several machines: tools/pretrain.sh --nnodes)")
    parser.add_argument("--resume", metavar="RUN_DIR",
                        help="continue the run in RUN_DIR (or from a last_state.pt) exactly where "
                        "it stopped; its config.yaml is used, flags given here override it")
    for f in dataclasses.fields(PretrainConfig):
        flag = "--" + f.name.replace("_", "-")
        meta = f.metadata
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        help_text = f"{meta['help']} (default: {default})"
        if f.name == "data":
            parser.add_argument(flag, metavar="NAME[=PATH]", help=help_text)
        elif f.name in ("method_args", "regularizer_args"):
            parser.add_argument(flag.replace("-args", "-arg"), dest=f.name, metavar="K=V",
                                action="append", type=key_value, help=help_text)
        elif meta["type"] is bool:
            parser.add_argument(flag, type=_parse_bool, metavar="true|false", help=help_text)
        else:
            parser.add_argument(flag, type=meta["type"], choices=meta["choices"], help=help_text)
    return parser


def _coerce(name: str, value: Any, source: str) -> Any:
    """Check a YAML value against the field's type (ints are accepted for floats)."""
    f = {f.name: f for f in dataclasses.fields(PretrainConfig)}[name]
    want = f.metadata["type"]
    if value is None:
        return None
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, want) or (want is int and isinstance(value, bool)):
        raise ConfigError(f"{source}: '{name}' must be {want.__name__}, got {value!r}")
    choices = f.metadata["choices"]
    if choices and value not in choices:
        raise ConfigError(f"{source}: '{name}' must be one of {', '.join(choices)}, got {value!r}")
    return value


def from_dict(values: dict[str, Any], source: str, base: PretrainConfig | None = None
              ) -> PretrainConfig:
    """``base`` (or the defaults) updated with ``values``; unknown keys are an error."""
    known = {f.name for f in dataclasses.fields(PretrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{source}: unknown setting(s) {', '.join(unknown)}; known: "
                          f"{', '.join(sorted(known))}")
    updates = {k: _coerce(k, v, source) for k, v in values.items()}
    return dataclasses.replace(base or PretrainConfig(), **updates)


def load_yaml(path: str | Path, base: PretrainConfig | None = None) -> PretrainConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        values = load_bounded_yaml(path) or {}  # a YAML bomb is refused, not expanded
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(err).split())})") from err
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of settings, got {type(values).__name__}")
    return from_dict(values, str(path), base)


def save_yaml(cfg: PretrainConfig, path: str | Path) -> None:
    from pretrain.files import atomic_write

    text = yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False)
    atomic_write(path, lambda f: f.write(text.encode()))


# What ``--resume`` may change: the run's length, logging, checkpoint interval and where it runs.
# Every other field defines the run (model shapes, data stream, augmentation, schedule, seed), so
# changing it would continue a different run from this one's state: it is refused before anything
# is written. A new length re-scales the cosine schedule over the new total from the step reached.
RESUME_MAY_CHANGE = ("steps", "epochs", "save_every", "log_every", "workers", "device", "amp")


def parse_args(argv: list[str] | None = None) -> tuple[PretrainConfig, str | None]:
    """(config, resume path or None) from the command line (and ``--config`` / the resumed run)."""
    args = vars(build_parser().parse_args(argv))
    resume = args.pop("resume", None)
    args.pop("gpus", None)  # the launcher's (pretrain/train.py main), not the run's
    config_file = args.pop("config", None)
    cfg = saved = PretrainConfig()
    if resume is not None:
        run_dir = Path(resume) if Path(resume).is_dir() else Path(resume).parent
        cfg = saved = load_yaml(run_dir / "config.yaml")
    if config_file is not None:
        cfg = load_yaml(config_file, cfg)
    if "data" in args:
        name, _, root = args.pop("data").partition("=")
        args["data"], args["data_root"] = name, (root or None)
    for key in ("method_args", "regularizer_args"):
        if key in args:
            args[key] = {**getattr(cfg, key), **dict(args[key])}
    if resume is not None and "epochs" in args and "steps" not in args:
        args["steps"] = None  # a new length in epochs replaces the saved one in steps
    cfg = dataclasses.replace(cfg, **args)
    if resume is not None:
        check_resume(saved, cfg, resume)
    return cfg, resume


def flag_of(name: str) -> str:
    """The command-line flag that sets a config field."""
    return {"data_root": "--data", "method_args": "--method-arg",
            "regularizer_args": "--regularizer-arg"}.get(name, "--" + name.replace("_", "-"))


def check_resume(saved: PretrainConfig, requested: PretrainConfig, resume: str) -> None:
    """Refuse settings that would make ``--resume`` continue a different run."""
    changed = [f"{flag_of(f.name)} {getattr(requested, f.name)!r} (the run has "
               f"{getattr(saved, f.name)!r})" for f in dataclasses.fields(PretrainConfig)
               if f.name not in RESUME_MAY_CHANGE
               and getattr(requested, f.name) != getattr(saved, f.name)]
    if changed:
        allowed = ", ".join(flag_of(name) for name in RESUME_MAY_CHANGE)
        raise ConfigError(f"--resume {resume}: {'; '.join(changed)} would change what the run "
                          f"is; resume without them (only {allowed} may change) or start a new "
                          "run with --name")


DATA_IMAGE_SIZE = {"colorful_mnist": 64}
DEFAULT_IMAGE_SIZE = 224
DEFAULT_EPOCHS = 100.0  # with neither --epochs nor --steps
# CPU: ResNet-18 at 64 px runs about 40 views/s on two cores, so a batch of 32 keeps the 50-step
# smoke run (tools/pretrain.sh --steps 50) near a minute.
DEFAULT_BATCH = {"cuda": 256, "cpu": 32}


def resolve(cfg: PretrainConfig, device: str, method_defaults: dict[str, Any]) -> PretrainConfig:
    """Fill every ``None`` field from the data set, the method's paper defaults and the device."""
    check_numbers(cfg)  # before the defaults below, which would replace a 0 given by the user
    cuda = device.startswith("cuda")
    image_size = cfg.image_size or DATA_IMAGE_SIZE.get(cfg.data, DEFAULT_IMAGE_SIZE)
    resolved = dataclasses.replace(
        cfg,
        image_size=image_size,
        # The ImageNet stem by default, also at 64 px: detectron2 and mmpose can only take that
        # stem, and on a CPU it runs about 6x faster than the small stem (33-45 vs 6 views/s).
        stem=cfg.stem or "imagenet",
        epochs=(cfg.epochs if cfg.epochs is not None or cfg.steps is not None
                else DEFAULT_EPOCHS),
        batch_size=cfg.batch_size or DEFAULT_BATCH["cuda" if cuda else "cpu"],
        optimizer=cfg.optimizer or method_defaults["optimizer"],
        lr=cfg.lr if cfg.lr is not None else method_defaults["lr"],
        weight_decay=(cfg.weight_decay if cfg.weight_decay is not None
                      else method_defaults["weight_decay"]),
        warmup_epochs=(cfg.warmup_epochs if cfg.warmup_epochs is not None
                       else method_defaults["warmup_epochs"]),
        workers=cfg.workers if cfg.workers is not None else (8 if cuda else 0),
        device=device,
    )
    check_numbers(resolved)
    return resolved


# (field, smallest allowed value, whether that value itself is allowed). Every value must also be
# finite in float32, the precision the optimizer computes in (torch.finfo(torch.float32).max).
FLOAT32_MAX = 3.4028234663852886e38
NUMBER_RANGES = (("lr", 0.0, False), ("weight_decay", 0.0, True), ("momentum", 0.0, True),
                 ("warmup_epochs", 0.0, True), ("epochs", 0.0, False), ("steps", 1, True),
                 ("batch_size", 2, True), ("image_size", 8, True), ("workers", 0, True),
                 ("save_every", 1, True), ("log_every", 1, True))


def check_numbers(cfg: PretrainConfig) -> None:
    """Refuse non-finite or out-of-range numeric settings, naming the flag."""
    for name, low, inclusive in NUMBER_RANGES:
        value = getattr(cfg, name)
        if value is None:
            continue
        flag = flag_of(name)
        if not math.isfinite(value) or value > FLOAT32_MAX or value < low or (
                value == low and not inclusive):
            bound = f"at least {low}" if inclusive else f"greater than {low}"
            raise ConfigError(f"{flag} must be a number {bound} and finite in float32 (at most "
                              f"{FLOAT32_MAX:.3g}), got {value}")
    if cfg.momentum >= 1:
        raise ConfigError(f"--momentum must be below 1, got {cfg.momentum}")
    if cfg.image_size is not None and cfg.image_size > MAX_IMAGE_SIZE:
        raise ConfigError(f"--image-size must be at most {MAX_IMAGE_SIZE} pixels "
                          f"(MAX_IMAGE_SIZE in pretrain/cli.py), got {cfg.image_size}")
    for flag, options in (("--method-arg", cfg.method_args),
                          ("--regularizer-arg", cfg.regularizer_args)):
        for key, value in options.items():
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{flag} {key}={value}: must be a finite number")
