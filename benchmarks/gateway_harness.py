"""What every gateway benchmark section stands on: a gateway started for one config, and one measurement.

:func:`serving` runs ``slimgate serve`` (optionally with a bare Ray Serve deployment next to it,
the baseline the router is held to) on the fixed benchmark ports; :func:`measure` is one figure:
a warm-up, then the median of three ``hey`` runs.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from benchmarks.load import Load, hey, median_of

PORT = 18100
GRPC_PORT = 19100
TEXT_HEADERS = {"x-user-id": "benchmark-user"}


def write_figures(path: str | None, rows: list[dict[str, Any]]) -> None:
    """A benchmark's rows, with the machine they were measured on, as JSON at ``path`` (if given)."""
    if path:
        import json

        from variants.hardware import describe

        with open(path, "w", encoding="utf-8") as f:
            json.dump({"machine": describe(), "rows": rows}, f, indent=2)


def say(text: str = "") -> None:
    print(text, flush=True)


def measure(
    url: str, n: int, concurrency: int, headers: dict[str, str] | None = None, rounds: int = 3
) -> Load:
    hey(url, n=min(n, 300), concurrency=concurrency, headers=headers)  # warm-up
    return median_of([hey(url, n=n, concurrency=concurrency, headers=headers) for _ in range(rounds)])


def gateway_config(registry: str | None, variants: dict[str, Any], **extra: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "variants": variants,
        "routing": {"stable": next(iter(variants)), "sticky_key": {"header": "x-user-id"}},
        "http": {"host": "127.0.0.1", "port": PORT, "grpc_port": GRPC_PORT},
        "registry": registry,
    }
    for path, value in extra.items():
        node = cfg
        *parents, leaf = path.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return cfg


def batching_config(size: int) -> dict[str, Any]:
    return {"max_batch_size": size, "batch_wait_timeout_s": 0.0}


@contextmanager
def serving(cfg: dict[str, Any], *, bare: str | None = None):
    """``slimgate serve`` with ``cfg`` (plus a bare deployment of ``bare`` on /bare), yielding its URL."""
    work = Path(tempfile.mkdtemp(prefix="slimgate-bench-"))
    path, ready = work / "gateway.yaml", work / "ready"
    path.write_text(yaml.safe_dump(cfg))
    env = {
        **os.environ,
        "SLIMGATE_ADMIN_TOKEN": os.environ.get("SLIMGATE_ADMIN_TOKEN") or secrets.token_urlsafe(16),
    }
    log = open(work / "serve.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "serving.cli",
            "serve",
            str(path),
            "--metrics-port",
            "18180",
            "--ready-file",
            str(ready),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 300
        while not ready.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"slimgate serve did not start:\n{(work / 'serve.log').read_text()[-3000:]}")
            time.sleep(0.5)
        if bare is not None:
            _deploy_bare(cfg, bare)
        yield f"http://127.0.0.1:{PORT}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _deploy_bare(cfg: dict[str, Any], ref: str) -> None:
    """Add the bare deployment next to the running gateway, in the same Ray cluster and ingress."""
    from serving import ray_rest
    from serving.config import parse_config, pin_refs
    from serving.translation import serve_config

    gateway = pin_refs(parse_config(cfg))
    sc = serve_config(gateway)
    sc["http_options"]["host"] = "127.0.0.1"
    pinned = next(v.ref for k, v in gateway.variants.items() if v.name == ref)
    sc["applications"].append(
        {
            "name": "bare",
            "route_prefix": "/bare",
            "import_path": "benchmarks.bare:bare_app",
            "args": {"ref": pinned, "registry": str(gateway.registry) if gateway.registry else None},
            "deployments": [
                {"name": "Bare", "max_ongoing_requests": 512, "ray_actor_options": {"num_cpus": 0.25}}
            ],
        }
    )
    ray_rest.deploy(sc)
    ray_rest.wait_running(sc)
