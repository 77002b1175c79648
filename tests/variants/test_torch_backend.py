"""The torch backend: fp32 and bf16 on CPU for real, CUDA refused cleanly where there is no GPU.

Weights come only from the checksummed safetensors the registry verified; a device that is not
there is an error naming why, never a quiet run on the CPU.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from variants import ChecksumMismatch, Registry, load_variant
from variants.backends import BackendUnavailable, open_backend
from variants.dataset import load_dataset
from variants.hardware import cuda_unavailable_reason

no_gpu = pytest.mark.skipif(cuda_unavailable_reason() is None, reason="this machine has a CUDA device")


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return load_dataset().test.subsample(64, seed=0).texts


def test_fp32_on_cpu_is_the_default(small_registry, texts):
    p = load_variant("student", registry=small_registry)
    assert (p.device, p.precision) == ("cpu", "fp32")
    assert next(p.backend.model.parameters()).dtype == torch.float32
    probs = p.predict_proba(texts)
    assert probs.dtype == np.float32 and np.allclose(probs.sum(axis=1), 1, atol=1e-5)


def test_bf16_on_cpu_agrees_with_fp32(small_registry, texts):
    fp32 = load_variant("teacher", registry=small_registry).predict(texts).labels
    bf16 = load_variant("teacher", registry=small_registry, precision="bf16")
    assert (bf16.device, bf16.precision) == ("cpu", "bf16")
    assert next(bf16.backend.model.parameters()).dtype == torch.bfloat16
    got = bf16.predict(texts)
    assert got.probabilities.dtype == np.float32  # softmax and labels see fp32 whatever computed
    assert np.mean(np.array(got.labels) == np.array(fp32)) >= 0.9


def test_fp16_on_cpu_is_refused_with_the_reason(small_registry):
    with pytest.raises(ValueError, match="fp16 runs on device 'cuda' only; on CPU use fp32 or bf16"):
        load_variant("student", registry=small_registry, precision="fp16")


@no_gpu
def test_cuda_backend_refuses_cleanly_without_a_gpu(small_registry):
    with pytest.raises(BackendUnavailable) as info:
        load_variant("student", registry=small_registry, device="cuda", precision="fp16")
    assert str(info.value) == f"torch backend on device 'cuda' unavailable: {cuda_unavailable_reason()}"


def test_weights_are_verified_before_any_device_is_tried(small_registry, tmp_path):
    reg = Registry(tmp_path / "reg")
    shutil.copytree(small_registry / "student", reg.root / "student")
    weights = next((reg.root / "student").glob("v*/model.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-8] + b"tampered")
    with pytest.raises(ChecksumMismatch):
        load_variant("student", registry=reg, device="cuda")


def test_other_backends_refuse_a_device_or_precision_they_cannot_honour(small_registry):
    with pytest.raises(BackendUnavailable, match="the onnxruntime backend runs on CPU only here"):
        load_variant("student-int8", registry=small_registry, device="cuda")
    with pytest.raises(ValueError, match="only a torch variant is cast when opened"):
        load_variant("student-int8", registry=small_registry, precision="bf16")
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        open_backend("torch", small_registry, [], 1, device="tpu")
