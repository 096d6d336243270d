#!/usr/bin/env bash
# Run the test suite (builds .venv first if needed; idempotent and fast when already built).
#
#   bash tools/test.sh                 # everything CI runs: lint + all tests (measured times: README)
#   bash tools/test.sh -m "not slow"   # the quick subset (extra args go to pytest)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/tools/bootstrap.sh"
cd "$ROOT"
.venv/bin/ruff check --quiet .
exec .venv/bin/python -m pytest tests -q -p no:cacheprovider "$@"
