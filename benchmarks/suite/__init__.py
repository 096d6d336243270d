"""``python -m benchmarks.suite``: a thin entry point (its ``__main__`` runs
:func:`benchmarks.runner.suite.main`)."""
