"""``python benchmarks/coco_fgbg.py``: a thin entry point, runs the task's script
:mod:`benchmarks.probes.coco_fgbg`."""
import runpy
import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    runpy.run_module("benchmarks.probes.coco_fgbg", run_name="__main__", alter_sys=True)
