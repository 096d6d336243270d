"""Pretraining throughput per method: images/s, step time and peak memory (figures, not a test).

    .venv/bin/python tools/bench_pretrain.py                                  # CPU: R18, 64 px
    .venv/bin/python tools/bench_pretrain.py --device cuda --arch resnet50 --image-size 224 \\
        --batch-size 256 --methods simclr --sources files --data imagefolder=JPEG_DIR \\
        --workers 8                                                          # the GPU target
    .venv/bin/python tools/bench_pretrain.py --methods simclr --sources files \\
        --augment-on cpu device --memory-formats contiguous channels_last --repeat 3

Each (method, source, augmentation path, memory format) is measured in a fresh process (so peak
memory is its own) running the training loop's own step (``pretrain.train.training_step``:
forward of both views, loss, backward, optimizer, EMA/queue update), with bf16 autocast on CUDA
unless ``--no-amp``. Sources: ``synthetic`` = random tensors already on the device (no decoding:
the model's speed); ``files`` = the real input pipeline (``pretrain.device_augment.InputPipeline``
for each ``--augment-on``, ``--workers`` DataLoader workers) on ``--data NAME[=PATH]`` (default:
the embedded synthetic Colorful-MNIST). One image = two views.

Whether a step waited on data: ``wait`` is the share of the timed steps spent blocked in
``next(loader)``, ``waited`` how many timed steps were blocked there for over 5% of their time
(with ``--workers 0`` the loading runs inside ``next``, so every step waits), ``aug`` the share
spent bringing the batch to the device and augmenting it there (on CUDA the device is
synchronised around it to time it); the rest is the step's compute. A loader that keeps up shows
``wait`` near 0. ``--repeat N`` measures every configuration N times,
interleaved (the machine's load drifts), and prints the medians. Peak memory:
``torch.cuda.max_memory_allocated`` on CUDA, the process's peak resident set size on the CPU
(includes the ~0.4 GB of the Python/torch runtime).
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import multiprocessing
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

from pretrain.config import AUGMENT_ON, key_value
from pretrain.methods import METHODS

MEMORY_FORMATS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}
WAITED = 0.05  # a step "waited on data" when next(loader) blocked for over 5% of it


def measure(method_name: str, regularizer_name: str, source: str, augment_on: str,
            memory_format_name: str, args: argparse.Namespace) -> dict:
    from torch.utils.data import DataLoader, RandomSampler

    from pretrain.augment import AugmentSpec
    from pretrain.backbones import FEATURE_DIMS, build_resnet
    from pretrain.device_augment import InputPipeline
    from pretrain.methods import Regularizer, build_method
    from pretrain.optim import build_optimizer
    from pretrain.train import training_step

    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    device, cuda = args.device, args.device.startswith("cuda")
    amp = cuda and not args.no_amp
    memory_format = MEMORY_FORMATS[memory_format_name]
    stem = args.stem or "imagenet"
    method = build_method(method_name, build_resnet(args.arch, stem), FEATURE_DIMS[args.arch],
                          **args.method_arg)
    method.to(device, memory_format=memory_format)
    defaults = METHODS[method_name].DEFAULTS
    if regularizer_name == "none":
        regularizer = Regularizer()
    else:
        from pretrain.regularizers import REGULARIZERS

        cfg = argparse.Namespace(method=method_name, regularizer_args=args.regularizer_arg,
                                 image_size=args.image_size, stem=stem)
        regularizer = REGULARIZERS[regularizer_name](method, cfg).to(device)
    optimizer = build_optimizer(defaults["optimizer"],
                                [p for p in method.parameters() if p.requires_grad]
                                + regularizer.joint_parameters(),
                                defaults["lr"] * args.batch_size / 256, defaults["weight_decay"],
                                0.9)
    total = args.warmup + args.steps

    pipeline = None
    if source == "synthetic":
        x = torch.randn(args.batch_size, 3, args.image_size, args.image_size, device=device)
        x = x.contiguous(memory_format=memory_format)
        batches = iter(lambda: {"x1": x, "x2": x.flip(3), "plain": x}, None)
    else:
        name, _, root = args.data.partition("=")
        pipeline = InputPipeline(AugmentSpec.for_data(name, args.image_size), augment_on,
                                 with_plain=regularizer.needs_plain, device=device)
        dataset = pipeline.dataset(name, root or None, seed=0)
        sampler = RandomSampler(dataset, replacement=True, num_samples=total * args.batch_size)
        batches = iter(DataLoader(dataset, batch_size=args.batch_size, sampler=sampler,
                                  num_workers=args.workers, pin_memory=cuda, drop_last=True,
                                  persistent_workers=args.workers > 0,
                                  collate_fn=pipeline.collate))

    def synchronize() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    step_times, waits, augments, compile_s = [], [], [], None
    for step in range(total):
        if step == args.warmup:
            started = time.perf_counter()
        tick = time.perf_counter()
        loaded = next(batches)
        fetched = time.perf_counter()
        batch = loaded if pipeline is None else pipeline.to_device(loaded, memory_format)
        synchronize()
        augmented = time.perf_counter()
        if step == 0 and pipeline is not None:
            compile_s = pipeline.compile_s
        training_step(method, method, regularizer, optimizer, batch, step, step / total,
                      lr=optimizer.param_groups[0]["lr"], amp=amp)  # .item() syncs the device
        if step >= args.warmup:
            step_times.append(time.perf_counter() - tick)
            waits.append(fetched - tick)
            augments.append(augmented - fetched)
    elapsed = time.perf_counter() - started
    peak_mb = (torch.cuda.max_memory_allocated(device) if cuda
               else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024) / 2**20
    return {"method": method_name, "regularizer": regularizer_name, "source": source,
            "augment_on": augment_on if pipeline is not None else None,
            "pipeline": pipeline.describe() if pipeline is not None else "tensors on the device",
            "memory_format": memory_format_name, "device": device, "arch": args.arch,
            "stem": stem, "image_size": args.image_size, "batch_size": args.batch_size,
            "workers": args.workers if pipeline is not None else None,
            "amp_bf16": amp, "steps": args.steps,
            "images_per_s": round(args.batch_size * args.steps / elapsed, 2),
            "step_s_median": round(statistics.median(step_times), 4),
            "wait_share": round(sum(waits) / sum(step_times), 3),
            "steps_waited": sum(w > WAITED * t for w, t in zip(waits, step_times)),
            "augment_share": round(sum(augments) / sum(step_times), 3),
            "augment_compile_s": round(compile_s, 2) if compile_s is not None else None,
            "peak_memory_mb": round(peak_mb, 1),
            "peak_memory_kind": "cuda allocated" if cuda else "process RSS"}


def run_isolated(run: tuple, args: argparse.Namespace) -> dict | str:
    """One measurement in a fresh process; a pair the regularizer's paper does not define
    returns the reason it is skipped."""
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
        try:
            return pool.submit(measure, *run, args).result()
        except ValueError as err:
            return f"skipped: {err}"


def print_row(row: dict, label: str = "") -> None:
    aug = row["augment_on"] or "-"
    compiled = (f"  (augment compile {row['augment_compile_s']} s)"
                if row["augment_compile_s"] is not None else "")
    print(f"{row['method']:<13} {row['regularizer']:<12} {row['source']:<9} {aug:<15} "
          f"{row['memory_format']:<14} {row['images_per_s']:>9.1f} {row['step_s_median']:>8.3f} "
          f"{row['wait_share']:>6.0%} {row['steps_waited']:>4}/{row['steps']:<3} "
          f"{row['augment_share']:>6.0%} {row['peak_memory_mb']:>9.0f}{label}{compiled}",
          flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--sources", nargs="+", default=["synthetic", "files"],
                        choices=["synthetic", "files"])
    parser.add_argument("--augment-on", nargs="+", default=["device"], choices=AUGMENT_ON,
                        help="input pipelines of the 'files' source (pretrain/device_augment.py)")
    parser.add_argument("--memory-formats", nargs="+", choices=list(MEMORY_FORMATS),
                        help="default: the trainer's (channels_last with bf16 on CUDA, "
                        "contiguous on the CPU)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--arch", default="resnet18", choices=["resnet18", "resnet34", "resnet50"])
    parser.add_argument("--regularizers", nargs="+", default=["none"],
                        help="none, msr, mcr, metamask, rcl (pairs a paper does not define "
                             "are skipped)")
    parser.add_argument("--method-arg", action="append", default=[], metavar="K=V",
                        type=key_value,
                        help="method hyperparameter, e.g. proj_dim=2048 (repeatable)")
    parser.add_argument("--regularizer-arg", action="append", default=[], metavar="K=V",
                        type=key_value,
                        help="regularizer option, e.g. meta_every=4 (repeatable; time a "
                             "multiple of it in --steps)")
    parser.add_argument("--stem", choices=["small", "imagenet"], help="default: imagenet")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10, help="timed steps")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers ('files')")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument("--data", default="colorful_mnist",
                        help="NAME[=PATH] for the 'files' source (default: embedded synthetic)")
    parser.add_argument("--no-amp", action="store_true", help="no bf16/channels_last on CUDA")
    parser.add_argument("--repeat", type=int, default=1,
                        help="measure every configuration N times, interleaved; print medians")
    parser.add_argument("--json", type=Path, help="also write the rows to this file")
    args = parser.parse_args(argv)
    args.method_arg, args.regularizer_arg = dict(args.method_arg), dict(args.regularizer_arg)
    if args.memory_formats is None:
        cuda_amp = args.device.startswith("cuda") and not args.no_amp
        args.memory_formats = ["channels_last" if cuda_amp else "contiguous"]

    header = (f"{'method':<13} {'regularizer':<12} {'source':<9} {'augment-on':<15} "
              f"{'memory format':<14} {'images/s':>9} {'step s':>8} {'wait':>6} {'waited':>8} "
              f"{'aug':>6} "
              f"{'peak MB':>9}  ({args.device}, {args.arch}, {args.image_size} px, batch "
              f"{args.batch_size}, {args.workers} workers)")
    print(header, flush=True)
    runs = [(m, r, s, a, f) for m in args.methods for r in args.regularizers
            for s in args.sources for a in (args.augment_on if s == "files" else ["-"])
            for f in args.memory_formats]
    measured: dict[tuple, list[dict]] = {run: [] for run in runs}
    for round_index in range(args.repeat):
        for run in runs:
            if measured[run] is None:
                continue
            row = run_isolated(run, args)
            if isinstance(row, str):
                print(f"{run[0]:<13} {run[1]:<12} {row}", flush=True)
                measured[run] = None
                continue
            measured[run].append(row)
            print_row(row, f"  [round {round_index + 1}]" if args.repeat > 1 else "")
    rows = []
    for results in measured.values():
        if not results:
            continue
        median = dict(results[0])
        for key in ("images_per_s", "step_s_median", "wait_share", "steps_waited",
                    "augment_share"):
            median[key] = statistics.median(r[key] for r in results)
        median["rounds"] = [r["images_per_s"] for r in results]
        rows.append(median)
    if args.repeat > 1:
        print(f"medians of {args.repeat} interleaved rounds:")
        print(header, flush=True)
        for row in rows:
            print_row(row)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
