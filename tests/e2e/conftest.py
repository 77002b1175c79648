"""End-to-end fixtures: a tiny real registry and a real gateway (Ray Serve over HTTP) started by its CLI.

The gateway runs as ``slimgate serve`` in a subprocess, exactly as a user starts it; tests
talk to it over HTTP and change it with ``slimgate apply``. The registry is built by the real
factory on a tiny recipe whose gate accepts any retention, so that every variant is
deployable whatever a few training steps achieve.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from support import poll_until, stop_process
from support.e2e import CONTROLLER_PORT, METRICS_PORT, PORT, TOKEN, Gateway, PrometheusServer


# Module scope: each test module starts its own gateway, and the last one is stopped before the
# multi-node tests start a Ray cluster of their own on this machine.
@pytest.fixture(scope="module")
def gateway(registry_root, tmp_path_factory):
    cfg_dir = tmp_path_factory.mktemp("gateway-config")
    gw = Gateway(f"http://127.0.0.1:{PORT}", cfg_dir, registry_root)
    config = gw.write_config()
    ready = cfg_dir / "ready"
    env = {**os.environ, "SLIMGATE_ADMIN_TOKEN": TOKEN, "RAY_USAGE_STATS_ENABLED": "0"}
    log = open(cfg_dir / "serve.log", "w")  # noqa: SIM115 - closed at teardown
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "serving.cli",
            "serve",
            str(config),
            "--metrics-port",
            str(METRICS_PORT),
            "--ready-file",
            str(ready),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )

    def started() -> bool:
        if ready.exists():
            return True
        if proc.poll() is not None:
            raise AssertionError(f"slimgate serve exited with {proc.returncode}")
        return False

    try:
        poll_until(started, timeout_s=240, every_s=0.5, what="the gateway's ready file")
    except AssertionError as err:
        proc.kill()
        log.close()
        tail = (cfg_dir / "serve.log").read_text()[-5000:]
        raise RuntimeError(f"gateway did not start ({err}):\n{tail}") from None
    gw.pid = proc.pid
    yield gw
    gw.client.close()
    stop_process(proc, signal.SIGTERM, timeout_s=60)
    log.close()
    subprocess.run(
        ["ray", "stop", "--force"],
        capture_output=True,
        env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"},
    )


@pytest.fixture(scope="module")
def prometheus(gateway, tmp_path_factory):
    """A real Prometheus server (Debian's package) scraping the gateway's Ray metrics every second.

    It also scrapes the controller's port, where the tests that run `slimgate controller run` put it.
    """
    targets = [f"127.0.0.1:{METRICS_PORT}", f"127.0.0.1:{CONTROLLER_PORT}"]
    server = PrometheusServer(tmp_path_factory.mktemp("prometheus"), 19090, targets)
    yield server.url
    server.stop()
