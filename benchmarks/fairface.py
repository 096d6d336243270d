"""``python benchmarks/fairface.py``: a thin entry point, runs the task's script
:mod:`benchmarks.probes.fairface`."""
import runpy

if __name__ == "__main__":
    runpy.run_module("benchmarks.probes.fairface", run_name="__main__", alter_sys=True)
