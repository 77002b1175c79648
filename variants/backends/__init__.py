"""The one interface every inference backend implements, and the factory that opens them.

A backend turns token ids into logits and nothing more: tokenization, label tables and
softmax live in :mod:`variants.predictor`, so every backend is measured and served with
exactly the same pre- and post-processing. Backend libraries (torch, onnxruntime,
tensorrt) are imported lazily here, so that importing this package costs nothing and a
CPU machine never needs the GPU libraries.
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


class BackendUnavailable(RuntimeError):
    """The backend's library or hardware is not present on this machine."""


class Backend(Protocol):
    def logits(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """int64 [batch, seq] ids and mask -> float32 [batch, labels] logits."""
        ...


def open_backend(kind: str, folder: Path, files: list[str], threads: int) -> Backend:
    """Open the model in ``folder`` with backend ``kind``; ``files`` are the verified artifact files."""
    try:
        module = importlib.import_module(_MODULES[kind])
    except KeyError:
        raise BackendUnavailable(f"unknown backend {kind!r}; known: {sorted(_MODULES)}") from None
    return module.open(folder, files, threads)
