"""Open Inference Protocol v2 (the KServe / Triton REST protocol): request decoding, response encoding.

A model takes one input tensor ``text`` (BYTES, shape ``[n]``) and returns ``label``
(BYTES, ``[n]``) and ``probabilities`` (FP32, ``[n, labels]``, row-major). Tensor data may
be sent flat or nested, as the protocol allows; a client may ask for a subset of outputs.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from serving.config import LimitsConfig
from serving.requests import ApiError, check_texts

INPUT_NAME = "text"
OUTPUTS = ("label", "probabilities")


def metadata(name: str, versions: list[str], platform: str, label_count: int) -> dict[str, Any]:
    return {
        "name": name,
        "versions": versions,
        "platform": platform,
        "inputs": [{"name": INPUT_NAME, "datatype": "BYTES", "shape": [-1]}],
        "outputs": [
            {"name": "label", "datatype": "BYTES", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, label_count]},
        ],
    }


def _flatten(data: Any) -> list[Any]:
    if isinstance(data, list) and data and isinstance(data[0], list):
        return [x for row in data for x in _flatten(row)]
    return data if isinstance(data, list) else [data]


def decode_infer(payload: Any, limits: LimitsConfig) -> tuple[list[str], list[str], str | None]:
    """-> (texts, requested output names, request id)."""
    if not isinstance(payload, dict):
        raise ApiError(400, "invalid_body", "inference request must be a JSON object")
    inputs = payload.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise ApiError(400, "missing_field", "inputs must be a non-empty list of tensors")
    tensor = next((t for t in inputs if isinstance(t, dict) and t.get("name") == INPUT_NAME), None)
    if tensor is None:
        names = [t.get("name") for t in inputs if isinstance(t, dict)]
        raise ApiError(400, "unknown_input", f"expected an input tensor named {INPUT_NAME!r}, got {names}")
    if tensor.get("datatype") != "BYTES":
        raise ApiError(
            400,
            "invalid_datatype",
            f"input {INPUT_NAME!r} must have datatype BYTES, got {tensor.get('datatype')!r}",
        )
    shape = tensor.get("shape")
    data = _flatten(tensor.get("data"))
    if not isinstance(shape, list) or not all(isinstance(d, int) for d in shape):
        raise ApiError(400, "invalid_shape", f"input {INPUT_NAME!r} needs an integer shape list")
    if int(np.prod(shape)) != len(data):
        raise ApiError(
            400, "invalid_shape", f"input {INPUT_NAME!r} has shape {shape} but {len(data)} elements"
        )
    texts = check_texts(data, f"inputs[{INPUT_NAME}].data", limits)
    wanted = [o.get("name") for o in payload.get("outputs") or [] if isinstance(o, dict)]
    unknown = [w for w in wanted if w not in OUTPUTS]
    if unknown:
        raise ApiError(400, "unknown_output", f"unknown outputs {unknown}; this model has {list(OUTPUTS)}")
    req_id = payload.get("id")
    return texts, wanted or list(OUTPUTS), req_id if isinstance(req_id, str) else None


def encode_infer(
    model: str, version: str, request_id: str, labels: list[str], probabilities: np.ndarray, wanted: list[str]
) -> dict[str, Any]:
    outputs = []
    if "label" in wanted:
        outputs.append({"name": "label", "datatype": "BYTES", "shape": [len(labels)], "data": labels})
    if "probabilities" in wanted:
        outputs.append(
            {
                "name": "probabilities",
                "datatype": "FP32",
                "shape": list(probabilities.shape),
                "data": probabilities.astype(np.float32).ravel().tolist(),
            }
        )
    return {"model_name": model, "model_version": version, "id": request_id, "outputs": outputs}
