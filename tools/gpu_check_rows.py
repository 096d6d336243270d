"""Running one row of the GPU check (tools/gpu_check.py): a subprocess with its own timeout, its
log, its one-line error, nvidia-smi's peak memory and the figures the row wrote."""
from __future__ import annotations

import dataclasses
import json
import re
import shlex
import statistics
import subprocess
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MIN_BATCH = 32  # a pretraining row's batch is halved while it does not fit, down to this
LOG_TAIL = 40   # lines of a failed row's log kept in the check's JSON (the logs stay in --work)


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


def slug(name: str) -> str:
    """A row's name as a file name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


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
    found = figures(row)
    record.update({k: v for k, v in found.items() if k != "note"})
    if found.get("note"):
        record["note"] = "; ".join(filter(None, [record.get("note"), found["note"]]))
    if code == 0:
        return {**record, "status": "ok"}
    error = (f"timed out after {timeout:.0f} s" if code is None
             else one_line_error(log.read_text(errors="replace")))
    tail = log.read_text(errors="replace").splitlines()[-LOG_TAIL:]
    return {**record, "status": "failed", "error": error, "log_tail": tail}


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
