"""The one interface every inference backend implements, and the factory that opens them.

A backend turns token ids into logits and nothing more: tokenization, label tables and
softmax live in :mod:`variants.predictor`, so every backend is measured and served with
exactly the same pre- and post-processing. Backend libraries (torch, onnxruntime,
tensorrt) are imported lazily here, so that importing this package costs nothing and a
CPU machine never needs the GPU libraries.

Where a backend runs is explicit: ``device`` (``cpu`` or ``cuda``) and, for torch, the
``precision`` it computes in (``fp32``, ``fp16``, ``bf16``) come from the variant's manifest or
the gateway config. A backend asked for a device it cannot use raises
:class:`BackendUnavailable`; none ever falls back to another device, which would make every
figure measured through it describe a different machine.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Protocol

import numpy as np

_MODULES = {
    "torch": "variants.backends.torch_backend",
    "onnxruntime": "variants.backends.onnx_backend",
    "tensorrt": "variants.backends.tensorrt_backend",
}


DEVICES = ("cpu", "cuda")
# What the torch backend can compute in; fp16 only on CUDA (CPU fp16 kernels are slow and partial).
TORCH_PRECISIONS = ("fp32", "fp16", "bf16")


class BackendUnavailable(RuntimeError):
    """The backend's library or hardware is not present on this machine."""


class Backend(Protocol):
    def logits(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """int64 [batch, seq] ids and mask -> float32 [batch, labels] logits."""
        ...


def open_backend(
    kind: str,
    folder: Path,
    files: list[str],
    threads: int,
    *,
    device: str = "cpu",
    precision: str | None = None,
) -> Backend:
    """Open the model in ``folder`` with backend ``kind``; ``files`` are the verified artifact files.

    ``device`` is where it runs; ``precision`` what a torch model is cast to when opened (None =
    fp32). The ONNX and TensorRT backends run their artifact's own
    precision, fixed when it was built.
    """
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}; known: {list(DEVICES)}")
    try:
        module = importlib.import_module(_MODULES[kind])
    except KeyError:
        raise BackendUnavailable(f"unknown backend {kind!r}; known: {sorted(_MODULES)}") from None
    return module.open(folder, files, threads, device=device, precision=precision)
