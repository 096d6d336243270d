"""Shared fixtures: the synthetic data every test runs on, generated once per session."""
from __future__ import annotations

from pathlib import Path

import pytest

from pretrain.synthetic import generate


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "slow: takes over ~15 s (CI still runs it; skip with -m 'not slow')")
    config.addinivalue_line(
        "markers", "reliability: faults and untrusted files across the suite (-m reliability)")


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Root of a ``tiny`` synthetic set (seed 0): ``coco/``, ``mpii/``, ``fairface/``,
    ``colorful_mnist/`` in the real layouts (see datasets/README.md). Shared: do not modify it;
    copy what you need to break into your own tmp_path."""
    return generate(tmp_path_factory.mktemp("synthetic") / "tiny", size="tiny", seed=0)
