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
import time
from pathlib import Path

import httpx
import pytest
import yaml

from variants import Registry
from variants.assessment import assess
from variants.dataset import load_dataset
from variants.pipeline import build
from variants.recipe import parse_recipe

TOKEN = "test-admin-token"
PORT = 18000
TINY = {
    "data": {"max_length": 32},
    "teacher": {"train_examples": 128, "max_steps": 4, "batch_size": 32, "learning_rate": 2e-4},
    "student": {"train_examples": 128, "max_steps": 3, "batch_size": 32},
    "quantization": {"qat": {"train_examples": 64, "max_steps": 2}},
    "evaluation": {"test_examples": 64, "latency_samples": 3, "throughput_batches": 1, "warmup": 1},
    "gate": {"min_retention": 0.0},
    "variants": ["teacher-onnx", "student-int8", "student-int8-qat"],
}


def gateway_config(registry: Path, **overrides) -> dict:
    cfg = {
        "variants": {
            "stable": {
                "ref": "student-int8",
                "resources": {"num_cpus": 0.4},
                "batching": {"max_batch_size": 16, "batch_wait_timeout_s": 0.005},
            },
            "canary": {"ref": "student-int8-qat", "resources": {"num_cpus": 0.4}},
            "shadow": {"ref": "teacher-onnx", "resources": {"num_cpus": 0.4}, "timeout_s": 20.0},
        },
        "routing": {
            "stable": "stable",
            "weights": {"stable": 70, "canary": 30},
            "sticky_key": {"header": "x-user-id"},
        },
        "shadow": {"variants": ["shadow"], "fraction": 0.0, "max_in_flight": 4},
        "limits": {"max_inputs": 8, "max_chars": 300, "max_body_bytes": 4096, "request_timeout_s": 10.0},
        "registry": str(registry),
        "http": {"host": "127.0.0.1", "port": PORT},
    }
    for path, value in overrides.items():
        node = cfg
        parts = path.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return cfg


@pytest.fixture(scope="session")
def registry_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("gateway-registry")
    reg = Registry(root)
    recipe = parse_recipe(TINY)
    ds = load_dataset()
    ctx, _ = build(recipe, reg, dataset=ds, progress=False)
    assess(reg, list(ctx.built.values()), ds, recipe)
    return root


def slimgate(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "serving.cli", *args], capture_output=True, text=True, timeout=timeout
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


@pytest.fixture(scope="session")
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
            "18080",
            "--ready-file",
            str(ready),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 240
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"gateway did not start:\n{(cfg_dir / 'serve.log').read_text()[-5000:]}")
        time.sleep(0.5)
    yield gw
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    log.close()
    subprocess.run(
        ["ray", "stop", "--force"],
        capture_output=True,
        env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"},
    )
