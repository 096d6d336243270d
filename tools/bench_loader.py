"""The input pipeline alone: CPU cost per image and images/s, per-image PIL against batched on the
device, side by side in one run (figures, not a test).

    .venv/bin/python tools/bench_loader.py                            # CPU: 224 and 64 px
    .venv/bin/python tools/bench_loader.py --device cuda --workers 8 --data imagefolder=JPEG_DIR
    .venv/bin/python tools/bench_loader.py --compile                  # + device-compiled rows

Rows (``pretrain/device_augment.py`` describes the paths):

- ``cpu: per-image PIL`` -- today's ``--augment-on cpu``: decode, then per view random resized
  crop, flip, colour jitter, grayscale, blur, to tensor and normalise, all in the worker.
- ``device: worker`` -- the worker's share of ``--augment-on device``: decode, cut and resize the
  two crops (uint8), draw the parameters.
- ``device: on device`` -- the device's share: flip, jitter, grayscale, blur and normalisation
  of a batch on ``--device``.
- ``decode on device: worker`` / ``...: on device`` -- the same when the device decodes the JPEGs
  (the default on a GPU): the worker only reads the file and its header; the device decodes,
  crops and augments.

Columns: ``CPU ms/img`` is CPU time (``time.process_time``) per image in one process with one
thread and no workers -- the per-core cost, which other processes' load hardly changes -- and
``img/s/core`` its inverse; ``N workers img/s`` is wall-clock images/s of a DataLoader with
``--workers`` workers producing batches (worker rows), or of ``--threads`` threads augmenting
batches on ``--device`` (device rows); ``vs PIL`` is the CPU path's per-core cost over the row's.
Every figure is the median of ``--rounds`` rounds that interleave the rows, so a drift in the
machine's load hits every row alike. Default data: at 224 px ``--images`` generated JPEGs of
ImageNet's typical size (500 x 375, quality 90, noisy content so that decoding costs what a
photo's does); at 64 px the suite's 64 px data set, Colorful-MNIST (its tiny synthetic version,
64 x 64 PNGs; PNGs are decoded by the workers, so it has no decode-on-device rows).
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, RandomSampler

from pretrain.augment import BLUR_MIN_SIZE, AugmentSpec
from pretrain.device_augment import InputPipeline
from pretrain.synthetic import generate


def imagenet_like_jpegs(folder: Path, n: int, seed: int = 0) -> Path:
    """``folder/images/*.jpg`` (an ImageFolder with one class): 500 x 375 JPEGs, a smooth colour
    field plus pixel noise (photos' JPEG entropy; a smooth image decodes faster than a photo)."""
    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        coarse = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8))
        field = np.asarray(coarse.resize((500, 375), Image.Resampling.BICUBIC), dtype=np.float32)
        pixels = np.clip(field + rng.normal(0, 20, field.shape), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / "images" / f"{i:04d}.jpg", quality=90)
    return folder


class Row:
    """One pipeline stage: ``per_image`` (CPU cost) and ``throughput`` (images/s) measurements."""

    def __init__(self, name: str, per_image: Callable[[], float],
                 throughput: Callable[[], float], on_device: bool = False) -> None:
        self.name, self.per_image, self.throughput = name, per_image, throughput
        self.on_device = on_device
        self.cpu_ms: list[float] = []
        self.images_per_s: list[float] = []


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Intra-op threads for the block (1 for the per-core figures)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def cpu_ms_per_image(dataset, count: int) -> float:
    """CPU milliseconds per item of ``dataset`` (items 0..count-1) in this process."""
    dataset[0]  # warm caches and lazy imports
    started = time.process_time()
    for index in range(count):
        dataset[index % len(dataset)]
    return (time.process_time() - started) / count * 1e3


def loader_images_per_s(dataset, pipeline: InputPipeline, batch_size: int, workers: int,
                        batches: int) -> float:
    """Images/s of a DataLoader producing ``batches`` batches: timed over a second pass of
    persistent workers, from ``iter()`` (prefetching starts there) to the last batch."""
    sampler = RandomSampler(dataset, replacement=True, num_samples=batches * batch_size)
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                        collate_fn=pipeline.collate, drop_last=True,
                        persistent_workers=workers > 0)
    for _ in loader:  # starts the workers
        pass
    started = time.perf_counter()
    for _ in loader:
        pass
    return batches * batch_size / (time.perf_counter() - started)


def device_side(pipeline: InputPipeline, batch, device: torch.device, repeats: int,
                clock: Callable[[], float]) -> float:
    """Seconds per batch of ``pipeline.to_device`` on ``clock`` (after one untimed call)."""
    def once() -> None:
        pipeline.to_device(batch)
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    once()
    started = clock()
    for _ in range(repeats):
        once()
    return (clock() - started) / repeats


def build_rows(size: int, data: str, args: argparse.Namespace, device: torch.device
               ) -> list[Row]:
    name, _, root = data.partition("=")
    spec = AugmentSpec.for_data(name, size)
    rows: list[Row] = []

    def pipeline_rows(label: str, augment_on: str, decode: str) -> None:
        pipeline = InputPipeline(spec, augment_on, with_plain=False, device=device, decode=decode)
        dataset = pipeline.dataset(name, root or None, seed=0)
        if decode == "device" and not pipeline.decodes_on_device:
            return  # not a JPEG data set
        worker = "per-image PIL" if augment_on == "cpu" else "worker"
        rows.append(Row(f"{label}: {worker}", lambda: cpu_ms_per_image(dataset, args.images),
                        lambda: loader_images_per_s(dataset, pipeline, args.batch_size,
                                                    args.workers, args.batches)))
        if augment_on == "cpu":
            return
        collate = pipeline.collate or torch.utils.data.default_collate
        batch = collate([dataset[i % len(dataset)] for i in range(args.batch_size)])

        def device_cpu_ms() -> float:
            with torch_threads(1):
                return device_side(pipeline, batch, device, 2, time.process_time) \
                    / args.batch_size * 1e3

        def device_images_per_s() -> float:
            with torch_threads(args.threads):
                return args.batch_size / device_side(pipeline, batch, device, 2,
                                                     time.perf_counter)

        if augment_on == "device-compiled":
            pipeline.to_device(batch)  # compiles
            print(f"  {label} at {size} px: torch.compile took "
                  f"{pipeline.compile_s:.1f} s (first batch)", flush=True)
        rows.append(Row(f"{label}: on {device.type}",
                        device_cpu_ms if device.type == "cpu" else lambda: float("nan"),
                        device_images_per_s, on_device=True))

    pipeline_rows("cpu", "cpu", "cpu")
    pipeline_rows("device", "device", "cpu")
    pipeline_rows("decode on device", "device", "device")
    if args.compile:
        pipeline_rows("device-compiled", "device-compiled", "cpu")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 64])
    parser.add_argument("--data", help="NAME[=PATH] (a pretraining data set, e.g. "
                        "imagefolder=DIR) for every size; default: generated ImageNet-like JPEGs "
                        "at sizes with blur (96 px and more), the tiny synthetic Colorful-MNIST "
                        "below")
    parser.add_argument("--images", type=int, default=48,
                        help="images per per-core measurement (and generated, without --data)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=6, help="timed batches per loader run")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help="torch threads of the device rows' images/s on the CPU")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--compile", action="store_true",
                        help="add --augment-on device-compiled rows (reports the compile time)")
    parser.add_argument("--write-images", type=Path, metavar="DIR",
                        help="only write the generated ImageNet-like JPEGs to DIR (an "
                        "ImageFolder, e.g. for tools/bench_pretrain.py --data imagefolder=DIR)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if args.write_images:
        imagenet_like_jpegs(args.write_images, args.images)
        print(f"wrote {args.images} JPEGs to {args.write_images / 'images'}; use them with "
              f"--data imagefolder={args.write_images}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            if args.data is not None:
                data, source = args.data, args.data
            elif size >= BLUR_MIN_SIZE:
                jpegs = Path(tmp) / "imagenet_like"
                if not jpegs.is_dir():
                    imagenet_like_jpegs(jpegs, args.images)
                data = f"imagefolder={jpegs}"
                source = f"{args.images} generated ImageNet-like JPEGs (500 x 375)"
            else:
                synthetic = Path(tmp) / "synthetic"
                if not synthetic.is_dir():
                    generate(synthetic, size="tiny")
                data = f"colorful_mnist={synthetic}"
                source = "the tiny synthetic Colorful-MNIST (64 x 64 PNGs)"
            rows = build_rows(size, data, args, device)
            for round_index in range(args.rounds):
                for row in rows:
                    with torch_threads(1):
                        row.cpu_ms.append(row.per_image())
                    row.images_per_s.append(row.throughput())
                print(f"  {size} px: round {round_index + 1}/{args.rounds} done", flush=True)
            reference = statistics.median(rows[0].cpu_ms)
            print(f"\n{size} px, {source}, batch {args.batch_size}, device {device}, "
                  f"medians of {args.rounds} interleaved rounds")
            print(f"{'path':<32} {'CPU ms/img':>11} {'img/s/core':>11} "
                  f"{f'{args.workers} workers img/s':>18} {'vs PIL':>7}")
            for row in rows:
                ms = statistics.median(row.cpu_ms)
                per_second = statistics.median(row.images_per_s)
                label = (f"{args.threads} threads img/s" if row.on_device
                         else f"{args.workers} workers img/s")
                print(f"{row.name:<32} {ms:>11.2f} {1e3 / ms:>11.0f} {per_second:>18.0f} "
                      f"{reference / ms:>6.1f}x   ({label})", flush=True)
            if device.type == "cpu":  # training on the CPU: the device's share is CPU work too
                for worker, on_device in zip(rows[1::2], rows[2::2]):
                    ms = statistics.median(worker.cpu_ms) + statistics.median(on_device.cpu_ms)
                    name = worker.name.replace(": worker", ": worker + on cpu")
                    print(f"{name:<32} {ms:>11.2f} {1e3 / ms:>11.0f} {'':>18} "
                          f"{reference / ms:>6.1f}x", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
