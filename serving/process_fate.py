"""Processes that must not outlive the one that started them (Linux ``PR_SET_PDEATHSIG``)."""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def stop_with_parent() -> None:
    """Ask Linux to SIGTERM this process when the one that started it dies, however it dies.

    It survives ``exec``. Called in a child before it runs its program (``preexec_fn``) or at the
    start of one: without it, a process left behind by a parent killed outright (a service
    manager's SIGKILL, a Ray torn down without a goodbye) would keep the gateway's port.
    """
    if not sys.platform.startswith("linux"):
        return
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    if os.getppid() == 1:  # the parent died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


if __name__ == "__main__":
    # ``python -S process_fate.py BINARY ARGS...``: run BINARY as this process, stopped with its
    # parent. A spawner with threads cannot do this in a ``preexec_fn`` safely; an exec step can.
    stop_with_parent()
    os.execv(sys.argv[1], sys.argv[1:])
