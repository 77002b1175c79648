"""Open Inference Protocol v2 (the KServe / Triton protocol): request decoding, response encoding.

A model takes one input tensor ``text`` (BYTES, shape ``[n]``) and returns ``label`` (BYTES,
``[n]``) and ``probabilities`` (FP32, ``[n, labels]``, row-major). Tensor data may be sent flat or
nested, as the protocol allows, and in the **binary tensor data extension** that NVIDIA's clients
use by default: the body is a JSON header of ``Inference-Header-Content-Length`` bytes followed by
the raw tensors in input order, each announced by ``parameters.binary_data_size`` (BYTES elements
are a 4-byte little-endian length and the bytes). Outputs are answered in binary when the request
asks for it (``outputs[].parameters.binary_data`` or ``parameters.binary_data_output``), else as
JSON. Errors on ``/v2`` use the protocol's shape, ``{"error": "<message>"}`` (see
:mod:`serving.http_api`).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from serving.config import LimitsConfig
from serving.errors_and_auth import ApiError
from serving.requests import check_texts, decode_json


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("slimgate")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "0+unknown"


SERVER = {"name": "slimgate", "version": _version()}
INPUT_NAME = "text"
OUTPUTS = ("label", "probabilities")
HEADER_LENGTH = "inference-header-content-length"
_LEN = struct.Struct("<I")


def server_metadata(extensions: Sequence[str]) -> dict[str, Any]:
    """The server metadata, the same on every surface but for the extensions that surface has."""
    return {**SERVER, "extensions": list(extensions)}


def metadata(name: str, versions: list[str], platform: str, labels: Sequence[str]) -> dict[str, Any]:
    """Model metadata; the label table (the order of ``probabilities``' columns) is in the
    protocol's ``properties`` map of strings, as a JSON list under ``labels``."""
    return {
        "name": name,
        "versions": versions,
        "platform": platform,
        "inputs": [{"name": INPUT_NAME, "datatype": "BYTES", "shape": [-1]}],
        "outputs": [
            {"name": "label", "datatype": "BYTES", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, len(labels)]},
        ],
        "properties": {"labels": json.dumps(list(labels))},
    }


def model_config(
    name: str, platform: str, labels: Sequence[str], max_inputs: int, batching: Any | None
) -> dict[str, Any]:
    """The model configuration extension (Triton's ``ModelConfig`` as JSON), which Triton's own
    tools (perf_analyzer) ask for before their first inference. ``max_batch_size`` 0: the texts of
    a request are its own first dimension (up to ``max_inputs``); how the gateway coalesces
    requests (``batching``: a variant's ``BatchingSpec``, None for the routed model) is stated in
    ``parameters`` rather than as Triton's dynamic batcher, which it is not, and so is the label
    table (``labels``, a JSON list: gRPC's model metadata has no field for it)."""
    label_count = len(labels)
    params = {"max_inputs": str(max_inputs), "labels": json.dumps(list(labels))}
    if batching is not None:
        params |= {
            "coalesced_batch_size": str(batching.max_batch_size),
            "batch_wait_timeout_s": f"{batching.batch_wait_timeout_s:g}",
        }
    return {
        "name": name,
        "platform": platform,
        "max_batch_size": 0,
        "input": [{"name": INPUT_NAME, "data_type": "TYPE_STRING", "dims": [-1]}],
        "output": [
            {"name": "label", "data_type": "TYPE_STRING", "dims": [-1]},
            {"name": "probabilities", "data_type": "TYPE_FP32", "dims": [-1, label_count]},
        ],
        "parameters": {k: {"string_value": v} for k, v in params.items()},
    }


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    binary: bool


@dataclass(frozen=True)
class InferRequest:
    texts: list[str]
    outputs: tuple[RequestedOutput, ...]
    request_id: str | None
    parameters: dict[str, Any] = field(default_factory=dict)


def _bad(code: str, message: str) -> ApiError:
    return ApiError(400, code, message)


def _flatten(data: Any) -> list[Any]:
    if isinstance(data, list) and data and isinstance(data[0], list):
        return [x for row in data for x in _flatten(row)]
    return data if isinstance(data, list) else [data]


def _split_header(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    if header_length is None:
        return body, b""
    if not header_length.strip().isdigit():
        raise _bad(
            "invalid_header", f"Inference-Header-Content-Length must be a byte count, got {header_length!r}"
        )
    n = int(header_length)
    if not 0 < n <= len(body):
        raise _bad(
            "invalid_header",
            f"Inference-Header-Content-Length is {n} but the body has {len(body)} bytes",
        )
    return body[:n], body[n:]


def encode_bytes_elements(values: list[str]) -> bytes:
    """A BYTES tensor in the protocol's binary form: each element's 4-byte length, then its bytes."""
    return b"".join(_LEN.pack(len(b)) + b for b in (v.encode("utf-8") for v in values))


def decode_bytes_elements(raw: bytes, where: str) -> list[str]:
    """The elements of a binary BYTES tensor, as text (a 400 naming the problem if malformed)."""
    out, i = [], 0
    while i < len(raw):
        if i + 4 > len(raw):
            raise _bad("invalid_binary", f"{where}: truncated element length at byte {i}")
        (n,) = _LEN.unpack_from(raw, i)
        i += 4
        if i + n > len(raw):
            raise _bad("invalid_binary", f"{where}: element of {n} bytes overruns the tensor at byte {i}")
        try:
            out.append(raw[i : i + n].decode("utf-8"))
        except UnicodeDecodeError:
            raise _bad("invalid_encoding", f"{where}: element at byte {i} is not valid UTF-8") from None
        i += n
    return out


def _shape(tensor: dict[str, Any], where: str) -> list[int]:
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise _bad("invalid_shape", f"{where} needs a shape: a list of non-negative integers")
    return shape


def decode_infer(body: bytes, header_length: str | None, limits: LimitsConfig) -> InferRequest:
    """Parse an inference request (JSON, or JSON header + binary tensors) into texts and outputs."""
    header, binary = _split_header(body, header_length)
    payload = decode_json(header)
    if not isinstance(payload, dict):
        raise _bad("invalid_body", "inference request must be a JSON object")
    inputs = payload.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise _bad("missing_field", "inputs must be a non-empty list of tensors")
    texts: list[str] | None = None
    offset = 0
    for i, tensor in enumerate(inputs):
        if not isinstance(tensor, dict):
            raise _bad("invalid_body", f"inputs[{i}] must be a tensor object")
        name = tensor.get("name")
        where = f"input {name!r}" if isinstance(name, str) else f"inputs[{i}]"
        given = tensor.get("parameters")
        params: dict[str, Any] = given if isinstance(given, dict) else {}
        size = params.get("binary_data_size")
        raw: bytes | None = None
        if size is not None:
            if isinstance(size, bool) or not isinstance(size, int) or size < 0:
                raise _bad("invalid_binary", f"{where}: binary_data_size must be a byte count, got {size!r}")
            if offset + size > len(binary):
                raise _bad(
                    "invalid_binary",
                    f"{where}: binary_data_size {size} overruns the {len(binary) - offset} bytes left",
                )
            raw, offset = binary[offset : offset + size], offset + size
        if name != INPUT_NAME:
            continue  # another input: its binary bytes are skipped above, its data is not ours
        if tensor.get("datatype") != "BYTES":
            raise _bad(
                "invalid_datatype",
                f"input {INPUT_NAME!r} must have datatype BYTES, got {tensor.get('datatype')!r}",
            )
        shape = _shape(tensor, where)
        if not shape:
            raise _bad(
                "invalid_shape", f"input {INPUT_NAME!r} must have at least one dimension (texts), got []"
            )
        if raw is None and not isinstance(tensor.get("data"), list):
            # The protocol's tensor data is a JSON array (flat or nested), never a bare value.
            raise _bad(
                "invalid_data",
                f"input {INPUT_NAME!r}: data must be a list, got {type(tensor.get('data')).__name__}",
            )
        data = decode_bytes_elements(raw, where) if raw is not None else _flatten(tensor.get("data"))
        if int(np.prod(shape)) != len(data):
            raise _bad("invalid_shape", f"input {INPUT_NAME!r} has shape {shape} but {len(data)} elements")
        try:
            texts = check_texts(data, f"inputs[{INPUT_NAME}].data", limits)
        except ApiError as err:  # the protocol answers every malformed request with 400
            raise _bad(err.code, err.message) from None
    if offset != len(binary):
        raise _bad("invalid_binary", f"{len(binary) - offset} bytes of binary data belong to no input")
    if texts is None:
        names = [t.get("name") for t in inputs if isinstance(t, dict)]
        raise _bad("unknown_input", f"expected an input tensor named {INPUT_NAME!r}, got {names}")
    given = payload.get("parameters")
    parameters: dict[str, Any] = given if isinstance(given, dict) else {}
    outputs = _requested_outputs(payload.get("outputs"), bool(parameters.get("binary_data_output", False)))
    req_id = payload.get("id")
    return InferRequest(texts, outputs, req_id if isinstance(req_id, str) else None, parameters)


def _requested_outputs(raw: Any, binary_default: bool) -> tuple[RequestedOutput, ...]:
    if raw is None or raw == []:
        return tuple(RequestedOutput(n, binary_default) for n in OUTPUTS)
    if not isinstance(raw, list):
        raise _bad("invalid_body", "outputs must be a list of {name, parameters?}")
    wanted = []
    for o in raw:
        name = o.get("name") if isinstance(o, dict) else None
        if name not in OUTPUTS:
            raise _bad("unknown_output", f"unknown output {name!r}; this model has {list(OUTPUTS)}")
        params = o.get("parameters") if isinstance(o.get("parameters"), dict) else {}
        if params.get("classification"):
            raise _bad("unsupported", "the classification extension is not supported; ask for 'label'")
        wanted.append(RequestedOutput(name, bool(params.get("binary_data", binary_default))))
    return tuple(wanted)


def encode_infer(
    model: str,
    version: str,
    request_id: str,
    labels: list[str],
    probabilities: np.ndarray,
    outputs: tuple[RequestedOutput, ...],
) -> tuple[bytes, int | None]:
    """The response body, and the JSON header's length when binary tensors follow it (else None)."""
    import orjson

    tensors, blobs = [], []
    for out in outputs:
        if out.name == "label":
            t: dict[str, Any] = {"name": "label", "datatype": "BYTES", "shape": [len(labels)]}
            if out.binary:
                blob = encode_bytes_elements(labels)
            else:
                t["data"] = labels
        else:
            probs = np.ascontiguousarray(probabilities, dtype="<f4")
            t = {"name": "probabilities", "datatype": "FP32", "shape": list(probs.shape)}
            if out.binary:
                blob = probs.tobytes()
            else:
                t["data"] = probs.ravel().tolist()
        if out.binary:
            t["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        tensors.append(t)
    header = orjson.dumps(
        {"model_name": model, "model_version": version, "id": request_id, "outputs": tensors}
    )
    if not blobs:
        return header, None
    return header + b"".join(blobs), len(header)
