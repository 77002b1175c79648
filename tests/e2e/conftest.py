"""End-to-end fixtures: a tiny real registry and a real gateway (Ray Serve over HTTP) started by its CLI.

The gateway runs as ``slimgate serve`` in a subprocess, exactly as a user starts it; tests
talk to it over HTTP and change it with ``slimgate apply``. The registry is built by the real
factory on a tiny recipe whose gate accepts any retention, so that every variant is
deployable whatever a few training steps achieve.
"""

from __future__ import annotations

import pytest
from support.e2e import CONTROLLER_PORT, METRICS_PORT, PORT, Gateway, PrometheusServer, serving


# Module scope: each test module starts its own gateway, and the last one is stopped before the
# multi-node tests start a Ray cluster of their own on this machine.
@pytest.fixture(scope="module")
def gateway(registry_root, tmp_path_factory):
    cfg_dir = tmp_path_factory.mktemp("gateway-config")
    gw = Gateway(f"http://127.0.0.1:{PORT}", cfg_dir, registry_root)
    with serving(gw.write_config(), gw):
        yield gw


@pytest.fixture(scope="module")
def prometheus(gateway, tmp_path_factory):
    """A real Prometheus server (Debian's package) scraping the gateway's Ray metrics every second.

    It also scrapes the controller's port, where the tests that run `slimgate controller run` put it.
    """
    targets = [f"127.0.0.1:{METRICS_PORT}", f"127.0.0.1:{CONTROLLER_PORT}"]
    server = PrometheusServer(tmp_path_factory.mktemp("prometheus"), 19090, targets)
    yield server.url
    server.stop()
