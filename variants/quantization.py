"""ONNX Runtime int8 quantization: dynamic, static with calibration, and the QAT export.

Dynamic quantization stores int8 weights and quantizes activations per batch at run time
(MatMulInteger kernels, VNNI on this CPU). Static quantization fixes activation ranges from
a calibration sample drawn from the training split, in the Q/DQ format that ONNX Runtime
fuses into int8 kernels and that TensorRT reads as explicit int8 precision.
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, redirect_stdout
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)

from variants.tokenization import TextEncoder

_METHODS = {
    "minmax": CalibrationMethod.MinMax,
    "entropy": CalibrationMethod.Entropy,
    "percentile": CalibrationMethod.Percentile,
}


@contextmanager
def _quiet() -> Iterator[None]:
    # The quantizer logs one line per tensor through the root logger; keep the build readable.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(level)


def dynamic_int8(src: Path, dst: Path, *, per_channel: bool) -> Path:
    with _quiet():
        quantize_dynamic(
            str(src),
            str(dst),
            weight_type=QuantType.QInt8,
            per_channel=per_channel,
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    return dst


class _Calibration(CalibrationDataReader):
    """Calibration batches padded to the full token limit: histogram calibrators need one shape."""

    def __init__(self, encoder: TextEncoder, texts: Sequence[str], batch_size: int = 16) -> None:
        def batch(chunk: Sequence[str]) -> dict:
            ids, mask = encoder(chunk)
            pad = encoder.max_length - ids.shape[1]
            return {
                "input_ids": np.pad(ids, ((0, 0), (0, pad))),
                "attention_mask": np.pad(mask, ((0, 0), (0, pad))),
            }

        self._batches: Iterator[dict] = (
            batch(texts[i : i + batch_size]) for i in range(0, len(texts), batch_size)
        )

    def get_next(self) -> dict | None:
        return next(self._batches, None)


def static_int8(
    src: Path,
    dst: Path,
    encoder: TextEncoder,
    calibration_texts: Sequence[str],
    *,
    method: str,
    per_channel: bool,
    symmetric_activations: bool = False,
) -> Path:
    """Calibrated Q/DQ int8. ``symmetric_activations`` (int8, zero point 0) is what TensorRT needs."""
    with _quiet():
        quantize_static(
            str(src),
            str(dst),
            _Calibration(encoder, calibration_texts),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["MatMul", "Gemm"],
            per_channel=per_channel,
            activation_type=QuantType.QInt8 if symmetric_activations else QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=_METHODS[method],
            extra_options={
                "ActivationSymmetric": symmetric_activations,
                "WeightSymmetric": True,
                "DefaultTensorType": onnx.TensorProto.FLOAT,
            },
        )
    return dst
