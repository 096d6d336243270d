"""The GPU check: every CUDA path of the suite in one command, one table (figures, not a test).

    bash tools/gpu_check.sh --out DIR          # with CUDA: runs the rows, DIR/gpu_check.json
    bash tools/gpu_check.sh                    # without CUDA: the plan (commands, minutes), exit 0
    .venv/bin/python tools/gpu_check.py --device cpu --tiny --out DIR   # every row on the CPU, tiny

Rows, in order (each a subprocess with its own timeout; a failure is a row with its one-line error
and the run goes on; rows that would start past ``--budget-s`` are listed as not run):
- ``data``: ImageNet-like JPEGs (``tools/bench_loader.py --write-images``) the pretraining and
  loader rows read;
- ``pretrain <method>``: ``tools/bench_pretrain.py``, ResNet-50, 224 px, bf16, batch 256 (halved
  while it does not fit), augmentation on the device, 20 timed steps after warm-up;
- ``ddp``: ``tools/pretrain.sh --nnodes 1`` (torchrun, world size 1, the suite's launcher), 5 steps;
  its backbone feeds the conversions and the engines;
- ``convert <engine>``: ``transfer/convert.py`` (the converter verifies the file in the engine);
- one row per engine task of the suite (coco_det, voc_det where present, mpii_pose): the command
  ``python -m benchmarks.suite --dry-run --budget full`` prints for it on the tiny embedded set
  (generated into WORK/suite_data), plus 20 iterations (mpii_pose: the published 256x256
  config), on the ddp backbone, else the random-init control;
- ``loader``: ``tools/bench_loader.py`` at 224 px, decode on the device;
- ``<base>+<regularizer>``: each regularizer on its paper's base (the suite's default panel), the
  meta step at its default frequency, every step (the suite's cpu budget's every 4th step is left
  out to keep the check within 8 minutes); ``cost`` is the base's
  images/s over the row's, both measured in this run.
Peak memory: ``torch.cuda.max_memory_allocated`` where the row reports it, else nvidia-smi's
highest reading of the whole device while the row ran. Expected seconds are estimates for one H100
until a GPU run replaces them.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
# its sibling by file (a package named tools, detectron2's, may be on the path) and the suite
sys.path[:0] = [str(ROOT / "tools"), str(ROOT)]

from gpu_check_rows import Row, one_line_error, run_bench_fitting, run_row, slug  # noqa: E402

from pretrain.open_backbone import RANDOM  # noqa: E402

SETUP_S = 60          # tools/gpu_check.sh: wheels into a fresh environment, xtcocotools built
WORK_PARTS = ("jpegs", "bench", "pretrain", "convert", "engines", "logs")


@dataclasses.dataclass(frozen=True)
class Sizes:
    """What the rows run at: the GPU check's sizes, or tiny ones that prove the wiring on a CPU."""
    device: str
    arch: str = "resnet50"
    image_size: int = 224
    batch_size: int = 256
    steps: int = 20
    warmup: int = 5
    workers: int = 14
    jpegs: int = 512
    ddp_steps: int = 5
    iterations: int = 20
    budget: str = "full"   # the suite budget whose engine commands the rows take
    scale: float = 1.0     # expected seconds relative to the GPU estimates
    min_timeout_s: float = 60

    @classmethod
    def tiny(cls) -> Sizes:
        return cls(device="cpu", arch="resnet18", image_size=64, batch_size=8, steps=1, warmup=1,
                   workers=0, jpegs=16, ddp_steps=1, iterations=1, budget="smoke", scale=1.5,
                   min_timeout_s=400)


def plan_rows(sizes: Sizes, work: Path, suite_data: Path) -> list[Row]:
    """Every row of the check, in the order it runs (``suite_data``: the suite's embedded set)."""
    py, s = sys.executable, sizes
    jpegs = work / "jpegs"
    rows = [Row("data", [py, "tools/bench_loader.py", "--write-images", str(jpegs),
                         "--images", str(s.jpegs)], 10, "data")]
    stages, failed_dry_run = suite_dry_run(sizes, work, suite_data)

    def bench(name: str, method: str, regularizer: str, extra: list[str], expected: float,
              base: str = "") -> Row:
        result = work / "bench" / f"{slug(name)}.json"
        argv = [py, "tools/bench_pretrain.py", "--device", s.device, "--methods", method,
                "--regularizers", regularizer, "--sources", "files", "--augment-on", "device",
                "--data", f"imagefolder={jpegs}", "--arch", s.arch, "--image-size",
                str(s.image_size), "--batch-size", str(s.batch_size), "--steps", str(s.steps),
                "--warmup", str(s.warmup), "--workers", str(s.workers), *extra,
                "--json", str(result)]
        return Row(name, argv, expected, "bench", result=result, base=base)

    from pretrain.methods import METHODS
    rows += [bench(method, method, "none", [], 18) for method in METHODS]
    backbone = work / "pretrain" / "ddp" / "backbone.safetensors"
    rows.append(Row("ddp", ["bash", "tools/pretrain.sh", "--nnodes", "1", "--master-port", "29517",
                            "--device", s.device, "--method", "simclr", "--arch", s.arch,
                            "--stem", "imagenet", "--image-size", str(s.image_size),
                            "--batch-size", str(s.batch_size), "--steps", str(s.ddp_steps),
                            "--workers", str(s.workers), "--data", f"imagefolder={jpegs}",
                            "--out", str(backbone.parent),
                            "--log-every", "1"],
                    30, "ddp", result=backbone.with_name("metrics.json"),
                    note="world size 1 under torchrun: one NCCL process group and DDP"))
    for engine, suffix in (("detectron2", "pkl"), ("mmpose", "pth")):
        rows.append(Row(f"convert {engine}", [
            py, "transfer/convert.py", str(backbone), "--to", engine,
            "--out", str(work / "convert" / f"backbone.{suffix}")], 12, "convert", needs=backbone))
    rows += engine_rows(stages, sizes, backbone) if stages else [failed_dry_run]
    rows.append(Row("loader", [
        py, "tools/bench_loader.py", "--device", s.device, "--sizes", str(s.image_size),
        "--data", f"imagefolder={jpegs}", "--images", str(min(s.jpegs, 64)),
        "--batch-size", str(s.batch_size), "--batches", "4", "--workers", str(s.workers),
        "--rounds", "1", "--json", str(work / "bench" / "loader.json")], 25, "loader",
        result=work / "bench" / "loader.json"))
    # each regularizer on the base its paper's claims use: the pairs of the suite's default panel
    pairs = [st.backbone for st in stages  # seed 0 of each pair (the others are named .seedN)
             if st.name == "pretrain" and "+" in st.backbone and ".seed" not in st.backbone]
    for pair in pairs:
        base, regularizer = pair.split("+")
        rows.append(bench(pair, base, regularizer, [], 25, base=base))
    for row in rows:
        row.expected_s = round(row.expected_s * s.scale)
    return rows


@dataclasses.dataclass
class Stage:
    backbone: str
    name: str
    argv: list[str]


STAGE_LINE = re.compile(r"^\s*\d+\. (\S+): (\S+)")


def suite_dry_run(sizes: Sizes, work: Path, suite_data: Path) -> tuple[list[Stage], Row | None]:
    """The suite's stages as ``python -m benchmarks.suite --dry-run`` prints them (its default
    panel on the embedded tiny set, ``sizes.budget``), read as a user would read them: the check
    runs the suite's own commands without importing its runner. If the dry run fails: no stages,
    and a row that reruns it (so the failure is a row of the table)."""
    # --budget full pretrains on real data only: a stand-in image folder for the plan (the
    # engine rows take the engines' commands, which read the tiny embedded sets)
    images = work / "dry_run_images"
    (images / "any").mkdir(parents=True, exist_ok=True)
    for i in range(2):
        Image.new("RGB", (32, 32), (40 * i, 80, 120)).save(images / "any" / f"{i}.png")
    argv = [sys.executable, "-m", "benchmarks.suite", "--dry-run", "--budget", sizes.budget,
            "--arch", sizes.arch, "--size", "tiny", "--out", str(work / "engines"),
            *(["--data", f"imagefolder={images}"] if sizes.budget == "full" else [])]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "SUITE_DATA_DIR": str(suite_data)})
    if done.returncode != 0:
        print(f"gpu_check: the suite's dry run failed: {one_line_error(done.stderr)}",
              file=sys.stderr)
        return [], Row("suite dry run", argv, 10, "data")
    stages, lines = [], done.stdout.splitlines()
    for at, line in enumerate(lines):
        found = STAGE_LINE.match(line)
        command = next((c.strip()[2:] for c in lines[at + 1:at + 4] if c.strip().startswith("$ ")),
                       None)
        if found and command:
            stages.append(Stage(found[1], found[2], shlex.split(command)))
    return stages, None


ENGINE_TASKS = ("coco_det", "voc_det", "mpii_pose")  # the issue's; semseg's path is voc_det's


def engine_rows(stages: list[Stage], sizes: Sizes, backbone: Path) -> list[Row]:
    """The suite's command of each engine task (a script under transfer/) for its first panel
    backbone, on the ddp row's backbone (else the random-init control), shortened to
    ``sizes.iterations``; fine-tuning where a task has it (BN and the backbone train)."""
    first = next((stage.backbone for stage in stages if stage.name == "pretrain"), None)
    by_script: dict[str, Stage] = {}
    for stage in stages:
        module = stage.argv[2] if stage.argv[1] == "-m" else ""  # python -m transfer.NAME ...
        package, _, name = module.rpartition(".")
        if (stage.backbone == first and package == "transfer" and name in ENGINE_TASKS
                and (name not in by_script or "finetune" in stage.argv)):
            by_script[name] = stage
    rows = []
    for name, stage in by_script.items():
        weights = stage.argv.index("--weights")
        argv = [*stage.argv[:weights + 1], str(backbone), *stage.argv[weights + 2:],
                *shorter(name, sizes)]
        control = [*stage.argv[:weights], "--weights", RANDOM, "--arch", sizes.arch, "--stem",
                   "imagenet", *stage.argv[weights + 2:], *shorter(name, sizes)]
        out = Path(stage.argv[stage.argv.index("--out") + 1])
        rows.append(Row(name, argv, 45, "engine", result=out, needs=backbone, fallback=control))
    return rows


def shorter(script: str, sizes: Sizes) -> list[str]:
    """Flags that cut an engine's run to ``sizes.iterations`` (detectron2: KEY VALUE pairs)."""
    if script == "mpii_pose":
        config = ["--config", "transfer/configs/mpii_td-hm_res50_256x256.py"] \
            if sizes.budget == "full" else []
        return [*config, "--max-iters", str(sizes.iterations), "--val-images", "16"]
    # the published C4 recipe's per-GPU share (16 images on 8 GPUs); precise BN on 10 batches
    return ["SOLVER.MAX_ITER", str(sizes.iterations), "SOLVER.IMS_PER_BATCH", "2",
            "TEST.PRECISE_BN.NUM_ITER", "10"]


def add_costs(records: list[dict], rows: list[Row]) -> None:
    """``cost``: the base's images/s over the regularized row's, both from this run."""
    speed = {r["row"]: r.get("images_per_s") for r in records}
    for row, record in zip(rows, records):
        if row.base and speed.get(row.base) and record.get("images_per_s"):
            record["cost"] = round(speed[row.base] / record["images_per_s"], 2)


def table(records: list[dict], header: str) -> str:
    lines = [header, f"{'row':<26} {'status':<8} {'wall s':>7} {'images/s':>9} {'it/s':>6} "
                     f"{'cost':>6} {'peak GiB':>9}  note / error"]
    for r in records:
        rate = r.get("images_per_s")
        its = r.get("iterations_per_s")
        peak = r.get("peak_mib")
        lines.append(
            f"{r['row']:<26} {r['status']:<8} {r.get('wall_s', ''):>7} "
            f"{'' if rate is None else f'{rate:.0f}' if rate >= 100 else f'{rate:.3g}':>9} "
            f"{'' if its is None else its:>6} "
            f"{'' if 'cost' not in r else str(r['cost']) + 'x':>6} "
            f"{'' if peak is None else f'{peak / 1024:.1f}':>9}  "
            f"{r.get('error') or r.get('note', '')}")
    return "\n".join(lines)


def shown(argv: list[str]) -> str:
    """A command as the plan prints it: paths in the repository relative to it."""
    return shlex.join(argv).replace(f"{ROOT}/", "")


def describe_plan(rows: list[Row]) -> str:
    total = SETUP_S + sum(r.expected_s for r in rows)
    lines = [f"GPU check plan: {len(rows)} rows; expected {total / 60:.1f} min on one H100 "
             f"({SETUP_S} s environment setup + the rows; estimates, not yet measured on a GPU)"]
    for row in rows:
        lines.append(f"  {row.name:<26} ~{row.expected_s:>4.0f} s  {shown(row.argv)}")
        if row.fallback:
            lines.append(f"  {'':<26}   (no ddp backbone: {shown(row.fallback)})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "gpu_check",
                        help="where gpu_check.json and gpu_check.txt go (default runs/gpu_check)")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "gpu_check" / "work",
                        help="the rows' data, runs and logs, a few hundred MB (default "
                             "runs/gpu_check/work)")
    parser.add_argument("--device", choices=["cuda", "cpu"],
                        help="default: cuda when available, else print the plan and exit 0")
    parser.add_argument("--tiny", action="store_true",
                        help="tiny sizes (ResNet-18, 64 px, one step): proves the wiring")
    parser.add_argument("--plan", action="store_true", help="print the plan and exit")
    parser.add_argument("--only", help="comma-separated row names to run (data always runs)")
    parser.add_argument("--budget-s", type=float, default=480,
                        help="rows not started by then (from GPU_CHECK_STARTED, set by "
                             "tools/gpu_check.sh, else now) are listed as not run (default 480)")
    args = parser.parse_args(argv)
    import torch

    started = float(os.environ.get("GPU_CHECK_STARTED", time.time()))
    device = args.device or ("cuda" if torch.cuda.is_available() else None)
    work = args.work.resolve()
    sizes = Sizes.tiny() if args.tiny else Sizes(device=device or "cuda")
    if device:
        sizes = dataclasses.replace(sizes, device=device)
    plan_only = args.plan or device is None
    with tempfile.TemporaryDirectory() as scratch:  # the plan alone keeps no generated data
        rows = plan_rows(sizes, work, Path(scratch) if plan_only else work / "suite_data")
    if args.only:
        wanted = {"data", *args.only.split(",")}
        unknown = wanted - {r.name for r in rows}
        if unknown:
            parser.error(f"--only: no row {', '.join(sorted(unknown))}; rows: "
                         f"{', '.join(r.name for r in rows)}")
        rows = [r for r in rows if r.name in wanted]
    if plan_only:
        print(describe_plan(rows))
        if device is None:
            print("no CUDA device: nothing run (--device cpu --tiny runs every row on the CPU)")
        return 0

    for made in WORK_PARTS:  # the previous run's, never anything else under --work
        shutil.rmtree(work / made, ignore_errors=True)
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    name = torch.cuda.get_device_name(0) if device == "cuda" else "cpu"
    header = (f"GPU check on {name}, torch {torch.__version__}, "
              f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
              f"{'tiny sizes' if args.tiny else f'{sizes.arch} {sizes.image_size} px'}")
    print(header, flush=True)
    records, deadline = [], started + args.budget_s
    for row in rows:
        print(f"[gpu_check] {row.name}: running (~{row.expected_s:.0f} s; "
              f"{deadline - time.time():.0f} s left)", flush=True)
        run = run_bench_fitting if row.kind == "bench" and device == "cuda" else run_row
        record = run(row, logs, deadline, sizes.min_timeout_s)
        print(f"[gpu_check] {row.name}: {record['status']} "
              f"{record.get('error') or ''}", flush=True)
        records.append(record)
    add_costs(records, rows)
    text = table(records, header)
    print("\n" + text, flush=True)
    (args.out / "gpu_check.txt").write_text(text + "\n")
    (args.out / "gpu_check.json").write_text(json.dumps(
        {"header": header, "device": name, "torch": torch.__version__,
         "wall_s": round(time.time() - started, 1), "rows": records}, indent=1))
    print(f"[gpu_check] {sum(r['status'] == 'ok' for r in records)}/{len(records)} rows ok in "
          f"{(time.time() - started) / 60:.1f} min; {args.out / 'gpu_check.json'}", flush=True)
    return 0 if all(r["status"] == "ok" for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
