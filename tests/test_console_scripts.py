"""One command-line language: every entry point is a console script of setup.py (a function that
takes no argument and reads sys.argv), each prints its own --help under its script's name, and no
module edits sys.path to find the project (the installed package does)."""
from __future__ import annotations

import ast
import importlib
import inspect
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def console_scripts() -> dict[str, str]:
    """{script name: "module:function"} from setup.py's CONSOLE_SCRIPTS."""
    tree = ast.parse((REPO / "setup.py").read_text())
    listed = next(node.value for node in tree.body if isinstance(node, ast.Assign)
                  and getattr(node.targets[0], "id", "") == "CONSOLE_SCRIPTS")
    return dict(tuple(part.strip() for part in entry.split("=")) for entry in
                ast.literal_eval(listed))


def test_the_entry_points_each_have_a_console_script() -> None:
    modules = {target.split(":")[0] for target in console_scripts().values()}
    assert {"pretrain.train", "transfer.convert", "transfer.coco_det", "transfer.mpii_pose",
            "benchmarks.probes.colorful_mnist", "benchmarks.probes.fairface",
            "benchmarks.probes.coco_fgbg", "benchmarks.probes.linear", "benchmarks.runner.suite",
            "benchmarks.results.leaderboard_cli", "benchmarks.runner.speed_cli"} <= modules
    assert all(name.startswith("ssl-") for name in console_scripts())


@pytest.mark.parametrize("name", ["ssl-mpii-pose", "ssl-convert", "ssl-linear", "ssl-pretrain",
                                  "ssl-leaderboard", "ssl-fairface"])
def test_a_console_script_prints_its_help_under_its_name(name: str, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture) -> None:
    module, function = console_scripts()[name].split(":")
    entry = getattr(importlib.import_module(module), function)
    assert all(p.default is not inspect.Parameter.empty
               for p in inspect.signature(entry).parameters.values())  # callable as entry()
    monkeypatch.setattr(sys, "argv", [name, "--help"])
    with pytest.raises(SystemExit) as exited:
        entry()
    assert exited.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: {name} ")


def test_no_module_edits_sys_path() -> None:
    editing = [str(path.relative_to(REPO)) for root in ("pretrain", "transfer", "benchmarks",
                                                         "datasets", "tools")
               for path in (REPO / root).rglob("*.py")
               if "sys.path.insert" in path.read_text()]
    assert editing == []


def test_gpus_starts_the_command_under_torchrun_without_its_own_flag() -> None:
    from pretrain.cli import torchrun_command

    command = torchrun_command("pretrain.train", ["--gpus", "4", "--steps", "2", "--gpus=4"], 4)
    assert command[1:5] == ["-m", "torch.distributed.run", "--nproc_per_node", "4"]
    assert command[-4:] == ["-m", "pretrain.train", "--steps", "2"]
