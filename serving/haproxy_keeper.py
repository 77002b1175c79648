"""Keeps the gateway's HAProxy running: one that dies unasked is started again at once, with the
routes it had.

Ray Serve's HAProxy manager notices a dead HAProxy only through its health checks, and then
replaces its whole actor, whose new HAProxy starts with no routes: killing HAProxy under load was a
30-second outage, and valid requests got 404 until the routes came back. So the wrapper
(:mod:`serving.haproxy_wrapper`) does not ``exec`` HAProxy: it stays as the process Ray started (its
command line is the same, which is how Ray recognises its HAProxy processes) and runs HAProxy as
its child. Every signal Ray or slimgate sends it (a soft stop ``SIGUSR1`` from a reload's ``-sf``,
``SIGTERM``, ...) is passed on, and it exits as its child does. A child that dies without having
been asked to is restarted from the same config file, which holds the routes of the last reload,
so within a fraction of a second the gateway routes again; the admin socket answers again at the
same path, so Ray's manager sees a healthy HAProxy and keeps it. A child that keeps dying soon after
its start (a config it refuses) is not restarted in a loop: the keeper exits with its status.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence

# Signals passed on to HAProxy as they come: stops (hard, soft), and the reload protocol's own.
FORWARDED = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGHUP,
    signal.SIGTTOU,
    signal.SIGTTIN,
)
STOPS = {signal.SIGTERM, signal.SIGINT, signal.SIGUSR1}
# A child that lived less than this after its start failed to start: not restarted.
MIN_LIFE_S = 1.0


def restart_args(args: Sequence[str]) -> list[str]:
    """The arguments of a restart: those of the first start, without what belonged to a reload
    (``-sf``/``-st`` and the pids after them: gone; ``-x``: the dead process's socket transfer)."""
    out: list[str] = []
    skipping = False
    it = iter(args)
    for a in it:
        if a in ("-sf", "-st"):
            skipping = True
            continue
        if skipping and a.isdigit():
            continue
        skipping = False
        if a == "-x":
            next(it, None)
            continue
        out.append(a)
    return out


def keep(
    command: list[str],
    *,
    preexec: Callable[[], None] | None = None,
    on_start: Callable[[int], None] | None = None,
    log: Callable[[str], None] = lambda m: print(m, file=sys.stderr, flush=True),
) -> int:
    """Run ``command`` (HAProxy) as a child until it exits after a stop signal; restart it when it
    dies otherwise. Returns the exit status to leave with."""
    asked: list[int] = []
    child: list[subprocess.Popen] = []

    def forward(signum: int, _frame: object) -> None:
        if signum in STOPS:
            asked.append(signum)
        if child:
            with contextlib.suppress(ProcessLookupError):
                child[0].send_signal(signum)

    for sig in FORWARDED:
        signal.signal(sig, forward)
    args = list(command)
    while not asked:
        started = time.monotonic()
        proc = subprocess.Popen(args, preexec_fn=preexec)
        child[:] = [proc]
        if on_start:
            on_start(proc.pid)
        status = proc.wait()
        if asked or status == 0:
            return 0 if status < 0 else status  # stopped as asked (by the signal it was passed)
        if time.monotonic() - started < MIN_LIFE_S:
            log(f"slimgate-haproxy: HAProxy exited with {status} right after its start; not restarted")
            return status if status > 0 else 1
        log(f"slimgate-haproxy: HAProxy (pid {proc.pid}) died unasked ({status}); restarting it")
        args = [command[0], *restart_args(command[1:])]
    return 0
