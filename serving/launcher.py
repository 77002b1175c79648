"""``slimgate serve``: a Ray cluster of one host, the gateway deployed on it, served until stopped.

Everything Ray starts listens on loopback (:mod:`serving.ray_env`); only the gateway's own port
binds ``http.host``. Before anything is deployed, the controller's last decisions are put back
into the config (:mod:`serving.controller.restore`): a restart never hands a rolled-back candidate
its traffic again.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from serving import ray_rest
from serving.config import GatewayConfig, check_host_gpus, pin_refs
from serving.controller.restore import restored
from serving.controller.store import StateStore
from serving.errors_and_auth import resolve_admin_token
from serving.ray_env import single_host_env, stop_haproxy
from serving.translation import serve_config

# How long HAProxy may take to answer the requests it accepted before a stop: the longest a
# served request takes here is well under a second; a stop must fit in ten (serving.supervisor).
DRAIN_S = 2.0


def run_gateway(
    cfg: GatewayConfig,
    metrics_port: int,
    on_ready: Callable[[str], None] | None = None,
    block: bool = True,
    state: Path | None = None,
) -> None:
    """Start a local Ray cluster, deploy the gateway, call ``on_ready(url)``, then serve until stopped.

    Everything Ray starts listens on loopback only; the gateway's own port binds ``http.host``.
    ``state``: the controller's state whose decisions the start restores (``slimgate serve``: the
    default state's); None for a gateway with a controller of its own (the demo, the benchmarks).
    """
    cfg = pin_refs(cfg)  # refuses a config whose variants are missing or not deployable
    if state is not None:
        cfg = with_decisions(cfg, state)
    check_host_gpus(cfg)  # before Ray starts: a GPU variant on a host without one would never start
    serve_cfg = serve_config(cfg)
    if cfg.http.ingress == "haproxy":
        # Replicas' own HTTP servers bind this address; HAProxy's listener for clients is moved to
        # http.host by the wrapper (serving.ray_env), so only the gateway's port can be public.
        serve_cfg["http_options"]["host"] = "127.0.0.1"
    token_env = cfg.admin.token_env
    if resolve_admin_token(cfg.admin) is None:
        os.environ[token_env] = secrets.token_urlsafe(24)
        print(f"admin token (set ${token_env} to choose your own): {os.environ[token_env]}")
    runtime_dir = Path(tempfile.mkdtemp(prefix="slimgate-"))
    os.environ.update(single_host_env(cfg, runtime_dir))
    import ray
    from ray import serve

    # Replicas inherit this process's environment (the admin token, the ingress mode) from the
    # local raylet.
    ray.init(
        include_dashboard=True,
        dashboard_host="127.0.0.1",
        _metrics_export_port=metrics_port,
        _system_config={"metrics_report_interval_ms": 2000},
        log_to_driver=False,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        ray_rest.deploy(serve_cfg)
        ray_rest.wait_running(serve_cfg)
        url = f"http://{cfg.http.host}:{cfg.http.port}"
        print(f"slimgate gateway serving at {url} (metrics: http://127.0.0.1:{metrics_port}/metrics)")
        print(
            f"  curl -s {url}/v1/predict -H 'content-type: application/json' "
            '-d \'{"inputs": ["a large tree with hard wood"]}\''
        )
        if on_ready:
            on_ready(url)
        while block and not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        print("slimgate: stopping the gateway", file=sys.stderr)
        t0 = time.monotonic()

        def done(step: str) -> None:
            print(f"slimgate: {step} ({time.monotonic() - t0:.1f} s)", file=sys.stderr)

        if cfg.http.ingress == "haproxy":
            # Clients first: no new connection is accepted, and what was accepted is answered while
            # the replicas are still there to answer it. Then nothing can reach a replica, so the
            # cluster goes at once: Serve's own shutdown (seconds of draining replicas that have
            # nothing left to drain) would only spend the stop's time.
            stop_haproxy(runtime_dir, timeout_s=DRAIN_S, drain=True)
            done("HAProxy drained")
        else:
            serve.shutdown()  # Ray's HTTP proxies drain what they accepted
            done("Serve shut down")
        ray.shutdown()
        stop_haproxy(runtime_dir)
        shutil.rmtree(runtime_dir, ignore_errors=True)
        done("stopped")


def with_decisions(cfg: GatewayConfig, state: Path) -> GatewayConfig:
    """``cfg`` with the controller's last decisions from ``state`` (none recorded: as it is). A state
    that cannot be read stops the start (StoreError): serving the file's weights instead could route
    a rolled-back candidate."""
    if not state.exists():
        return cfg
    with StateStore(state) as store:
        cfg, lines = restored(cfg, store)
    for line in lines:
        print(f"restored from the controller's state {state}: {line}")
    return cfg
