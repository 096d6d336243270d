"""``python -m benchmarks.speed``: a thin entry point (its ``__main__`` runs
:func:`benchmarks.runner.speed_cli.main`)."""
