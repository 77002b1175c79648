"""The keeper: HAProxy (the real binary) killed outright is back at once with its config, and Ray's
view of it (the pid the admin socket reports, reloads with ``-sf``/``-x``, stops) still holds."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from support import poll_until

from serving.haproxy_keeper import (
    MAX_RESTARTS,
    PidRewriter,
    answering_pid,
    child_args,
    child_pid_file,
    move_admin_socket,
    read_pid,
    restart_args,
)
from serving.haproxy_wrapper import EDITED, rewrite
from serving.ray_env import haproxy_binary


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _config(tmp_path: Path, port: int, routes: bool = True) -> Path:
    """What Ray's template gives, cut to what the keeper touches: the admin socket and a route."""
    cfg = tmp_path / "haproxy.cfg"
    route = "    use_backend ok if { path_beg / }\n" if routes else ""
    cfg.write_text(
        "global\n"
        f"    stats socket {tmp_path}/admin.sock mode 666 level admin expose-fd listeners\n"
        "    stats timeout 30s\n"
        "    hard-stop-after 5s\n"
        "defaults\n    mode http\n    timeout connect 1s\n    timeout client 5s\n    timeout server 5s\n"
        f"frontend http_frontend\n    bind 127.0.0.1:{port}\n{route}    default_backend default_backend\n"
        "backend default_backend\n"
        '    http-request return status 404 content-type text/plain lf-string "Path not found"\n'
        'backend ok\n    http-request return status 200 content-type text/plain string "ok"\n'
    )
    return cfg


def _start(cfg: Path, *extra: str) -> subprocess.Popen[bytes]:
    """The wrapper as Ray's HAProxy manager starts it."""
    env = {**os.environ, "SLIMGATE_HAPROXY_BINARY": haproxy_binary()}
    args = [sys.executable, "-m", "serving.haproxy_wrapper", "-db", "-f", str(cfg), "-dR", *extra]
    return subprocess.Popen(args, env=env, stderr=subprocess.PIPE)


def _status(port: int) -> int | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/predict", timeout=2) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


@pytest.fixture
def keeper(tmp_path):
    port = _free_port()
    cfg = _config(tmp_path, port)
    sock = str(tmp_path / "admin.sock")
    proc = _start(cfg)
    procs = [proc]
    # Ray's own check that the HAProxy it spawned is up: the admin socket reports that pid.
    poll_until(lambda: answering_pid(sock) == proc.pid, timeout_s=20, what="the keeper's pid on the socket")
    yield proc, port, sock, cfg, procs
    for p in procs:
        _stop(p)


def _stop(p: subprocess.Popen[bytes]) -> None:
    if p.poll() is None:
        p.kill()
        p.wait()
    if p.stderr:
        p.stderr.close()


def _child(sock: str, keeper_pid: int) -> int:
    pid = read_pid(child_pid_file(sock, keeper_pid))
    assert pid is not None and pid != keeper_pid
    return pid


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_haproxy_killed_outright_is_back_with_its_routes_and_ray_sees_the_same_pid(keeper):
    proc, port, sock, cfg, _ = keeper
    assert cfg.read_text().startswith(EDITED) and f"{sock}.haproxy mode 600" in cfg.read_text()
    assert _status(port) == 200
    child = _child(sock, proc.pid)
    assert Path(f"/proc/{child}/comm").read_text().strip() == "haproxy"  # `pidof haproxy` finds it
    os.kill(child, signal.SIGKILL)
    poll_until(lambda: _child(sock, proc.pid) != child, timeout_s=10, what="a new HAProxy")
    statuses = [poll_until(lambda: _status(port), timeout_s=10, what="an answer from the new HAProxy")]
    statuses += [_status(port) for _ in range(20)]
    assert statuses == [200] * 21  # its routes: the file the keeper restarted it from
    assert proc.poll() is None and answering_pid(sock) == proc.pid  # Ray noticed nothing
    current = _child(sock, proc.pid)
    proc.send_signal(signal.SIGUSR1)  # Ray's (and slimgate's) soft stop
    assert proc.wait(timeout=10) == 0 and not _alive(current)
    err = proc.stderr.read() if proc.stderr else b""
    assert b"died (signal SIGKILL); restarting it with its routes" in err


def test_a_reload_hands_over_from_haproxy_to_haproxy_and_the_old_keeper_leaves(keeper):
    old, port, sock, cfg, procs = keeper
    old_child = _child(sock, old.pid)
    # Ray reloads by starting the binary again with -sf <old pid> and -x <its socket path>.
    new = _start(cfg, "-sf", str(old.pid), "-x", sock)
    procs.append(new)
    poll_until(lambda: answering_pid(sock) == new.pid, timeout_s=20, what="the new keeper's pid")
    new_child = _child(sock, new.pid)
    argv = Path(f"/proc/{new_child}/cmdline").read_bytes().split(b"\0")
    assert argv[-5:-1] == [b"-sf", str(old_child).encode(), b"-x", f"{sock}.haproxy".encode()]
    assert old.wait(timeout=10) == 0 and not _alive(old_child)  # soft-stopped, then the keeper left
    assert _status(port) == 200
    # The new keeper now restarts its own HAProxy; the old one's death was a handover, not a crash.
    os.kill(new_child, signal.SIGKILL)
    poll_until(lambda: _status(port) == 200 and _child(sock, new.pid) != new_child, timeout_s=10, what="back")


def test_haproxy_does_not_outlive_a_keeper_killed_outright(keeper):
    proc, _, sock, _, _ = keeper
    child = _child(sock, proc.pid)
    proc.kill()  # what Ray's manager does when it stops HAProxy
    proc.wait()
    poll_until(lambda: not _alive(child), timeout_s=10, what="HAProxy to stop with its keeper")


def test_a_haproxy_that_keeps_dying_is_given_up_so_ray_sees_the_crash(keeper):
    proc, port, sock, _, _ = keeper
    for _ in range(MAX_RESTARTS + 1):
        child = poll_until(lambda: _status(port) == 200 and _child(sock, proc.pid), timeout_s=10, what="up")
        os.kill(child, signal.SIGKILL)
        poll_until(lambda c=child: not _alive(c), timeout_s=10, what="the child to die")
    assert proc.wait(timeout=10) == 128 + signal.SIGKILL
    assert b"giving up" in (proc.stderr.read() if proc.stderr else b"")


def test_before_the_first_route_every_request_gets_503_with_retry_after_not_404(tmp_path):
    port = _free_port()
    cfg = _config(tmp_path, port, routes=False)
    proc = _start(cfg)
    try:
        poll_until(lambda: _status(port) is not None, timeout_s=20, what="HAProxy up")
        for path in ("/v1/predict", "/v2/models/x/infer", "/anything"):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2)
            except urllib.error.HTTPError as e:
                assert e.code == 503 and e.headers["retry-after"] == "1"
                assert b"no route yet" in e.read()
            else:
                raise AssertionError(f"{path} answered 2xx with no route")
    finally:
        _stop(proc)
    # With a route, the template's 404 for what matches none stays a 404.
    assert "status 404" in rewrite(_config(tmp_path, port).read_text(), {})


def test_reload_arguments_point_haproxy_at_haproxy():
    children = {41: 4100}
    args = ["-db", "-f", "c.cfg", "-sf", "41", "77", "-x", "/s/admin.sock", "-dR"]
    got = child_args(args, "/s/admin.sock", children.get)
    assert got == ["-db", "-f", "c.cfg", "-sf", "4100", "77", "-x", "/s/admin.sock.haproxy", "-dR"]
    assert restart_args(args) == ["-db", "-f", "c.cfg", "-dR"]
    text, path = move_admin_socket("global\n    stats socket /s/admin.sock mode 600 level admin\n")
    assert path == "/s/admin.sock" and "stats socket /s/admin.sock.haproxy mode 600" in text
    assert move_admin_socket(text) == (text, "/s/admin.sock")  # moved once


def test_only_the_childs_pid_line_is_rewritten_however_the_stream_is_cut():
    answer = b"Name: HAProxy\nPid: 4100\nPpid: 41\nUptime: 0d\nPid: 41000\n"
    for cut in range(1, len(answer)):
        r = PidRewriter(4100, 41)
        out = r.feed(answer[:cut]) + r.feed(answer[cut:]) + r.flush()
        assert out == b"Name: HAProxy\nPid: 41\nPpid: 41\nUptime: 0d\nPid: 41000\n", cut
    prompt = PidRewriter(4100, 41)
    assert prompt.feed(b"> ") == b"> "  # an interactive prompt is not held back
