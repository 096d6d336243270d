#!/usr/bin/env bash
# Run the test suite (builds .venv first if needed; idempotent and fast when already built).
#
#   bash tools/test.sh                 # everything CI runs: lint + all tests (measured times: README)
#   bash tools/test.sh -m "not slow"   # the quick subset (extra args go to pytest)
#   bash tools/test.sh -n 0 -k resume  # one process, e.g. to debug one test
#
# The tests run on one worker per core (pytest-xdist; at most 4: each takes 1-2 GiB), each test
# on one thread (tests/conftest.py); a worker that runs out of tests takes queued ones from the
# other (--dist worksteal), so the slowest tests do not wait in one worker's queue.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/tools/bootstrap.sh"
cd "$ROOT"
.venv/bin/ruff check --quiet .
exec .venv/bin/python -m pytest tests -q -p no:cacheprovider -n auto --maxprocesses 4 \
  --dist worksteal "$@"
