"""The report's reader of the run's speed record, ``<out>/state/speed.json`` (written by the
runner's time estimate, :func:`benchmarks.runner.speed.record`): no import of the runner.
"""
from __future__ import annotations

import json
from pathlib import Path


def speed_markdown(out: Path) -> list[str]:
    """The report's section on the run's speed: the machine's reference speed beside the
    budget's, the expected and the actual wall time, and where the path checks ran."""
    path = out / "state" / "speed.json"
    if not path.exists():
        return []
    run = json.loads(path.read_text())
    lines = ["## Speed", "",
             f"Reference speed of this machine: {run['images_per_s']:.1f} images/s "
             f"(`{run['reference_benchmark']}`; {run['one_thread']:.1f} on one thread, which "
             f"the estimate uses); the `{run['budget']}` budget is sized for "
             f"{run['reference_images_per_s']:.0f} images/s or more. Divide a time by "
             f"reference speed / {run['reference_images_per_s']:.0f} to compare machines."]
    if run.get("expected_s") is not None:
        lines.append(f"Expected wall time at the start: {run['expected_s'] / 60:.1f} min; "
                     + (f"actual {run['wall_s'] / 60:.1f} min" if "wall_s" in run
                        else "not finished") + f" (--jobs {run['jobs']}).")
    checks = run.get("path_checks") or {}
    if checks.get("stages"):
        lines.append(f"Path checks ({', '.join(checks['stages'])}) ran on "
                     f"{', '.join(checks['backbones'])} only: at this budget (a few engine "
                     "iterations, a fraction of an epoch of fine-tuning) they prove that their "
                     "path works and cannot rank backbones; every other stage ran on every "
                     "backbone.")
    return lines + [""]
