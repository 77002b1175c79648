"""benchmarks/gpu_check.py on CPU, in its small mode, against the tiny registry the tests build.

The run step must work on a GPU machine that has torch, transformers, safetensors and numpy but
neither pydantic nor Ray: it runs here in a subprocess in which those (and the project's own
packages) cannot be imported.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.gpu_check import LIMIT_BYTES, export

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
# Importing any of these in the run step fails, as it would on the GPU machine.
ABSENT = ("pydantic", "ray", "variants", "serving", "benchmarks")


@pytest.fixture(scope="module")
def exported(small_registry, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("gpu-check")
    assert export(str(small_registry), out, 24, {"teacher": "teacher", "student": "student"}) == 0
    return out


def test_export_writes_fp16_weights_within_the_size_that_may_travel(exported):
    size = sum(f.stat().st_size for f in exported.rglob("*") if f.is_file())
    assert size < LIMIT_BYTES
    meta = json.loads((exported / "meta.json").read_text())
    assert meta["texts"] == 24 and set(meta["models"]) == {"teacher", "student"}
    assert meta["models"]["teacher"]["ref"].startswith("teacher@")


def test_run_small_on_cpu_without_pydantic_or_ray(exported, tmp_path):
    report = tmp_path / "report.json"
    args = [
        "run",
        "--data",
        str(exported),
        "--small",
        "--device",
        "cpu",
        "--threads",
        "1",
        "--json",
        str(report),
    ]
    code = (
        "import runpy, sys\n"
        f"for name in {ABSENT!r}: sys.modules[name] = None\n"
        f"sys.argv = [{str(SCRIPT)!r}, *{args!r}]\n"
        f"runpy.run_path({str(SCRIPT)!r}, run_name='__main__')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert out.startswith("device: CPU ")
    assert "fp16: skipped: fp16 runs on CUDA only" in out
    assert "student-fp16 / teacher-fp32 at batch 32: skipped" in out
    figures = json.loads(report.read_text())
    got = {(r["model"], r["precision"], r["batch"]) for r in figures["rows"]}
    assert got == {(m, p, b) for m in ("teacher", "student") for p in ("fp32", "bf16") for b in (1, 32)}
    for r in figures["rows"]:
        assert r["p50_ms"] > 0 and r["texts_per_s"] > 0
        # fp16-rounded weights in fp32 on CPU answer what the registry's fp32 answers, all but a tie.
        if r["precision"] == "fp32":
            assert r["agreement"] >= 0.95, r
    assert "student-fp32/teacher-fp32@32" in figures["ratios"]


def test_run_refuses_cuda_cleanly_without_a_gpu(exported):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "run", "--data", str(exported), "--device", "cuda"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "torch sees no CUDA device" in done.stdout
