"""Shared fixtures: the synthetic data every test runs on, generated once per session.

One thread per process: the tests run tiny workloads (8-128 px images, a few samples), where a
second OpenMP or BLAS thread saves nothing and costs much on a machine whose cores are busy (a
DDP test's other rank, another job): a thread pool that waits for a descheduled thread turns a
1.5 s logistic regression into 70 s, a 0.3 s ResNet step into 3 s (measured on 2 loaded cores).
Set here, before numpy or torch is imported, so every subprocess a test starts inherits it; a
value already in the environment is kept.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")


def pytest_configure(config: pytest.Config) -> None:
    # The embedded default set a test might reach by omission goes to a folder of this run (each
    # xdist worker its own), never into the repository's data/ or the user's $SUITE_DATA_DIR.
    os.environ["SUITE_DATA_DIR"] = tempfile.mkdtemp(prefix="suite-test-data-")
    config.addinivalue_line(
        "markers", "slow: takes over ~15 s (CI still runs it; skip with -m 'not slow')")
    config.addinivalue_line(
        "markers", "reliability: faults and untrusted files across the suite (-m reliability)")


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(os.environ["SUITE_DATA_DIR"], ignore_errors=True)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Root of a ``tiny`` synthetic set (seed 0): ``coco/``, ``mpii/``, ``fairface/``,
    ``colorful_mnist/`` in the real layouts (see datasets/README.md). Shared: do not modify it;
    copy what you need to break into your own tmp_path."""
    from pretrain.synthetic import generate

    return generate(tmp_path_factory.mktemp("synthetic") / "tiny", size="tiny", seed=0)


@pytest.fixture(autouse=True)
def _fresh_mmengine_visualizers():
    """mmengine keeps one Visualizer per name for the whole process, writing into the run folder
    of the Runner that made it; a passed test's folder is deleted (pytest.ini), so a later
    in-process Runner would write its config into a deleted folder. Each test gets new ones."""
    yield
    import sys

    if "mmengine.visualization" in sys.modules:
        from mmengine.visualization import Visualizer

        for cls in (Visualizer, *_subclasses(Visualizer)):
            cls._instance_dict.clear()


def _subclasses(cls: type) -> list[type]:
    return [sub for direct in cls.__subclasses__() for sub in (direct, *_subclasses(direct))]
