"""Client input -> validated request, or an :class:`ApiError` that says exactly what is wrong.

Everything a client can get wrong is checked here, before any variant is called: body size
(413 before parsing), encoding, JSON syntax, shape and types, counts and lengths. Errors
carry their HTTP status and a stable machine-readable code; the JSON body is
``{"error": {"code": ..., "message": ...}}`` for every failure the gateway reports.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from serving.config import LimitsConfig
from serving.errors_and_auth import ApiError


def too_large(limit: int) -> ApiError:
    return ApiError(413, "body_too_large", f"request body exceeds {limit} bytes")


def decode_json(raw: bytes) -> Any:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ApiError(
            400, "invalid_encoding", f"request body is not valid UTF-8 (byte {err.start})"
        ) from None
    if not text.strip():
        raise ApiError(400, "empty_body", "request body is empty; expected a JSON object")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as err:
        # Every decoder failure is the client's: syntax, and also nesting deeper than the decoder's
        # limit (1024 levels), which the standard library would report as a RecursionError.
        raise ApiError(
            400, "malformed_json", f"malformed JSON: {err.msg} at line {err.lineno} column {err.colno}"
        ) from None


def check_texts(texts: Any, field: str, limits: LimitsConfig) -> list[str]:
    if not isinstance(texts, list):
        raise ApiError(422, "invalid_field", f"{field} must be a list of strings, got {_type(texts)}")
    if not texts:
        raise ApiError(422, "empty_inputs", f"{field} is empty; send at least one text")
    if len(texts) > limits.max_inputs:
        raise ApiError(
            422,
            "too_many_inputs",
            f"{field} has {len(texts)} texts; the limit is {limits.max_inputs} per request",
        )
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise ApiError(422, "invalid_field", f"{field}[{i}] must be a string, got {_type(t)}")
        if not t.strip():
            raise ApiError(422, "empty_text", f"{field}[{i}] is empty or blank")
        if len(t) > limits.max_chars:
            raise ApiError(
                422, "text_too_long", f"{field}[{i}] has {len(t)} characters; the limit is {limits.max_chars}"
            )
    return texts


def _type(v: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(v), "a number" if isinstance(v, int | float) else type(v).__name__
    )


@dataclass(frozen=True)
class PredictRequest:
    texts: list[str]
    top_k: int
    body: dict[str, Any]


def parse_predict(payload: Any, limits: LimitsConfig, label_count: int) -> PredictRequest:
    """``{"inputs": [...], "top_k": k?}``; other top-level fields are allowed (e.g. a sticky key)."""
    if not isinstance(payload, dict):
        raise ApiError(422, "invalid_body", f"request body must be a JSON object, got {_type(payload)}")
    if "inputs" not in payload:
        raise ApiError(422, "missing_field", "inputs is required: a list of texts to classify")
    texts = check_texts(payload["inputs"], "inputs", limits)
    # The configured top_k is what a client gets unasked, cut to the task's labels (a binary task
    # has two); a client asking for more than there are is told so.
    top_k = payload.get("top_k", min(limits.top_k, label_count))
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= label_count:
        raise ApiError(
            422, "invalid_field", f"top_k must be an integer from 1 to {label_count}, got {top_k!r}"
        )
    return PredictRequest(texts, top_k, payload)
