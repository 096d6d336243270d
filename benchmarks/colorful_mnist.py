"""``python benchmarks/colorful_mnist.py``: a thin entry point, runs the task's script
:mod:`benchmarks.probes.colorful_mnist`."""
import runpy

if __name__ == "__main__":
    runpy.run_module("benchmarks.probes.colorful_mnist", run_name="__main__", alter_sys=True)
