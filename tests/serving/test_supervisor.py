"""`slimgate serve`'s outer process (serving.supervisor), with plain Python children standing in for
the gateway: a stop signal to its process group reaches only it, it asks the child to stop, waits
at most its grace, and nothing of the child's session outlives it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
from support import poll_until

from serving.supervisor import KILLED_STATUS


def _child(tmp_path: Path, on_term: str) -> Path:
    """A gateway stand-in: it writes its pid and its own child's (a sleeper in its session), then
    waits; on SIGTERM it runs ``on_term``. Every signal it gets is counted in ``signals``."""
    script = tmp_path / "child.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import os, signal, subprocess, sys, time
            from pathlib import Path
            here = Path({str(tmp_path)!r})
            sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
            def term(*_):
                with open(here / "signals", "a") as f:
                    f.write("TERM\\n")
                {on_term}
            signal.signal(signal.SIGTERM, term)
            (here / "pids").write_text(f"{{os.getpid()}} {{sleeper.pid}}")
            while True:
                time.sleep(0.1)
            """
        )
    )
    return script


def _supervised(tmp_path: Path, script: Path, grace_s: float) -> subprocess.Popen:
    command = [sys.executable, str(script)]
    code = f"import sys; from serving.supervisor import supervise as s; sys.exit(s({command!r}, {grace_s}))"
    proc = subprocess.Popen(
        [sys.executable, "-c", code], start_new_session=True, cwd=Path(__file__).parents[2]
    )
    poll_until(lambda: (tmp_path / "pids").exists(), timeout_s=30, what="the child's pids")
    return proc


def _gone(pids: list[int]) -> bool:
    return all(not psutil.pid_exists(p) or psutil.Process(p).status() == psutil.STATUS_ZOMBIE for p in pids)


def test_a_group_sigterm_reaches_the_child_once_and_its_status_is_returned(tmp_path):
    proc = _supervised(tmp_path, _child(tmp_path, "time.sleep(0.3); sys.exit(0)"), grace_s=10)
    pids = [int(p) for p in (tmp_path / "pids").read_text().split()]
    assert os.getsid(pids[0]) != os.getsid(proc.pid)  # the child has a session of its own
    os.killpg(proc.pid, signal.SIGTERM)  # as systemd or a terminal stops the service's group
    assert proc.wait(timeout=20) == 0
    assert (tmp_path / "signals").read_text() == "TERM\n"  # from the supervisor, not the group signal
    poll_until(lambda: _gone(pids), timeout_s=10, what="the child and its sleeper to be gone")


def test_a_child_that_overruns_its_grace_is_killed_with_its_session(tmp_path):
    proc = _supervised(tmp_path, _child(tmp_path, "pass"), grace_s=1.0)  # ignores the stop
    pids = [int(p) for p in (tmp_path / "pids").read_text().split()]
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=20) == KILLED_STATUS
    assert time.monotonic() - t0 < 10
    poll_until(lambda: _gone(pids), timeout_s=10, what="the child and its sleeper to be killed")


def test_the_child_is_told_to_stop_when_the_supervisor_is_killed_outright(tmp_path):
    proc = _supervised(tmp_path, _child(tmp_path, "sys.exit(0)"), grace_s=10)
    pids = [int(p) for p in (tmp_path / "pids").read_text().split()]
    proc.kill()
    proc.wait(timeout=10)
    poll_until(lambda: not psutil.pid_exists(pids[0]), timeout_s=10, what="the orphaned child to stop")
    assert (tmp_path / "signals").read_text() == "TERM\n"
    os.kill(pids[1], signal.SIGKILL)  # the sleeper is the child's to stop; a real gateway's Ray does
