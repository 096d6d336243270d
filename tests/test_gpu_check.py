"""tools/gpu_check.py: its plan without CUDA, the rows' commands, and its failure handling.

The GPU run itself needs a GPU; ``test_tiny_rows_run_on_the_cpu`` runs the rows that no other test
exercises (the pretraining and loader benchmarks, the torchrun launch, a conversion) on the CPU at
tiny sizes through the check's own runner.
"""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent


def _gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "tools" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


gpu_check = _gpu_check()


@pytest.fixture(scope="module")
def gpu_rows(tmp_path_factory: pytest.TempPathFactory) -> tuple[list, Path]:
    work = tmp_path_factory.mktemp("work")
    return gpu_check.plan_rows(gpu_check.Sizes(device="cuda"), work, work / "suite_data"), work


@pytest.mark.skipif(torch.cuda.is_available(), reason="the plan mode is the no-CUDA behaviour")
def test_without_cuda_the_shell_command_prints_the_plan_and_exits_0() -> None:
    done = subprocess.run(["bash", str(REPO / "tools" / "gpu_check.sh")], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "no CUDA device: nothing run" in out
    minutes = float(out.split("expected ")[1].split(" min")[0])
    assert 3 < minutes <= 8  # the budget: the whole check within 8 minutes
    for name in ("data", "simclr", "byol", "barlow_twins", "mocov2", "ddp", "convert detectron2",
                 "convert mmpose", "coco_det", "mpii_pose", "loader", "byol+msr",
                 "barlow_twins+mcr", "mocov2+rcl", "voc_det"):
        assert f"  {name} " in out, name


def test_pretraining_rows_are_resnet50_224px_bf16_batch_256_device_augmentation(gpu_rows) -> None:
    rows, _ = gpu_rows
    simclr = next(r for r in rows if r.name == "simclr")
    flags = " ".join(simclr.argv)
    for expected in ("--arch resnet50", "--image-size 224", "--batch-size 256", "--steps 20",
                     "--augment-on device", "--sources files", "--device cuda"):
        assert expected in flags
    assert "--no-amp" not in flags  # bf16 autocast is bench_pretrain's default on CUDA
    # the meta step at its default frequency (every step)
    assert "--regularizer-arg" not in next(r for r in rows if r.name == "simclr+metamask").argv
    # the pairs are the suite's default panel's (its dry run), each after its own base
    assert [r.name for r in rows if r.base] == [
        "simclr+metamask", "byol+msr", "barlow_twins+mcr", "mocov2+rcl"]


def test_engine_rows_are_the_suites_commands_on_the_published_configs(gpu_rows) -> None:
    rows, work = gpu_rows
    backbone = str(work / "pretrain" / "ddp" / "backbone.safetensors")
    coco = next(r for r in rows if r.name == "coco_det")
    assert coco.argv[1:3] == ["-m", "transfer.coco_det"]
    configs = [coco.argv[i + 1] for i, a in enumerate(coco.argv) if a == "--config-file"]
    assert configs[-1].endswith("coco_R_50_C4_1x_moco.yaml")  # argparse: the last one wins
    assert coco.argv[coco.argv.index("--weights") + 1] == backbone
    assert coco.argv[-6:] == ["SOLVER.MAX_ITER", "20", "SOLVER.IMS_PER_BATCH", "2",
                              "TEST.PRECISE_BN.NUM_ITER", "10"]
    assert coco.fallback[coco.fallback.index("--weights") + 1] == "random"
    assert coco.fallback[coco.fallback.index("--arch") + 1] == "resnet50"
    data = coco.argv[coco.argv.index("--data") + 1]
    assert Path(data).name == "coco" and Path(data).is_relative_to(work / "suite_data")

    mpii = next(r for r in rows if r.name == "mpii_pose")
    configs = [mpii.argv[i + 1] for i, a in enumerate(mpii.argv) if a == "--config"]
    assert configs[-1].endswith("mpii_td-hm_res50_256x256.py")
    assert mpii.argv[mpii.argv.index("--protocol") + 1] == "finetune"
    assert mpii.argv[mpii.argv.index("--max-iters") + 1] == "20"


def test_a_failing_suite_dry_run_becomes_a_row_and_the_other_rows_stay(tmp_path: Path) -> None:
    sizes = gpu_check.Sizes(device="cpu", budget="no-such-budget")  # the suite refuses it
    rows = gpu_check.plan_rows(sizes, tmp_path, tmp_path / "suite_data")
    names = [r.name for r in rows]
    assert "suite dry run" in names and "coco_det" not in names
    assert {"data", "simclr", "ddp", "convert mmpose", "loader"} <= set(names)
    record = gpu_check.run_row(rows[names.index("suite dry run")], tmp_path, time.time() + 120)
    assert record["status"] == "failed" and "no-such-budget" in record["error"]


def test_one_line_error_names_the_exception() -> None:
    log = ("step 1\nTraceback (most recent call last):\n  File x\n"
           "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2 GiB\n")
    assert gpu_check.one_line_error(log).startswith("torch.OutOfMemoryError: CUDA out of memory")
    assert gpu_check.one_line_error("") == "no output"
    assert gpu_check.one_line_error("just a line\nthe last\n") == "the last"


def _script_row(tmp_path: Path, body: str, **kwargs):
    script = tmp_path / "row.py"
    script.write_text(body)
    return gpu_check.Row("probe", [sys.executable, str(script), *kwargs.pop("args", [])], 1,
                         kwargs.pop("kind", "data"), **kwargs)


def test_a_failing_row_is_one_line_and_rows_past_the_budget_are_not_run(tmp_path: Path) -> None:
    row = _script_row(tmp_path, "print('working'); raise ValueError('bad input, fix it')")
    record = gpu_check.run_row(row, tmp_path, time.time() + 120)
    assert record["status"] == "failed"
    assert record["error"] == "ValueError: bad input, fix it"
    assert "wall_s" in record
    late = gpu_check.run_row(row, tmp_path, time.time() - 1)
    assert late["status"] == "not run" and "--budget-s" in late["error"]


def test_a_row_that_hangs_is_stopped_at_its_timeout(tmp_path: Path) -> None:
    row = _script_row(tmp_path, "import time; time.sleep(60)")
    started = time.monotonic()
    record = gpu_check.run_row(row, tmp_path, time.time() + 2)
    assert time.monotonic() - started < 30
    assert record["status"] == "failed" and record["error"].startswith("timed out after")


def test_a_batch_that_does_not_fit_is_halved_until_it_does(tmp_path: Path) -> None:
    # the row stands for bench_pretrain: CUDA's message above 64 images, its JSON at 64
    body = ("import json, sys\nbatch = int(sys.argv[sys.argv.index('--batch-size') + 1])\n"
            "if batch > 64: sys.exit('torch.OutOfMemoryError: CUDA out of memory.')\n"
            "json.dump([{'images_per_s': 10.0, 'peak_memory_mb': 5.0, 'peak_memory_kind': 'x',"
            " 'batch_size': batch, 'wait_share': 0.0}], open(sys.argv[-1], 'w'))\n")
    result = tmp_path / "out.json"
    row = _script_row(tmp_path, body, args=["--batch-size", "256", str(result)], kind="bench",
                      result=result)
    record = gpu_check.run_bench_fitting(row, tmp_path, time.time() + 120)
    assert record["status"] == "ok"
    assert record["batch_size"] == 64 and record["images_per_s"] == 10.0
    assert "batch 64: a larger one ran out of memory" in record["note"]


def test_costs_are_the_base_over_the_regularized_row() -> None:
    rows = [gpu_check.Row("simclr", [], 1, "bench"),
            gpu_check.Row("simclr+msr", [], 1, "bench", base="simclr")]
    records = [{"row": "simclr", "images_per_s": 300.0}, {"row": "simclr+msr",
                                                           "images_per_s": 100.0}]
    gpu_check.add_costs(records, rows)
    assert records[1]["cost"] == 3.0 and "cost" not in records[0]


@pytest.mark.slow
def test_tiny_rows_run_on_the_cpu(tmp_path: Path) -> None:
    """The rows no other test runs, through the check's runner: the figures come back."""
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, str(REPO / "tools" / "gpu_check.py"), "--device", "cpu", "--tiny",
         "--out", str(out), "--work", str(tmp_path / "work"),
         "--only", "simclr,loader,ddp,convert detectron2"],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    records = {r["row"]: r for r in json.loads((out / "gpu_check.json").read_text())["rows"]}
    assert set(records) == {"data", "simclr", "loader", "ddp", "convert detectron2"}
    assert records["simclr"]["images_per_s"] > 0 and records["simclr"]["peak_mib"] > 0
    assert records["loader"]["images_per_s"] > 0
    assert records["ddp"]["images_per_s"] > 0
    assert (tmp_path / "work" / "convert" / "backbone.pkl").is_file()
    assert sorted(p.name for p in out.iterdir()) == ["gpu_check.json", "gpu_check.txt"]
    assert "simclr" in (out / "gpu_check.txt").read_text()
