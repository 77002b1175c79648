"""``slimgate serve``'s outer process: a stop signal to the service's process group stops the
gateway in order, within a bounded time, with status 0.

systemd, a terminal and most process managers stop a service with SIGTERM to its process group.
Ray's ``gcs_server`` and ``raylet`` are in the group of the process that started them, so they
died at once, and the gateway's own shutdown then waited a minute for a GCS that was gone and
exited 1. So the gateway runs as a child in a session of its own (every Ray process it starts
stays in that session and dies with it), and this process, alone in the service's group, turns
SIGTERM, SIGINT or SIGHUP into one orderly stop of the child: HAProxy stops accepting and finishes
what it accepted, then Serve, then Ray (:func:`serving.launcher.run_gateway`). Past ``grace_s``
the child's session is killed, and the exit status says so. If this process is killed outright,
the kernel sends the child SIGTERM (``PR_SET_PDEATHSIG``), so nothing outlives it unasked.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

from serving.process_fate import stop_with_parent

IN_SESSION = "SLIMGATE_SERVE_IN_SESSION"
KILLED_STATUS = 1


def _kill_session(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def supervise(command: list[str], grace_s: float) -> int:
    """Run ``command`` (the gateway) in its own session until it exits or a stop signal comes; the
    child's exit status, or 1 when it had to be killed after ``grace_s``."""
    child = subprocess.Popen(
        command,
        env={**os.environ, IN_SESSION: "1"},
        start_new_session=True,
        preexec_fn=stop_with_parent,
    )
    deadline: list[float] = []

    def stop(signum: int, _frame: object) -> None:
        if not deadline:
            deadline.append(time.monotonic() + grace_s)
            print(f"slimgate: {signal.Signals(signum).name}: stopping the gateway", file=sys.stderr)
            child.send_signal(signal.SIGTERM)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, stop)
    try:
        while True:
            try:
                status = child.wait(timeout=0.2)
                break
            except subprocess.TimeoutExpired:
                if deadline and time.monotonic() > deadline[0]:
                    print(f"slimgate: the gateway did not stop within {grace_s:g} s; killed", file=sys.stderr)
                    _kill_session(child.pid)
                    child.wait()
                    return KILLED_STATUS
    finally:
        # Whatever is still in the child's session (its own children that outlived it) goes too.
        _kill_session(child.pid)
    return status
