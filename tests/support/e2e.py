"""Helpers shared by the end-to-end tests: the gateway config they start from and a small HTTP client."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import yaml

from serving.ops.local_prometheus import LocalPrometheus
from support import poll_until, stop_process

TOKEN = "test-admin-token"
PORT = 18000
GRPC_PORT = 19000
METRICS_PORT = 18080
CONTROLLER_PORT = 19102


def gateway_config(registry: Path, **overrides) -> dict:
    cfg = {
        "variants": {
            # stable and canary are answered inside the router; the shadow has a deployment of its
            # own, so both placements are exercised.
            "stable": {
                "ref": "student-int8",
                "batching": {"max_batch_size": 16, "batch_wait_timeout_s": 0.0},
            },
            "canary": {"ref": "student-int8-qat"},
            "shadow": {
                "ref": "teacher-onnx",
                "placement": "deployment",
                "resources": {"num_cpus": 0.4},
                "timeout_s": 20.0,
            },
        },
        "routing": {
            "stable": "stable",
            "weights": {"stable": 70, "canary": 30},
            "sticky_key": {"header": "x-user-id"},
        },
        "shadow": {"variants": ["shadow"], "fraction": 0.0, "max_in_flight": 4},
        "limits": {"max_inputs": 8, "max_chars": 300, "max_body_bytes": 4096, "request_timeout_s": 10.0},
        "registry": str(registry),
        "http": {"host": "127.0.0.1", "port": PORT, "grpc_port": GRPC_PORT},
    }
    for path, value in overrides.items():
        node = cfg
        parts = path.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return cfg


def slimgate(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    # As an operator runs it: with the admin token at hand (apply reads the router's load errors).
    env = {**os.environ, "SLIMGATE_ADMIN_TOKEN": TOKEN}
    proc = subprocess.run(
        [sys.executable, "-m", "serving.cli", *args], capture_output=True, text=True, timeout=timeout, env=env
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"slimgate {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


class Gateway:
    def __init__(self, url: str, config_dir: Path, registry: Path) -> None:
        self.url = url
        self.config_dir = config_dir
        self.registry = registry
        self.client = httpx.Client(base_url=url, timeout=30)
        self.pid = 0  # of `slimgate serve`, once started
        self.proc: subprocess.Popen | None = None
        self._n = 0

    def write_config(self, **overrides) -> Path:
        self._n += 1
        path = self.config_dir / f"gateway-{self._n}.yaml"
        path.write_text(yaml.safe_dump(gateway_config(self.registry, **overrides)))
        return path

    def apply(self, **overrides) -> subprocess.CompletedProcess:
        return slimgate("apply", str(self.write_config(**overrides)))

    def predict(self, texts, headers=None, **body):
        return self.client.post("/v1/predict", json={"inputs": texts, **body}, headers=headers or {})

    def admin(self, path: str):
        return self.client.get(path, headers={"authorization": f"Bearer {TOKEN}"})


@contextmanager
def serving(config: Path, gw: Gateway, *args: str) -> Iterator[Gateway]:
    """``slimgate serve config`` in a subprocess, as a user starts it, until the block ends; its
    log is ``serve.log`` beside the config, and its last lines are shown when it fails to start."""
    ready = config.parent / "ready"
    ready.unlink(missing_ok=True)
    env = {**os.environ, "SLIMGATE_ADMIN_TOKEN": TOKEN, "RAY_USAGE_STATS_ENABLED": "0"}
    log_path = config.parent / "serve.log"
    with open(log_path, "w") as log:
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
                *args,
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
            raise RuntimeError(f"gateway did not start ({err}):\n{log_path.read_text()[-5000:]}") from None
        gw.pid, gw.proc = proc.pid, proc
        try:
            yield gw
        finally:
            gw.client.close()
            stop_process(proc, signal.SIGTERM, timeout_s=60)
            subprocess.run(
                ["ray", "stop", "--force"],
                capture_output=True,
                env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"},
            )


TEXT_POOL = [
    "a tall perennial woody plant having a main trunk and branches",
    "a person who plays the violin",
    "a building where people live",
    "the act of running quickly",
    "a sweet food made from sugar",
]


# The tests use the same local Prometheus the demo and benchmarks run (one second scrapes).
PrometheusServer = LocalPrometheus
