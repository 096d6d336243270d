"""``python benchmarks/fairface.py``: a thin entry point, runs the task's script
:mod:`benchmarks.probes.fairface`."""
import runpy
import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    runpy.run_module("benchmarks.probes.fairface", run_name="__main__", alter_sys=True)
