#!/usr/bin/env bash
# The main job: from nothing to a leaderboard on the embedded synthetic default (CPU is fine).
#
#   bash tools/run_suite.sh [--out DIR] [suite-runner flags...]
#
# Builds .venv if needed (idempotent), then runs the suite runner with the given flags.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/tools/bootstrap.sh"
exec "$ROOT/.venv/bin/python" -m benchmarks.suite "$@"
