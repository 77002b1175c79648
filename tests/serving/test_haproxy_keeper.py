"""The HAProxy keeper (serving.haproxy_keeper) with the real binary: an HAProxy killed outright is
serving again from the same config within a fraction of a second; a soft stop passed on ends it
for good; a config HAProxy refuses is not retried in a loop."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
from support import poll_until

from serving.haproxy_keeper import MIN_LIFE_S, restart_args
from serving.ray_env import haproxy_binary


def _config(tmp_path: Path) -> tuple[Path, int]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(
        "global\n    maxconn 256\n"
        "defaults\n    mode http\n    timeout connect 1s\n    timeout client 5s\n    timeout server 5s\n"
        f"frontend f\n    bind 127.0.0.1:{port}\n"
        "    http-request return status 200 content-type text/plain string routed\n"
    )
    return cfg, port


def _keeper(cfg: Path) -> subprocess.Popen:
    code = "import sys; from serving.haproxy_keeper import keep; sys.exit(keep(sys.argv[1:]))"
    return subprocess.Popen(
        [sys.executable, "-c", code, haproxy_binary(), "-db", "-f", str(cfg)], cwd=Path(__file__).parents[2]
    )


def _child(keeper: subprocess.Popen) -> int:
    kids: list[psutil.Process] = []

    def found() -> bool:
        kids[:] = [k for k in psutil.Process(keeper.pid).children() if k.status() != psutil.STATUS_ZOMBIE]
        return bool(kids)

    poll_until(found, timeout_s=10, what="HAProxy under the keeper")
    return kids[0].pid


def _routed(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/", timeout=0.5).text == "routed"
    except httpx.HTTPError:
        return False


def test_an_haproxy_killed_outright_serves_again_at_once_and_a_soft_stop_ends_it(tmp_path):
    cfg, port = _config(tmp_path)
    keeper = _keeper(cfg)
    try:
        first = _child(keeper)
        poll_until(lambda: _routed(port), timeout_s=10, what="HAProxy to serve")
        time.sleep(MIN_LIFE_S + 0.1)  # it has lived long enough to be restarted
        os.kill(first, signal.SIGKILL)
        t0 = time.monotonic()
        poll_until(lambda: _routed(port), timeout_s=5, every_s=0.01, what="HAProxy to serve again")
        assert time.monotonic() - t0 < 2.0
        second = _child(keeper)
        assert second != first and keeper.poll() is None
        keeper.send_signal(signal.SIGUSR1)  # a reload's soft stop (or slimgate's drain), passed on
        assert keeper.wait(timeout=10) == 0
        assert not psutil.pid_exists(second) or psutil.Process(second).status() == psutil.STATUS_ZOMBIE
    finally:
        keeper.kill()


def test_a_config_haproxy_refuses_is_not_retried_in_a_loop(tmp_path):
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text("global\n    no-such-keyword\n")
    keeper = _keeper(cfg)
    assert keeper.wait(timeout=20) != 0


def test_a_restart_drops_what_belonged_to_the_reload():
    args = ["-db", "-f", "/x/haproxy.cfg", "-dR", "-sf", "12", "34", "-x", "/x/admin.sock"]
    assert restart_args(args) == ["-db", "-f", "/x/haproxy.cfg", "-dR"]
    assert restart_args(["-sf", "5", "-db", "-f", "c"]) == ["-db", "-f", "c"]
