"""Pretraining throughput per method: images/s, step time and peak memory (figures, not a test).

    .venv/bin/python tools/bench_pretrain.py                                  # CPU: R18, 64 px
    .venv/bin/python tools/bench_pretrain.py --device cuda --arch resnet50 --image-size 224 \\
        --batch-size 256 --methods simclr                                    # the GPU target

Each (method, source) is measured in a fresh process (so peak memory is its own) running the
training loop's own step (``pretrain.train.training_step``: forward of both views, loss, backward,
optimizer, EMA/queue update), with bf16 autocast and channels_last on CUDA unless ``--no-amp``.
Sources: ``synthetic`` = random tensors already on the device (no decoding: the model's speed);
``files`` = the real input pipeline (image decoding + two-view augmentation in ``--workers``
DataLoader workers) on ``--data NAME[=PATH]`` (default: the embedded synthetic Colorful-MNIST).
One image = two views. Peak memory: ``torch.cuda.max_memory_allocated`` on CUDA, the process's
peak resident set size on the CPU (includes the ~0.4 GB of the Python/torch runtime).
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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from pretrain.config import key_value  # noqa: E402
from pretrain.methods import METHODS  # noqa: E402


def measure(method_name: str, regularizer_name: str, source: str,
            args: argparse.Namespace) -> dict:
    from torch.utils.data import DataLoader, RandomSampler

    from pretrain.augment import AugmentSpec, SeededViews, TwoViews
    from pretrain.backbones import FEATURE_DIMS, build_resnet
    from pretrain.data import build_unlabelled
    from pretrain.methods import Regularizer, build_method
    from pretrain.optim import build_optimizer
    from pretrain.train import training_step

    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    device, cuda = args.device, args.device.startswith("cuda")
    amp = cuda and not args.no_amp
    memory_format = torch.channels_last if amp else torch.contiguous_format
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

    if source == "synthetic":
        x = torch.randn(args.batch_size, 3, args.image_size, args.image_size, device=device)
        x = x.contiguous(memory_format=memory_format)
        batches = iter(lambda: (x, x.flip(3), x), None)
    else:
        name, _, root = args.data.partition("=")
        views = TwoViews(AugmentSpec.for_data(name, args.image_size),
                         with_plain=regularizer.needs_plain)
        dataset = SeededViews(build_unlabelled(name, root or None, views), seed=0)
        sampler = RandomSampler(dataset, replacement=True, num_samples=total * args.batch_size)
        batches = iter(DataLoader(dataset, batch_size=args.batch_size, sampler=sampler,
                                  num_workers=args.workers, pin_memory=cuda, drop_last=True,
                                  persistent_workers=args.workers > 0))

    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    step_times = []
    for step in range(total):
        if step == args.warmup:
            started = time.perf_counter()
        tick = time.perf_counter()
        x1, x2, plain = next(batches)
        batch = {"x1": x1.to(device, non_blocking=True, memory_format=memory_format),
                 "x2": x2.to(device, non_blocking=True, memory_format=memory_format),
                 "plain": plain.to(device)}
        training_step(method, method, regularizer, optimizer, batch, step, step / total,
                      lr=optimizer.param_groups[0]["lr"], amp=amp)  # .item() syncs the device
        if step >= args.warmup:
            step_times.append(time.perf_counter() - tick)
    elapsed = time.perf_counter() - started
    peak_mb = (torch.cuda.max_memory_allocated(device) if cuda
               else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024) / 2**20
    return {"method": method_name, "regularizer": regularizer_name, "source": source,
            "device": device, "arch": args.arch,
            "stem": stem, "image_size": args.image_size, "batch_size": args.batch_size,
            "amp_bf16": amp, "steps": args.steps,
            "images_per_s": round(args.batch_size * args.steps / elapsed, 2),
            "step_s_median": round(statistics.median(step_times), 4),
            "peak_memory_mb": round(peak_mb, 1),
            "peak_memory_kind": "cuda allocated" if cuda else "process RSS"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--sources", nargs="+", default=["synthetic", "files"],
                        choices=["synthetic", "files"])
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
    parser.add_argument("--json", type=Path, help="also write the rows to this file")
    args = parser.parse_args(argv)
    args.method_arg, args.regularizer_arg = dict(args.method_arg), dict(args.regularizer_arg)

    rows = []
    header = (f"{'method':<13} {'regularizer':<12} {'source':<9} {'images/s':>9} {'step s':>8} "
              f"{'peak MB':>9}  "
              f"({args.device}, {args.arch}, {args.image_size} px, batch {args.batch_size})")
    print(header, flush=True)
    context = multiprocessing.get_context("spawn")
    runs = [(m, r, s) for m in args.methods for r in args.regularizers for s in args.sources]
    for method_name, regularizer_name, source in runs:
        with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
            try:
                row = pool.submit(measure, method_name, regularizer_name, source, args).result()
            except ValueError as err:  # a pair the regularizer's paper does not define
                print(f"{method_name:<13} {regularizer_name:<12} skipped: {err}", flush=True)
                continue
        rows.append(row)
        print(f"{method_name:<13} {regularizer_name:<12} {source:<9} "
              f"{row['images_per_s']:>9.1f} {row['step_s_median']:>8.3f} "
              f"{row['peak_memory_mb']:>9.0f}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
