"""``python -m benchmarks.leaderboard``: a thin entry point (its ``__main__`` runs
:func:`benchmarks.results.leaderboard_cli.main`)."""
