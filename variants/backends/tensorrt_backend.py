"""TensorRT backend: builds an engine from the variant's ONNX file when the variant is opened.

The registry stores only ONNX (fp32 for fp16 engines, a calibrated Q/DQ model for int8
engines, which TensorRT compiles with explicit int8 precision), so a serialized engine is
never loaded from disk and the checksummed ONNX stays the single artifact. Needs a CUDA
device, the ``tensorrt`` package and a CUDA build of torch for device buffers (the ``gpu``
extra); :func:`availability` says why not when any is missing.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from variants.backends import BackendUnavailable


def availability() -> str | None:
    """None when TensorRT can run here, else the reason it cannot."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "the tensorrt package is not installed (pip install 'slimgate[gpu]')"
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return "no CUDA device is visible to torch"
    return None


def build_engine(onnx_path: Path, *, fp16: bool, int8: bool, max_batch: int, max_len: int) -> bytes:
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    if int8:
        # Scales come from the Q/DQ nodes of the calibrated ONNX (explicit quantization).
        config.set_flag(trt.BuilderFlag.INT8)
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        name = network.get_input(i).name
        profile.set_shape(name, (1, 1), (min(32, max_batch), min(64, max_len)), (max_batch, max_len))
    config.add_optimization_profile(profile)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path}")
    return bytes(engine)


class TensorRTBackend:
    def __init__(self, engine_bytes: bytes) -> None:
        import tensorrt as trt
        import torch

        self._torch = torch
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self.runtime.deserialize_cuda_engine(engine_bytes)
        self.context = self.engine.create_execution_context()
        self.stream = torch.cuda.Stream()
        self.inputs = [
            self.engine.get_tensor_name(i)
            for i in range(self.engine.num_io_tensors)
            if self.engine.get_tensor_mode(self.engine.get_tensor_name(i)) == trt.TensorIOMode.INPUT
        ]

    def logits(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        torch = self._torch
        host = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "token_type_ids": np.zeros_like(input_ids),
        }
        keep = []
        for name in self.inputs:
            t = torch.from_numpy(host[name]).cuda()
            keep.append(t)
            self.context.set_input_shape(name, tuple(t.shape))
            self.context.set_tensor_address(name, t.data_ptr())
        out = torch.empty(tuple(self.context.get_tensor_shape("logits")), dtype=torch.float32, device="cuda")
        self.context.set_tensor_address("logits", out.data_ptr())
        self.context.execute_async_v3(self.stream.cuda_stream)
        self.stream.synchronize()
        return out.cpu().numpy()


def open(
    folder: Path, files: list[str], threads: int, *, device: str = "cpu", precision: str | None = None
) -> TensorRTBackend:
    # A TensorRT engine runs on CUDA whatever ``device`` says (its precision is the engine's own):
    # without a device it is refused below, never run elsewhere.
    reason = availability()
    if reason:
        raise BackendUnavailable(f"TensorRT backend unavailable: {reason}")
    settings = json.loads((folder / "tensorrt.json").read_text(encoding="utf-8"))
    engine = build_engine(
        folder / "model.onnx",
        fp16=settings["fp16"],
        int8=settings["int8"],
        max_batch=settings["max_batch_size"],
        max_len=settings["max_length"],
    )
    return TensorRTBackend(engine)
