"""``python -m benchmarks.leaderboard``: runs :func:`benchmarks.results.leaderboard_cli.main`."""
import sys

from benchmarks.results.leaderboard_cli import main

sys.exit(main())
