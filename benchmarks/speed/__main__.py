"""``python -m benchmarks.speed``: runs :func:`benchmarks.runner.speed_cli.main`."""
import sys

from benchmarks.runner.speed_cli import main

sys.exit(main())
