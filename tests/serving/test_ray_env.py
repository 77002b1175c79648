"""On one host nothing of the gateway listens beyond loopback: the environment, the wrapper, the hook."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from serving.config import HttpConfig, parse_config
from serving.haproxy_wrapper import error_response, rewrite
from serving.loopback import to_loopback
from serving.ray_env import HAPROXY_MODE, ingress_env, is_loopback, single_host_env


def test_ingress_modes_map_to_rays_flags():
    assert ingress_env(HttpConfig()) == HAPROXY_MODE
    assert ingress_env(HttpConfig(ingress="proxy")) == {}


def _cfg(**http):
    return parse_config(
        {
            "variants": {"v": {"ref": "x@1"}},
            "routing": {"stable": "v"},
            "http": http,
            "admission": {"max_in_flight": 24, "retry_after_s": 2},
        }
    )


def test_one_host_binds_ray_to_loopback_and_wraps_haproxy(tmp_path):
    env = single_host_env(_cfg(), tmp_path)
    assert env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0"  # Ray takes 127.0.0.1 as its node IP
    assert env["SLIMGATE_LOOPBACK_ONLY"] == "1" and env["__RAY_WORKER_PROCESS_SETUP_HOOK_ENV_VAR"]
    wrapper = Path(env["RAY_SERVE_HAPROXY_BINARY_PATH"])
    assert wrapper.is_file() and os.access(wrapper, os.X_OK)
    assert Path(env["SLIMGATE_HAPROXY_BINARY"]).is_file()  # the install step provides HAProxy
    assert (env["SLIMGATE_EDGE_MAX_IN_FLIGHT"], env["SLIMGATE_RETRY_AFTER_S"]) == ("24", "2")
    assert "SLIMGATE_PUBLIC_HOST" not in env
    public = single_host_env(_cfg(host="0.0.0.0", port=8000, grpc_port=9000), tmp_path)
    assert (public["SLIMGATE_PUBLIC_HOST"], public["SLIMGATE_PUBLIC_PORTS"]) == ("0.0.0.0", "8000 9000")


# What Ray Serve 2.60's template renders, trimmed to the lines the wrapper touches.
RAY_CFG = """\
global
    log 127.0.0.1:514 local0 info
    stats socket /tmp/x/admin.sock mode 666 level admin expose-fd listeners
defaults
    errorfile 503 /tmp/x/500.http
frontend prometheus
    bind :9101
frontend http_frontend
    bind 127.0.0.1:8000
backend http-slimgate
    log global
    server SERVE_REPLICA_slimgate-Router-abc 127.0.0.1:30001 check observe layer4
    server SERVE_PROXY_ACTOR-fallback-1 127.0.0.1:8500 check backup
backend http-other
    server SERVE_REPLICA_other-Bare-1 127.0.0.1:30002 check
listen stats
  bind *:8404
frontend grpc_frontend
    bind 127.0.0.1:9000 proto h2
"""


def _binds(text):
    return [line.split()[1] for line in text.splitlines() if line.strip().startswith("bind")]


def test_the_wrapper_rebinds_every_listener_to_loopback():
    text = rewrite(RAY_CFG, {"SLIMGATE_LOOPBACK_ONLY": "1"})
    assert _binds(text) == ["127.0.0.1:9101", "127.0.0.1:8000", "127.0.0.1:8404", "127.0.0.1:9000"]
    assert "proto h2" in text and "maxconn" not in text  # nothing else changes
    public = rewrite(
        RAY_CFG,
        {
            "SLIMGATE_LOOPBACK_ONLY": "1",
            "SLIMGATE_PUBLIC_HOST": "0.0.0.0",
            "SLIMGATE_PUBLIC_PORTS": "8000 9000",
        },
    )
    assert _binds(public) == ["127.0.0.1:9101", "0.0.0.0:8000", "127.0.0.1:8404", "0.0.0.0:9000"]
    # Without settings, only the hardening: the admin socket is its owner's, the log is a ring.
    bare = rewrite(RAY_CFG, {})
    assert _binds(bare) == _binds(RAY_CFG) and "maxconn" not in bare


def test_the_wrapper_closes_the_admin_socket_to_other_users_and_logs_without_a_socket():
    text = rewrite(RAY_CFG, {})
    assert "stats socket /tmp/x/admin.sock mode 600 level admin expose-fd listeners" in text
    assert "    log ring@slimgate-log local0 info" in text and "514" not in text
    assert "ring slimgate-log" in text.splitlines()
    kept = rewrite(RAY_CFG, {"RAY_SERVE_HAPROXY_LOG_TARGET": "10.0.0.5:514"})
    assert "log 127.0.0.1:514 local0 info" in kept and "ring slimgate-log" not in kept  # the operator's


def test_the_wrapper_caps_each_router_replica_and_sheds_at_the_edge():
    text = rewrite(RAY_CFG, {"SLIMGATE_EDGE_MAX_IN_FLIGHT": "24", "SLIMGATE_RETRY_AFTER_S": "2"})
    lines = text.splitlines()
    router = lines[lines.index("backend http-slimgate") : lines.index("backend http-other")]
    assert any("SERVE_REPLICA_slimgate-Router-abc 127.0.0.1:30001 maxconn 24 check" in x for x in router)
    assert any("fallback-1 127.0.0.1:8500 check backup" in x and "maxconn" not in x for x in router)
    shed = [x for x in router if "http-request return status 503" in x]
    assert len(shed) == 2 and all("hdr retry-after 2" in x and "queue() gt 0" in x for x in shed)
    assert "path_beg /v2" in shed[0] and '\\"code\\": \\"overloaded\\"' in shed[1]
    other = lines[lines.index("backend http-other") :]
    assert not any("maxconn" in x for x in other)  # only the router's backend is capped
    assert "errorfile 503 /tmp/x/500.http" in text  # without a shed file, Ray's stays
    with_file = rewrite(RAY_CFG, {"SLIMGATE_EDGE_MAX_IN_FLIGHT": "24"}, {503: "/run/slimgate-503.http"})
    assert "errorfile 503 /run/slimgate-503.http" in with_file


def test_the_wrapper_bounds_slow_clients_and_keeps_their_timeout_headers_from_the_replicas():
    files = {400: "/run/slimgate-400.http", 408: "/run/slimgate-408.http"}
    text = rewrite(RAY_CFG, {"SLIMGATE_REQUEST_READ_TIMEOUT_S": "7"}, files)
    lines = text.splitlines()
    defaults = lines[lines.index("defaults") : lines.index("frontend prometheus")]
    for want in ("timeout http-request 7s", "option http-buffer-request", f"errorfile 400 {files[400]}"):
        assert f"    {want}" in defaults
    assert f"    errorfile 408 {files[408]}" in defaults
    front = lines[lines.index("frontend http_frontend") : lines.index("backend http-slimgate")]
    assert "    http-request del-header x-request-timeout-seconds" in front
    assert "    http-request del-header x-request-disconnect-disabled" in front
    assert "del-header" not in "\n".join(lines[lines.index("frontend grpc_frontend") :])
    capped = rewrite(RAY_CFG, {"SLIMGATE_MAX_CONNECTIONS_PER_CLIENT": "300"}).splitlines()
    for name in ("frontend http_frontend", "frontend grpc_frontend"):
        section = capped[capped.index(name) + 1 :]
        assert "    tcp-request connection reject if { sc0_conn_cur gt 300 }" in section[:6]
    assert sum("stick-table" in x for x in capped) == 2
    # Without the setting, nothing but the headers changes in those sections.
    bare = rewrite(RAY_CFG, {})
    assert "timeout http-request" not in bare and "http-buffer-request" not in bare
    assert "del-header x-request-timeout-seconds" in bare


def test_a_maxconn_beyond_the_descriptor_limit_is_lowered_to_fit(tmp_path):
    """HAProxy refuses to start when maxconn needs more descriptors than it may open."""
    from serving.haproxy_wrapper import fitting_maxconn
    from serving.ray_env import haproxy_binary

    text = RAY_CFG.replace("global\n", "global\n    maxconn 8192\n")
    assert "    maxconn 8192" in rewrite(text, {}, max_fds=1 << 20).splitlines()
    lowered = rewrite(text, {}, max_fds=20000)
    assert f"    maxconn {fitting_maxconn(20000)}" in lowered.splitlines() and "lowered" in lowered
    # What it is lowered to is what the real binary accepts under that limit.
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(
        "global\n    maxconn 8192\n    nbthread 4\n"
        "defaults\n    mode http\n    timeout connect 1s\n    timeout client 1s\n    timeout server 1s\n"
        "    option splice-request\n    option splice-response\n"
        f"frontend f\n    bind 127.0.0.1:{port}\n    http-request return status 200\n"
    )
    cfg.write_text(rewrite(cfg.read_text(), {}, max_fds=4096))
    proc = subprocess.Popen(
        ["bash", "-c", f'ulimit -n 4096 && exec "{haproxy_binary()}" -db -f {cfg}'],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        out, _ = proc.communicate(timeout=2)
    except subprocess.TimeoutExpired:  # still running: it started
        proc.kill()
        out, _ = proc.communicate()
    else:
        raise AssertionError(f"haproxy exited {proc.returncode}: {out}")
    assert "Cannot raise FD limit" not in out


def test_haproxys_own_errors_are_json_in_the_gateways_shape():
    import json

    for status, code in ((400, "bad_request"), (408, "request_timeout"), (503, "overloaded")):
        raw = error_response(status, 3)
        head, body = raw.split("\r\n\r\n", 1)
        assert head.startswith(f"HTTP/1.1 {status} ") and "content-type: application/json" in head
        assert f"content-length: {len(body)}" in head and "connection: close" in head
        assert json.loads(body)["error"]["code"] == code
        assert ("retry-after: 3" in head) == (status == 503)


def test_haproxy_accepts_the_rewritten_config(tmp_path):
    """The real binary parses what the wrapper writes (haproxy -c)."""
    from serving.ray_env import haproxy_binary

    cfg = tmp_path / "haproxy.cfg"
    text = RAY_CFG.replace("/tmp/x/admin.sock", str(tmp_path / "admin.sock")).replace(
        "defaults\n",
        "defaults\n    mode http\n    timeout connect 5s\n    timeout client 5s\n    timeout server 5s\n",
    )
    files = {}
    for status in (400, 408, 503):
        files[status] = str(tmp_path / f"slimgate-{status}.http")
        Path(files[status]).write_text(error_response(status, 1))
    env = {
        "SLIMGATE_LOOPBACK_ONLY": "1",
        "SLIMGATE_EDGE_MAX_IN_FLIGHT": "8",
        "SLIMGATE_REQUEST_READ_TIMEOUT_S": "10",
        "SLIMGATE_MAX_CONNECTIONS_PER_CLIENT": "512",
    }
    cfg.write_text(rewrite(text, env, files))
    r = subprocess.run([haproxy_binary(), "-c", "-f", str(cfg)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_the_wrapper_runs_the_real_binary_with_rays_arguments(tmp_path):
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(RAY_CFG.replace("/tmp/x/admin.sock", str(tmp_path / "admin.sock")))
    env = single_host_env(_cfg(), tmp_path)
    fake = tmp_path / "fake-haproxy"
    fake.write_text('#!/bin/sh\necho "ran $@"\n')
    fake.chmod(0o755)
    out = subprocess.run(
        [env["RAY_SERVE_HAPROXY_BINARY_PATH"], "-db", "-f", str(cfg), "-sf", "12"],
        env={**os.environ, **env, "SLIMGATE_HAPROXY_BINARY": str(fake)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == f"ran -db -f {cfg} -sf 12"
    assert "maxconn 64" in cfg.read_text() or "maxconn 24" in cfg.read_text()
    assert len((tmp_path / "haproxy.pids").read_text().split()) == 1


def test_wildcard_grpc_addresses_become_loopback():
    assert to_loopback("[::]:0") == "127.0.0.1:0"
    assert to_loopback("0.0.0.0:40001") == "127.0.0.1:40001"
    assert to_loopback("10.0.0.5:40001") == "10.0.0.5:40001"
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and not is_loopback("0.0.0.0")


def test_the_install_step_provides_the_haproxy_binary():
    from serving.ray_env import haproxy_binary

    out = subprocess.run([haproxy_binary(), "-v"], capture_output=True, text=True, check=True).stdout
    assert out.startswith("HAProxy version 2.")  # Ray Serve's ingress runs this binary


def test_ray_env_command_prints_what_ray_start_needs(capsys):
    from serving.cli import main

    assert main(["config", "ray-env"]) == 0
    out = capsys.readouterr().out
    assert "export RAY_SERVE_ENABLE_HA_PROXY=1" in out and "export RAY_SERVE_THROUGHPUT_OPTIMIZED=1" in out


def _state(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return None


def test_what_the_wrapper_starts_dies_with_the_process_that_started_it(tmp_path):
    import sys

    from support import poll_until

    # The parent (standing in for Ray's HAProxy manager) starts the wrapper on a stand-in binary
    # and exits at once, without stopping it, as a Ray torn down by a signalled process group does.
    code = (
        "import os, subprocess, sys\n"
        "env = {**os.environ, 'SLIMGATE_HAPROXY_BINARY': '/bin/sleep'}\n"
        "p = subprocess.Popen([sys.executable, '-m', 'serving.haproxy_wrapper', '600'], env=env)\n"
        "print(p.pid, flush=True)\n"
        "poll = __import__('time').sleep\n"
        "while open(f'/proc/{p.pid}/cmdline').read().split(chr(0))[0] != '/bin/sleep': poll(0.05)\n"
        "os._exit(0)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30)
    child = int(out.stdout.split()[0])
    poll_until(lambda: _state(child) in (None, "Z"), timeout_s=10, what="the orphaned binary to be stopped")
