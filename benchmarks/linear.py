"""``python benchmarks/linear.py``: a thin entry point, runs the task's script
:mod:`benchmarks.probes.linear`."""
import runpy

if __name__ == "__main__":
    runpy.run_module("benchmarks.probes.linear", run_name="__main__", alter_sys=True)
