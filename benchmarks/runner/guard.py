"""A stage's guard: the process the local runner starts for each stage, so that no stage outlives
the runner, however the runner ends.

    python -m benchmarks.runner.guard RUNNER_PID COMMAND...

The runner starts the guard as the leader of a new process group (its own session); the guard
runs COMMAND as its child in that group, and asks Linux (``prctl(PR_SET_PDEATHSIG)``) for SIGTERM
when the runner dies, SIGKILL included. On SIGTERM, SIGINT or SIGHUP (the runner's death, or the
runner ending its stages) it sends SIGTERM to the whole group, waits up to
:data:`GRACE_SECONDS`, then SIGKILLs the group, itself included. A grandchild that leaves the
group (``setsid``) is out of reach, as it is for every process-group based stop. Otherwise its
exit status is COMMAND's. Standard library only: it starts in a few milliseconds.
"""
from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time

PR_SET_PDEATHSIG = 1        # linux/prctl.h
GRACE_SECONDS = 10.0
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def die_with_parent(signum: int = signal.SIGTERM) -> None:
    """Ask Linux to send ``signum`` to this process when its parent dies (no-op elsewhere)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0)


def _end_group(child: subprocess.Popen) -> None:
    """SIGTERM the group (the guard ignores it), SIGKILL what is left after the grace period."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    os.killpg(0, signal.SIGTERM)
    deadline = time.monotonic() + GRACE_SECONDS
    while child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    os.killpg(0, signal.SIGKILL)  # the stage's children too; this process ends here


def main(argv: list[str]) -> int:
    runner, command = int(argv[0]), argv[1:]
    die_with_parent()
    if os.getppid() != runner:  # the runner died before the request above took effect
        return 128 + signal.SIGTERM
    stop: list[int] = []
    for sig in STOP_SIGNALS:
        signal.signal(sig, lambda signum, _: stop.append(signum))
    child = subprocess.Popen(command)
    while child.poll() is None:
        if stop:
            _end_group(child)
        time.sleep(0.1)
    return child.returncode if child.returncode >= 0 else 128 - child.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
