"""The GPU check: every CUDA path of the suite in one command, one table (figures, not a test).

    bash tools/gpu_check.sh --out DIR          # with CUDA: runs the rows, DIR/gpu_check.json
    bash tools/gpu_check.sh                    # without CUDA: the plan (commands, minutes), exit 0
    .venv/bin/python tools/gpu_check.py --device cpu --tiny --out DIR   # every row on the CPU, tiny

Rows, in order (each a subprocess with its own timeout; a failure is a row with its one-line error
and the run goes on; rows that would start past ``--budget-s`` are listed as not run):
- ``data``: ImageNet-like JPEGs (``tools/bench_loader.py --write-images``) and the tiny embedded
  synthetic set (``datasets/make_synthetic.py``) the other rows read;
- ``pretrain <method>``: ``tools/bench_pretrain.py``, ResNet-50, 224 px, bf16, batch 256 (halved
  while it does not fit), augmentation on the device, 20 timed steps after warm-up;
- ``ddp``: ``tools/pretrain.sh --nnodes 1`` (torchrun, world size 1, the suite's launcher), 5 steps;
  its backbone feeds the conversions and the engines;
- ``convert <engine>``: ``transfer/convert.py`` (the converter verifies the file in the engine);
- one row per engine task of the suite (coco_det, voc_det where present, mpii_pose): the command
  ``benchmarks.suite.plan`` writes for ``--budget full`` on the embedded set, plus 20 iterations
  (mpii_pose: the published 256x256 config); the random-init control when ``ddp`` wrote nothing;
- ``loader``: ``tools/bench_loader.py`` at 224 px, decode on the device;
- ``<base>+<regularizer>``: each regularizer on its paper's base (the suite's default panel), the
  meta step every step (the default) and every 4th (the suite's cpu budget); ``cost`` is the base's
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
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pretrain.open_backbone import RANDOM_METHOD  # noqa: E402

SETUP_S = 60          # tools/gpu_check.sh: wheels into a fresh environment, xtcocotools built
BILEVEL = ("msr", "mcr", "metamask")
SLOWER_META_EVERY = 4  # the suite's cpu budget's meta step frequency
MIN_BATCH = 32
WORK_PARTS = ("jpegs", "synthetic", "bench", "pretrain", "convert", "engines", "logs")


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
    budget: str = "full"   # the suite budget whose engine commands (and pretraining extras,
                           # e.g. a 2048-d Barlow Twins projector under "cpu") the rows take
    scale: float = 1.0     # expected seconds relative to the GPU estimates
    min_timeout_s: float = 60

    @classmethod
    def tiny(cls) -> Sizes:
        return cls(device="cpu", arch="resnet18", image_size=64, batch_size=8, steps=1, warmup=1,
                   workers=0, jpegs=16, ddp_steps=1, iterations=1, budget="smoke", scale=1.5,
                   min_timeout_s=400)


@dataclasses.dataclass
class Row:
    name: str
    argv: list[str]
    expected_s: float
    kind: str                          # data, bench, ddp, convert, engine, loader
    result: Path | None = None         # the file (or folder) its figures are read from
    needs: Path | None = None          # a file an earlier row writes
    fallback: list[str] | None = None  # engines: the random-init control's command
    base: str = ""                     # regularized rows: the base row's name
    note: str = ""                     # what the row does not prove


def plan_rows(sizes: Sizes, work: Path) -> list[Row]:
    """Every row of the check, in the order it runs."""
    py, s = sys.executable, sizes
    jpegs, synthetic = work / "jpegs", work / "synthetic"
    data = (f"{shlex.quote(py)} tools/bench_loader.py --write-images {shlex.quote(str(jpegs))} "
            f"--images {s.jpegs} && {shlex.quote(py)} datasets/make_synthetic.py "
            f"--out {shlex.quote(str(synthetic))} --size tiny")
    rows = [Row("data", ["bash", "-c", data], 15, "data")]

    from benchmarks.suite import DEFAULT_PANEL, PRETRAIN_EXTRAS
    from pretrain.methods import METHODS

    def bench(name: str, method: str, regularizer: str, extra: list[str], expected: float,
              base: str = "") -> Row:
        result = work / "bench" / f"{slug(name)}.json"
        argv = [py, "tools/bench_pretrain.py", "--device", s.device, "--methods", method,
                "--regularizers", regularizer, "--sources", "files", "--augment-on", "device",
                "--data", f"imagefolder={jpegs}", "--arch", s.arch, "--image-size",
                str(s.image_size), "--batch-size", str(s.batch_size), "--steps", str(s.steps),
                "--warmup", str(s.warmup), "--workers", str(s.workers),
                *PRETRAIN_EXTRAS.get(s.budget, {}).get(method, []), *extra,
                "--json", str(result)]
        return Row(name, argv, expected, "bench", result=result, base=base)

    rows += [bench(method, method, "none", [], 18) for method in METHODS]

    backbone = work / "pretrain" / "ddp" / "backbone.safetensors"
    rows.append(Row("ddp", ["bash", "tools/pretrain.sh", "--nnodes", "1", "--master-port", "29517",
                            "--device", s.device, "--method", "simclr", "--arch", s.arch,
                            "--stem", "imagenet", "--image-size", str(s.image_size),
                            "--batch-size", str(s.batch_size), "--steps", str(s.ddp_steps),
                            "--workers", str(s.workers), "--data", f"imagefolder={jpegs}",
                            "--out", str(work / "pretrain"), "--name", "ddp",
                            "--log-every", "1"],
                    30, "ddp", result=backbone.with_name("metrics.json"),
                    note="world size 1: pretrain/distributed.py joins no process group (it does "
                         "for WORLD_SIZE > 1), so no NCCL call; proves the torchrun launch"))
    for engine, suffix in (("detectron2", "pkl"), ("mmpose", "pth")):
        rows.append(Row(f"convert {engine}", [
            py, "transfer/convert.py", str(backbone), "--to", engine,
            "--out", str(work / "convert" / f"backbone.{suffix}")], 12, "convert", needs=backbone))
    rows += engine_rows(sizes, work, synthetic, backbone)
    rows.append(Row("loader", [
        py, "tools/bench_loader.py", "--device", s.device, "--sizes", str(s.image_size),
        "--data", f"imagefolder={jpegs}", "--images", str(min(s.jpegs, 64)),
        "--batch-size", str(s.batch_size), "--batches", "4", "--workers", str(s.workers),
        "--rounds", "1", "--json", str(work / "bench" / "loader.json")], 25, "loader",
        result=work / "bench" / "loader.json"))
    # each regularizer on the base its paper's claims use, as the suite's default panel pairs them
    pairs = [pair for pair in DEFAULT_PANEL if "+" in pair]
    for pair in pairs:
        base, regularizer = pair.split("+")
        rows.append(bench(pair, base, regularizer, [], 25, base=base))
    for pair in pairs:
        base, regularizer = pair.split("+")
        if regularizer in BILEVEL:
            rows.append(bench(f"{pair} meta/{SLOWER_META_EVERY}", base, regularizer,
                              ["--regularizer-arg", f"meta_every={SLOWER_META_EVERY}"], 20,
                              base=base))
    for row in rows:
        row.expected_s = round(row.expected_s * s.scale)
    return rows


def slug(name: str) -> str:
    """A row's name as a file name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def engine_rows(sizes: Sizes, work: Path, synthetic: Path, backbone: Path) -> list[Row]:
    """The suite's own command of each engine task (scripts under transfer/), its training
    shortened to ``sizes.iterations``: on the ddp row's backbone, else the random-init control."""
    from benchmarks.tasks import TASKS

    engines = {name: task for name, task in TASKS.items() if task.script.startswith("transfer/")}
    on_backbone = suite_commands(sizes, work, synthetic, engines, backbone)
    on_random = suite_commands(sizes, work, synthetic, engines, None)
    rows = []
    for name, task in engines.items():
        # one protocol per engine: fine-tuning where it has one (BN and the backbone train)
        protocol = "finetune" if "finetune" in task.protocols else task.protocols[0]
        stage = next(st for st, p in task.stages().items() if p == protocol)
        rows.append(Row(name, on_backbone[stage] + shorter(task.script, sizes), 45, "engine",
                        result=work / "engines" / stage / "gpucheck", needs=backbone,
                        fallback=on_random[stage] + shorter(task.script, sizes)))
    return rows


def suite_commands(sizes: Sizes, work: Path, synthetic: Path, engines: dict,
                   backbone: Path | None) -> dict[str, list[str]]:
    """{stage: command} that ``benchmarks.suite.plan`` gives the engines' stages of one backbone
    (``backbone``, named gpucheck, else the random-init control) on the embedded set."""
    from benchmarks.suite import plan
    from benchmarks.tasks import data_sets

    args = argparse.Namespace(
        panel=[], checkpoint=[("gpucheck", str(backbone))] if backbone else [], seeds=1,
        pretrain_per_task=False, pretrain_steps=None, budget=sizes.budget, arch=sizes.arch,
        gpus=1, tasks=[stage for task in engines.values() for stage in task.stages()],
        data={key: str(synthetic / key) for key in data_sets()}, synthetic=set(data_sets()))
    chosen = "gpucheck" if backbone else RANDOM_METHOD
    return {st.name: st.argv for st in plan(args, work / "engines") if st.backbone == chosen}


def shorter(script: str, sizes: Sizes) -> list[str]:
    """Flags that cut an engine's run to ``sizes.iterations`` (detectron2: KEY VALUE pairs)."""
    if script.endswith("mpii_pose.py"):
        config = ["--config", "transfer/configs/mpii_td-hm_res50_256x256.py"] \
            if sizes.budget == "full" else []
        return [*config, "--max-iters", str(sizes.iterations), "--val-images", "16"]
    # the published C4 recipe's per-GPU share (16 images on 8 GPUs); precise BN on 10 batches
    return ["SOLVER.MAX_ITER", str(sizes.iterations), "SOLVER.IMS_PER_BATCH", "2",
            "TEST.PRECISE_BN.NUM_ITER", "10"]


class PeakMemory:
    """The highest nvidia-smi reading of device 0 (MiB) while the block runs; None without it."""

    def __init__(self) -> None:
        self.peak: int | None = None
        self._process: subprocess.Popen | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> PeakMemory:
        try:
            self._process = subprocess.Popen(
                ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits",
                 "-i", "0", "-lms", "200"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                text=True)
        except OSError:
            return self
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        return self

    def _read(self) -> None:
        for line in self._process.stdout:
            if line.strip().isdigit():
                self.peak = max(self.peak or 0, int(line))

    def __exit__(self, *exc: object) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait()
            self._thread.join(timeout=2)


ERROR_LINE = re.compile(r"(\w+(Error|Exception|Interrupt)\b|error:|Error:|Killed|CUDA)")


def one_line_error(log: str) -> str:
    """The line that says what went wrong: the last one naming an error, else the last line."""
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    named = [line for line in lines if ERROR_LINE.search(line)]
    return ((named or lines or ["no output"])[-1])[:240]


def figures(row: Row) -> dict:
    """The row's throughput and in-process peak memory, from what it wrote."""
    if row.result is None or not row.result.exists():
        return {}
    if row.kind == "bench":
        found = json.loads(row.result.read_text())
        if not found:
            return {"note": "skipped by bench_pretrain (a pair its paper does not define)"}
        r = found[0]
        return {"images_per_s": r["images_per_s"], "peak_mib": r["peak_memory_mb"],
                "peak_kind": r["peak_memory_kind"], "batch_size": r["batch_size"],
                "note": f"batch {r['batch_size']}, waited on data {r['wait_share']:.0%}"}
    if row.kind == "ddp":
        return {"images_per_s": json.loads(row.result.read_text()).get("images_per_s")}
    if row.kind == "loader":
        by_path = {r["path"]: r for r in json.loads(row.result.read_text())}
        device = next((r for p, r in by_path.items() if p.startswith("decode on device: on")),
                      None) or next((r for p, r in by_path.items() if ": on " in p), None)
        return {"images_per_s": device["images_per_s"], "note": device["path"]} if device else {}
    if row.kind == "engine":
        seconds = [line["time"] for path in sorted(row.result.rglob("*.json"))
                   for line in json_lines(path) if isinstance(line.get("time"), (int, float))]
        return {"iterations_per_s": round(1 / statistics.median(seconds), 2)} if seconds else {}
    return {}


def json_lines(path: Path) -> list[dict]:
    """The JSON objects of a JSON-lines file (detectron2's metrics.json, mmengine's scalars)."""
    found = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if isinstance(item, dict):
            found.append(item)
    return found


def run_row(row: Row, logs: Path, deadline: float, min_timeout_s: float = 60) -> dict:
    """Runs one row (``deadline``: time.time() past which no row starts or runs on)."""
    record = {"row": row.name, "expected_s": row.expected_s, "command": shlex.join(row.argv),
              **({"note": row.note} if row.note else {})}
    argv = row.argv
    if row.needs is not None and not row.needs.exists():
        if row.fallback is None:
            return {**record, "status": "failed",
                    "error": f"needs {row.needs.name}, which the ddp row did not write"}
        argv, record["note"] = row.fallback, "random-init control: the ddp row wrote no backbone"
        record["command"] = shlex.join(argv)
    seconds_left = deadline - time.time()
    if seconds_left <= 0:
        return {**record, "status": "not run", "error": "past the check's --budget-s"}
    timeout = min(max(4 * row.expected_s, min_timeout_s), seconds_left)
    log = logs / f"{slug(row.name)}.log"
    started = time.monotonic()
    with PeakMemory() as memory, open(log, "w") as out:
        try:
            code = subprocess.run(argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                  timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            code = None
    record.update(wall_s=round(time.monotonic() - started, 1), log=str(log))
    if memory.peak is not None:
        record.update(peak_mib=memory.peak, peak_kind="nvidia-smi, device")
    found = figures(row if argv is row.argv else dataclasses.replace(
        row, result=row.result and row.result.with_name(RANDOM_METHOD)))
    record.update({k: v for k, v in found.items() if k != "note"})
    if found.get("note"):
        record["note"] = "; ".join(filter(None, [record.get("note"), found["note"]]))
    if code == 0:
        return {**record, "status": "ok"}
    error = (f"timed out after {timeout:.0f} s" if code is None
             else one_line_error(log.read_text(errors="replace")))
    return {**record, "status": "failed", "error": error}


def with_batch(argv: list[str], batch: int) -> list[str]:
    at = argv.index("--batch-size")
    return [*argv[:at + 1], str(batch), *argv[at + 2:]]


def run_bench_fitting(row: Row, logs: Path, deadline: float, min_timeout_s: float = 60) -> dict:
    """A pretraining row at its batch, halved while CUDA runs out of memory (down to 32)."""
    record = run_row(row, logs, deadline, min_timeout_s)
    batch = int(row.argv[row.argv.index("--batch-size") + 1])
    while (record["status"] == "failed" and "out of memory" in record.get("error", "")
           and batch // 2 >= MIN_BATCH):
        batch //= 2
        row = dataclasses.replace(row, argv=with_batch(row.argv, batch))
        record = run_row(row, logs, deadline, min_timeout_s)
        record["note"] = f"batch {batch}: a larger one ran out of memory; " + record.get("note", "")
    return record


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
    parser.add_argument("--work", type=Path,
                        help="the rows' data, runs and logs (default: OUT/work)")
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
    work = (args.work or args.out / "work").resolve()
    sizes = Sizes.tiny() if args.tiny else Sizes(device=device or "cuda")
    if device:
        sizes = dataclasses.replace(sizes, device=device)
    rows = plan_rows(sizes, work)
    if args.only:
        wanted = {"data", *args.only.split(",")}
        unknown = wanted - {r.name for r in rows}
        if unknown:
            parser.error(f"--only: no row {', '.join(sorted(unknown))}; rows: "
                         f"{', '.join(r.name for r in rows)}")
        rows = [r for r in rows if r.name in wanted]
    if args.plan or device is None:
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
