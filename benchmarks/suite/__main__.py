"""``python -m benchmarks.suite``: runs :func:`benchmarks.runner.suite.main`."""
import sys

from benchmarks.runner.suite import main

sys.exit(main())
