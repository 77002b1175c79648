"""The gateway's HTTP surface over the dataplane: ``/v1`` (slimgate's API), ``/v2`` (the Open
Inference Protocol) and ``/admin``.

:class:`HttpApi` is a plain object: ``await api.handle(request) -> Response`` for a Starlette
request, with the dataplane, admission control and the admin token passed in, so it runs the same
under Ray Serve's ingress and in a unit test. Routing is a small table matched once per request
(no framework between the socket and the dataplane: FastAPI's per-request validation and
dependency machinery cost more than the routing work itself on this path).

Errors are raised as :class:`~serving.errors_and_auth.ApiError` (status + code) and rendered in one place:
``{"error": {"code", "message"}}`` on ``/v1`` and ``/admin``, the protocol's ``{"error":
"<message>"}`` on ``/v2``. A 5xx body never carries internal detail; the log does.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import orjson
from starlette.requests import Request
from starlette.responses import Response

from serving import oip
from serving.admission import AdmissionControl
from serving.dataplane import Dataplane, RouteTable, Served, model_key
from serving.errors_and_auth import AdminToken, ApiError, MethodNotAllowed, render
from serving.metrics import ERRORS, FEEDBACK, FEEDBACK_CORRECT, SHED
from serving.metrics_recording import GatewayMetrics
from serving.names import GATEWAY_MODEL
from serving.requests import decode_json, parse_predict, too_large

log = logging.getLogger("ray.serve")
JSON = "application/json"

Handler = Callable[[Request, RouteTable, list[str]], Awaitable[Response]]


def predict_outputs(labels: tuple[str, ...], probs: np.ndarray, top_k: int) -> list[dict[str, Any]]:
    """``/v1/predict``'s ``outputs``: each text's label, its probability and the top ``top_k``."""
    order = np.argsort(-probs, axis=1)[:, :top_k]
    outputs = []
    for row, top in zip(probs, order, strict=True):
        ranked = [{"label": labels[j] if labels else int(j), "probability": float(row[j])} for j in top]
        best = ranked[0]
        outputs.append({"label": best["label"], "probability": best["probability"], "top_k": ranked})
    return outputs


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type=JSON, headers=headers)


def error_response(err: BaseException, path: str, retry_after_s: int | None = None) -> Response:
    status, headers, body = render(err, path, retry_after_s, log)
    return Response(body, status_code=status, media_type=JSON, headers=headers or None)


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large(limit)  # refused before a byte of the body is read
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _feedback_fields(payload: Any) -> tuple[str, str, int]:
    if not isinstance(payload, dict):
        raise ApiError(422, "invalid_body", "feedback must be a JSON object: {request_id, label, index?}")
    rid, label, index = payload.get("request_id"), payload.get("label"), payload.get("index", 0)
    if not isinstance(rid, str) or not rid:
        raise ApiError(422, "missing_field", "request_id is required: the id of the answered request")
    if not isinstance(label, str) or not label:
        raise ApiError(422, "missing_field", "label is required: the true label of the input")
    if isinstance(index, bool) or not isinstance(index, int):
        raise ApiError(422, "invalid_field", f"index must be an integer, got {index!r}")
    return rid, label, index


class HttpApi:
    def __init__(
        self,
        dataplane: Dataplane,
        admission: AdmissionControl,
        metrics: GatewayMetrics,
        *,
        admin_token: Callable[[], AdminToken],
        admin_state: Callable[[], dict[str, Any]],
        request_id: Callable[[Request], str] | None = None,
    ) -> None:
        self.dp = dataplane
        self.admission = admission
        self.metrics = metrics
        self._admin_token = admin_token
        self._admin_state = admin_state
        self._request_id = request_id or (lambda r: r.headers.get("x-request-id") or uuid.uuid4().hex)
        self._exact: dict[tuple[str, str], Handler] = {
            ("POST", "/v1/predict"): self.predict,
            ("POST", "/v1/feedback"): self.feedback,
            ("GET", "/v2"): self.server_metadata,
            ("GET", "/v2/health/live"): self.live,
            ("GET", "/v2/health/ready"): self.ready,
            ("GET", "/v2/models"): self.models,
            ("GET", "/admin/config"): self.admin_config,
            ("GET", "/admin/disagreements"): self.admin_disagreements,
        }
        self._paths = {p for _, p in self._exact}
        # /v2/models/{name}[/versions/{v}][/ready|/infer]
        self._model_routes: dict[tuple[str, str], Handler] = {
            ("GET", ""): self.model_metadata,
            ("GET", "ready"): self.model_ready,
            ("GET", "config"): self.model_config,
            ("POST", "infer"): self.infer,
        }

    # -- dispatch -------------------------------------------------------------------------
    def _route(self, method: str, path: str) -> tuple[Handler, list[str]]:
        if path == "/v2/":
            path = "/v2"  # the protocol's server metadata path, written with its trailing slash
        handler = self._exact.get((method, path))
        if handler is not None:
            return handler, []
        if path in self._paths:
            raise MethodNotAllowed(method, path, [m for m, p in self._exact if p == path])
        parts = path.split("/")
        # ['', 'v2', 'models', name, ...]
        if len(parts) >= 4 and parts[1] == "v2" and parts[2] == "models" and parts[3]:
            rest = parts[4:]
            if len(rest) >= 2 and rest[0] == "versions":
                rest = rest[2:]  # one version per model name: a version in the path is not a selector
            action = rest[0] if len(rest) == 1 else ("" if not rest else None)
            if action is not None:
                handler = self._model_routes.get((method, action))
                if handler is not None:
                    return handler, [parts[3]]
                allowed = [m for m, a in self._model_routes if a == action]
                if allowed:
                    raise MethodNotAllowed(method, path, allowed)
        raise ApiError(404, "not_found", f"no such endpoint: {method} {path}")

    async def handle(self, request: Request) -> Response:
        path = request.url.path
        admission = self.admission
        shed = admission.try_admit()
        if shed is not None:
            self.metrics.inc(SHED, reason=shed)
            err = ApiError(503, "overloaded", "the gateway is at capacity; retry after the Retry-After delay")
            return error_response(err, path, admission.retry_after_s)
        started = admission.now()
        try:
            handler, params = self._route(request.method, path)
            return await handler(request, self.dp.current(), params)
        except ApiError as err:
            if err.status < 500 and err.status not in (401, 404, 405):
                self.metrics.inc(ERRORS, variant="none", kind="client_error")
            return error_response(err, path)
        except Exception as err:  # noqa: BLE001 - internals stay in the log (errors_and_auth.render)
            return error_response(err, path)
        finally:
            admission.done(started)

    async def _json(self, request: Request, table: RouteTable) -> Any:
        return decode_json(await read_body(request, table.cfg.limits.max_body_bytes))

    def _headers(self, served: Served, request_id: str, table: RouteTable) -> dict[str, str]:
        return {
            "x-request-id": request_id,
            "x-slimgate-variant": served.key,
            "x-slimgate-model": served.answer.name,
            "x-slimgate-model-version": str(served.answer.version),
            "x-slimgate-config-revision": table.revision,
        }

    def _route_inputs(
        self, request: Request, table: RouteTable, body: dict[str, Any]
    ) -> tuple[str | None, str | None]:
        routing = table.cfg.routing
        pinned = request.headers.get(routing.pin_header) if routing.pin_header else None
        sticky = None
        if routing.sticky_key is not None:
            if routing.sticky_key.header:
                sticky = request.headers.get(routing.sticky_key.header)
            elif routing.sticky_key.json_field:
                value = body.get(routing.sticky_key.json_field)
                if isinstance(value, str | int) and not isinstance(value, bool):
                    sticky = str(value)
        return pinned, sticky or None

    # -- /v1 ------------------------------------------------------------------------------
    async def predict(self, request: Request, table: RouteTable, _params: list[str]) -> Response:
        payload = await self._json(request, table)
        n_labels = len(self.dp.labels(table.stable)) or 1
        req = parse_predict(payload, table.cfg.limits, n_labels)
        pinned, sticky = self._route_inputs(request, table, req.body)
        request_id = self._request_id(request)
        served = await self.dp.serve(table, req.texts, request_id, pinned=pinned, sticky=sticky)
        outputs = predict_outputs(served.labels, served.answer.probabilities, req.top_k)
        if served.answer.stages is not None:
            for out, stage in zip(outputs, served.answer.stages, strict=True):
                out["stage"] = stage
        body = {
            "request_id": request_id,
            "variant": served.key,
            "model": served.answer.name,
            "version": served.answer.version,
            "route": served.route,
            "outputs": outputs,
        }
        return json_response(body, headers=self._headers(served, request_id, table))

    async def feedback(self, request: Request, table: RouteTable, _params: list[str]) -> Response:
        """Ground truth for an earlier answer: ``{"request_id", "label", "index"?}``."""
        rid, label, index = _feedback_fields(await self._json(request, table))
        join = self.dp.feedback
        served = join.lookup(rid) if join is not None else None
        if served is None:
            raise ApiError(
                404,
                "unknown_request",
                f"request_id {rid!r} is unknown or older than "
                f"feedback.retention_s ({table.cfg.feedback.retention_s:g} s)",
            )
        if not 0 <= index < len(served.labels):
            raise ApiError(
                422, "invalid_field", f"index must be from 0 to {len(served.labels) - 1}, got {index}"
            )
        known = self.dp.labels(served.variant)
        if known and label not in known:
            raise ApiError(422, "unknown_label", f"label {label!r} is not one of the model's labels")
        if not served.score(index):
            msg = f"feedback for request {rid!r} input {index} was already recorded"
            raise ApiError(409, "duplicate_feedback", msg)
        correct = served.labels[index] == label
        self.metrics.inc(FEEDBACK, variant=served.variant)
        if correct:
            self.metrics.inc(FEEDBACK_CORRECT, variant=served.variant)
        body = {
            "request_id": rid,
            "index": index,
            "variant": served.variant,
            "served_label": served.labels[index],
            "correct": correct,
        }
        return json_response(body, 202)

    # -- /v2 ------------------------------------------------------------------------------
    async def server_metadata(self, _r: Request, _t: RouteTable, _p: list[str]) -> Response:
        return json_response(oip.server_metadata(["binary_tensor_data", "model_configuration"]))

    async def live(self, _r: Request, _t: RouteTable, _p: list[str]) -> Response:
        return json_response({"live": True})

    async def ready(self, _r: Request, table: RouteTable, _p: list[str]) -> Response:
        ok = self.dp.is_ready(table.stable)
        return json_response({"ready": ok}, 200 if ok else 503)

    async def models(self, _r: Request, table: RouteTable, _p: list[str]) -> Response:
        return json_response({"models": [GATEWAY_MODEL, *sorted(table.cfg.variants)]})

    async def model_metadata(self, _r: Request, table: RouteTable, params: list[str]) -> Response:
        v = self.dp.model_view(table, params[0])
        return json_response(oip.metadata(v.name, v.versions, v.platform, v.info.labels))

    async def model_config(self, _r: Request, table: RouteTable, params: list[str]) -> Response:
        v = self.dp.model_view(table, params[0])
        max_inputs = table.cfg.limits.max_inputs
        return json_response(oip.model_config(v.name, v.platform, v.info.labels, max_inputs, v.batching))

    async def model_ready(self, _r: Request, table: RouteTable, params: list[str]) -> Response:
        key = model_key(table, params[0]) or table.stable
        ok = self.dp.is_ready(key)
        return json_response({"name": params[0], "ready": ok}, 200 if ok else 503)

    async def infer(self, request: Request, table: RouteTable, params: list[str]) -> Response:
        name = params[0]
        pinned = model_key(table, name)
        body = await read_body(request, table.cfg.limits.max_body_bytes)
        req = oip.decode_infer(body, request.headers.get(oip.HEADER_LENGTH), table.cfg.limits)
        # The routed model honours the pin header and the sticky key (read from the request's
        # parameters when it is a JSON field); a variant's own model is pinned by its name.
        pin_header, sticky = self._route_inputs(request, table, req.parameters)
        request_id = self._request_id(request)
        served = await self.dp.serve(table, req.texts, request_id, pinned=pinned or pin_header, sticky=sticky)
        version = table.revision if pinned is None else str(served.answer.version)
        content, header_length = oip.encode_infer(
            name,
            version,
            req.request_id or request_id,
            served.label_names(),
            served.answer.probabilities,
            req.outputs,
        )
        headers = self._headers(served, request_id, table)
        if header_length is None:
            return Response(content, media_type=JSON, headers=headers)
        headers[oip.HEADER_LENGTH] = str(header_length)
        return Response(content, media_type="application/octet-stream", headers=headers)

    # -- /admin ---------------------------------------------------------------------------
    async def admin_config(self, request: Request, table: RouteTable, _p: list[str]) -> Response:
        self._admin_token().check(request.headers.get("authorization"))
        return json_response(
            {
                "revision": table.revision,
                "config": table.cfg.model_dump(mode="json"),
                **self._admin_state(),
                "shadow_in_flight": self.dp.mirror.stats(),
            }
        )

    async def admin_disagreements(self, request: Request, _table: RouteTable, _p: list[str]) -> Response:
        self._admin_token().check(request.headers.get("authorization"))
        log_ = self.dp.mirror.disagreements
        return json_response({"total": log_.total, "samples": log_.snapshot()})
