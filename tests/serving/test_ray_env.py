"""On one host nothing of the gateway listens beyond loopback: the environment, the wrapper, the hook."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from serving.config import HttpConfig
from serving.loopback import to_loopback
from serving.ray_env import HAPROXY_MODE, ingress_env, is_loopback, single_host_env

HAPROXY_CFG = """\
global
    stats socket /tmp/x/admin.sock mode 666 level admin
frontend prometheus
    bind :9101
frontend http_frontend
    bind 127.0.0.1:8000
listen stats
  bind *:8404
frontend grpc_frontend
    bind 127.0.0.1:9000 proto h2
"""


def test_ingress_modes_map_to_rays_flags():
    assert ingress_env(HttpConfig()) == HAPROXY_MODE
    assert ingress_env(HttpConfig(ingress="proxy")) == {}


def test_one_host_binds_ray_to_loopback_and_wraps_haproxy(tmp_path):
    env = single_host_env(HttpConfig(), tmp_path)
    assert env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0"  # Ray takes 127.0.0.1 as its node IP
    assert env["SLIMGATE_LOOPBACK_ONLY"] == "1" and env["__RAY_WORKER_PROCESS_SETUP_HOOK_ENV_VAR"]
    wrapper = Path(env["RAY_SERVE_HAPROXY_BINARY_PATH"])
    assert wrapper.is_file() and os.access(wrapper, os.X_OK)
    assert Path(env["SLIMGATE_HAPROXY_BINARY"]).is_file()  # the install step provides HAProxy
    assert "SLIMGATE_PUBLIC_HOST" not in env
    public = single_host_env(HttpConfig(host="0.0.0.0", port=8000), tmp_path)
    assert (public["SLIMGATE_PUBLIC_HOST"], public["SLIMGATE_PUBLIC_PORT"]) == ("0.0.0.0", "8000")


def _run_wrapper(tmp_path, extra_env):
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(HAPROXY_CFG)
    env = single_host_env(HttpConfig(), tmp_path)
    fake = tmp_path / "fake-haproxy"
    fake.write_text('#!/bin/sh\necho "ran $@"\n')
    fake.chmod(0o755)
    run_env = {**os.environ, **env, "SLIMGATE_HAPROXY_BINARY": str(fake), **extra_env}
    out = subprocess.run(
        [env["RAY_SERVE_HAPROXY_BINARY_PATH"], "-db", "-f", str(cfg), "-sf", "12"],
        env=run_env,
        capture_output=True,
        text=True,
        check=True,
    )
    return cfg.read_text(), out.stdout, (tmp_path / "haproxy.pids").read_text().split()


def test_the_wrapper_rebinds_every_listener_to_loopback_and_runs_haproxy_unchanged(tmp_path):
    text, stdout, pids = _run_wrapper(tmp_path, {})
    binds = [line.split()[1] for line in text.splitlines() if line.strip().startswith("bind")]
    assert binds == ["127.0.0.1:9101", "127.0.0.1:8000", "127.0.0.1:8404", "127.0.0.1:9000"]
    assert stdout.strip() == f"ran -db -f {tmp_path / 'haproxy.cfg'} -sf 12" and len(pids) == 1


def test_the_wrapper_puts_only_the_gateways_port_on_a_public_address(tmp_path):
    text, _, _ = _run_wrapper(tmp_path, {"SLIMGATE_PUBLIC_HOST": "0.0.0.0", "SLIMGATE_PUBLIC_PORT": "8000"})
    binds = [line.split()[1] for line in text.splitlines() if line.strip().startswith("bind")]
    assert binds == ["127.0.0.1:9101", "0.0.0.0:8000", "127.0.0.1:8404", "127.0.0.1:9000"]


def test_wildcard_grpc_addresses_become_loopback():
    assert to_loopback("[::]:0") == "127.0.0.1:0"
    assert to_loopback("0.0.0.0:40001") == "127.0.0.1:40001"
    assert to_loopback("10.0.0.5:40001") == "10.0.0.5:40001"
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and not is_loopback("0.0.0.0")
