"""``python benchmarks/coco_fgbg.py``: a thin entry point, runs the task's script
:mod:`benchmarks.probes.coco_fgbg`."""
import runpy

if __name__ == "__main__":
    runpy.run_module("benchmarks.probes.coco_fgbg", run_name="__main__", alter_sys=True)
