"""ONNX Runtime backend, on CPU (ONNX Runtime's CUDA provider, from onnxruntime-gpu, is not wired here)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from variants.backends import BackendUnavailable


class OnnxBackend:
    def __init__(self, path: Path, threads: int) -> None:
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        self.input_names = {i.name for i in self.session.get_inputs()}

    def logits(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        feeds = {"input_ids": input_ids, "attention_mask": attention_mask}
        if "token_type_ids" in self.input_names:
            feeds["token_type_ids"] = np.zeros_like(input_ids)
        (out,) = self.session.run(["logits"], feeds)
        return out


def open(
    folder: Path, files: list[str], threads: int, *, device: str = "cpu", precision: str | None = None
) -> OnnxBackend:
    if device != "cpu":
        # Refused rather than run on CPU: a figure measured "on cuda" must have run there.
        raise BackendUnavailable(
            f"{folder}: the onnxruntime backend runs on CPU only here, not on {device!r}; "
            "serve a torch variant (device: cuda) or a TensorRT one on a GPU"
        )
    if "model.onnx" not in files:
        raise ValueError(f"{folder}: an onnxruntime variant needs model.onnx")
    return OnnxBackend(folder / "model.onnx", threads)
