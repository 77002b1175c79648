"""The gateway's ingress: HTTP -> router -> variant handle -> backend.

The router owns the request path and nothing else: it validates input, picks a variant
(pin header, sticky key, weighted split), calls that variant's Ray Serve handle, falls back
to the stable variant when a candidate fails, and mirrors a sample of requests to shadow
variants off the response path. Everything it decides from arrives through
:meth:`Router.reconfigure` (Ray Serve's ``user_config``) and is swapped in as one immutable
:class:`RouteTable`, so a request that started under one config finishes under it, and a
weight change never restarts a replica.
"""

import asyncio
import hmac
import logging
import os
import random
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from ray import serve
from starlette.exceptions import HTTPException as StarletteHTTPException

from serving import oip
from serving.config import GatewayConfig, config_revision, parse_config
from serving.feedback import FeedbackJoin
from serving.metrics import GatewayMetrics
from serving.policies import DisagreementLog, InFlightLimiter, ShadowSampler, WeightedSplit, compare_batch
from serving.requests import ApiError, PredictRequest, decode_json, parse_predict, too_large

log = logging.getLogger("ray.serve")
GATEWAY_MODEL = "slimgate"
VARIANT_APP_PREFIX = "variant-"
VARIANT_DEPLOYMENT = "Variant"


@dataclass
class RouteTable:
    """Everything one request needs to be routed, built once per config revision."""

    cfg: GatewayConfig
    revision: str
    split: WeightedSplit
    samplers: dict[str, ShadowSampler]
    token: str | None

    @classmethod
    def build(cls, cfg: GatewayConfig, revision: str, rng: random.Random) -> "RouteTable":
        weights = {k: w for k, w in cfg.routing.weights.items() if w > 0}
        env_token = (os.environ.get(cfg.admin.token_env) or "").strip()
        inline = cfg.admin.token.get_secret_value().strip() if cfg.admin.token else ""
        return cls(
            cfg=cfg,
            revision=revision,
            split=WeightedSplit(weights, rng=rng),
            samplers={k: ShadowSampler(cfg.shadow.fraction, rng) for k in cfg.shadow.variants},
            token=env_token or inline or None,
        )


@dataclass
class CallResult:
    key: str
    route: str
    probabilities: np.ndarray
    name: str
    version: int
    seconds: float
    labels: tuple[str, ...] = field(default=())


app = FastAPI(title="slimgate gateway", docs_url=None, redoc_url=None, openapi_url=None)


@app.exception_handler(ApiError)
async def _api_error(_request: Request, err: ApiError) -> JSONResponse:
    headers = {"www-authenticate": "Bearer"} if err.status == 401 else None
    return JSONResponse(err.body(), status_code=err.status, headers=headers)


@app.exception_handler(StarletteHTTPException)
async def _http_error(_request: Request, err: StarletteHTTPException) -> JSONResponse:
    code = {404: "not_found", 405: "method_not_allowed"}.get(err.status_code, "http_error")
    return JSONResponse({"error": {"code": code, "message": str(err.detail)}}, status_code=err.status_code)


@app.exception_handler(Exception)
async def _internal_error(_request: Request, err: Exception) -> JSONResponse:
    # Internals stay in the log; the client gets a stable, content-free 500.
    log.exception("unhandled error in the router: %s", err)
    return JSONResponse({"error": {"code": "internal", "message": "internal error"}}, status_code=500)


def _parse_feedback(payload: Any) -> tuple[str, str, int]:
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


def _request_id() -> str:
    from ray.serve.context import _get_serve_request_context

    return _get_serve_request_context().request_id or uuid.uuid4().hex


async def _read_body(request: Request, limit: int) -> bytes:
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


@serve.deployment(name="Router")
@serve.ingress(app)
class Router:
    def __init__(self) -> None:
        self.metrics = GatewayMetrics()
        self.rng = random.Random()
        self.table: RouteTable | None = None
        self.handles: dict[str, Any] = {}
        # What each variant's replicas loaded (name, version, labels, backend), learnt from the
        # replicas themselves the first time a version answers: the registry is not read here.
        self.info: dict[str, dict[str, Any]] = {}
        self.label_tables: dict[str, tuple[str, ...]] = {}
        self.limiter = InFlightLimiter(1)
        self.disagreements = DisagreementLog(1)
        self.feedback: FeedbackJoin | None = None
        self.shadow_tasks: set[asyncio.Task] = set()
        # Variants whose handle has reached a running replica. A variant the config just added is
        # routed to only from then on: until its application is up, its share goes to stable.
        self.ready: set[str] = set()
        self.warming: set[str] = set()
        threading.Thread(target=self._restate_gauges, name="slimgate-gauges", daemon=True).start()

    def _restate_gauges(self) -> None:
        # Ray's metrics agent forgets a gauge that is not set again within two report intervals,
        # so the router states its weights and config revision every second, not once per config.
        # Variants removed from the config are simply no longer stated and age out.
        while True:
            table = self.table
            if table is not None:
                for key in table.cfg.variants:
                    self.metrics.set("slimgate_weight", table.cfg.routing.weights.get(key, 0), variant=key)
                self.metrics.set("slimgate_config_revision", 1, revision=table.revision)
            time.sleep(1.0)

    # -- configuration -------------------------------------------------------------------
    def reconfigure(self, user_config: dict[str, Any]) -> None:
        cfg = parse_config(user_config["gateway"], "router user_config")
        table = RouteTable.build(cfg, config_revision(cfg), self.rng)
        self.limiter.set_limit(cfg.shadow.max_in_flight)
        if self.disagreements.capacity != cfg.shadow.disagreement_samples:
            self.disagreements = DisagreementLog(cfg.shadow.disagreement_samples)
        fb = cfg.feedback
        if self.feedback is None or (self.feedback.max_entries, self.feedback.retention_s) != (
            fb.max_entries,
            fb.retention_s,
        ):
            self.feedback = FeedbackJoin(fb.max_entries, fb.retention_s)
        self.table = table  # one assignment: requests in flight keep the table they started with
        self.ready &= cfg.variants.keys()
        for key in cfg.variants.keys() - self.ready - self.warming:
            # Ray deploys a new variant's application and this config at the same moment; its
            # replicas take seconds to start. Wait for them off the request path.
            self.warming.add(key)
            threading.Thread(target=self._warm, args=(key,), name=f"warm-{key}", daemon=True).start()

    def _warm(self, key: str) -> None:
        try:
            while self.table is not None and key in self.table.cfg.variants:
                try:
                    self._handle(key).info.remote().result(timeout_s=30)
                    self.ready.add(key)
                    return
                except Exception:  # noqa: BLE001 - not deployed or not ready yet: try again shortly
                    time.sleep(0.5)
        finally:
            self.warming.discard(key)

    def _table(self) -> RouteTable:
        if self.table is None:
            raise ApiError(503, "not_configured", "the gateway has not received its configuration yet")
        return self.table

    def _handle(self, key: str) -> Any:
        handle = self.handles.get(key)
        if handle is None:
            handle = serve.get_deployment_handle(VARIANT_DEPLOYMENT, app_name=VARIANT_APP_PREFIX + key)
            self.handles[key] = handle
        return handle

    # -- routing ---------------------------------------------------------------------------
    def _choose(self, table: RouteTable, request: Request, body: dict[str, Any]) -> tuple[str, str]:
        routing = table.cfg.routing
        if routing.pin_header:
            pinned = request.headers.get(routing.pin_header)
            if pinned is not None:
                if pinned not in table.cfg.variants:
                    raise ApiError(
                        400,
                        "unknown_variant",
                        f"header {routing.pin_header}: {pinned!r} is not a served variant "
                        f"(known: {', '.join(sorted(table.cfg.variants))})",
                    )
                return pinned, "pinned"
        key = None
        if routing.sticky_key is not None:
            if routing.sticky_key.header:
                key = request.headers.get(routing.sticky_key.header)
            else:
                value = body.get(routing.sticky_key.json_field)
                key = value if isinstance(value, str | int) and not isinstance(value, bool) else None
        if key is not None and str(key):
            chosen, route = table.split.choose(str(key)), "sticky"
        else:
            chosen, route = table.split.choose(None, self.rng), "split"
        if chosen not in self.ready and chosen != routing.stable:
            return routing.stable, "starting"  # its replicas are not up yet
        return chosen, route

    async def _call(self, table: RouteTable, key: str, route: str, texts: list[str]) -> CallResult:
        start = time.perf_counter()
        response = self._handle(key).remote(texts)
        try:
            out = await asyncio.wait_for(response, timeout=table.cfg.variant_timeout_s(key))
        except BaseException:
            response.cancel()
            raise
        seconds = time.perf_counter() - start
        known = self.info.get(key)
        if known is None or (known["name"], known["version"]) != (out["name"], out["version"]):
            await self._learn(key)
        return CallResult(key, route, out["probabilities"], out["name"], out["version"], seconds)

    async def _learn(self, key: str) -> dict[str, Any]:
        """Ask a variant's replicas what they loaded; once per variant version, off the common path."""
        info = await asyncio.wait_for(self._handle(key).info.remote(), timeout=10.0)
        self.info[key] = info
        self.label_tables[key] = tuple(info["labels"])
        return info

    async def _serve(self, table: RouteTable, key: str, route: str, texts: list[str]) -> CallResult:
        """Call the chosen variant; if it is not the stable one and fails, answer from stable."""
        stable = table.cfg.routing.stable
        try:
            return await self._call(table, key, route, texts)
        except Exception as err:  # noqa: BLE001 - any variant failure is handled the same way
            kind = "timeout" if isinstance(err, TimeoutError) else "variant_error"
            self.metrics.inc("slimgate_errors", variant=key, kind=kind)
            if key == stable:
                raise ApiError(503, "unavailable", f"variant {key} could not answer ({kind})") from None
            log.warning("variant %s failed (%s: %s); falling back to %s", key, kind, err, stable)
        self.metrics.inc("slimgate_fallbacks", variant=key)
        try:
            return await self._call(table, stable, "fallback", texts)
        except Exception as err:  # noqa: BLE001
            kind = "timeout" if isinstance(err, TimeoutError) else "variant_error"
            self.metrics.inc("slimgate_errors", variant=stable, kind=kind)
            raise ApiError(503, "unavailable", f"no variant could answer (stable {stable}: {kind})") from None

    # -- shadowing -------------------------------------------------------------------------
    def _mirror(self, table: RouteTable, served: CallResult, texts: list[str], request_id: str) -> None:
        for key, sampler in table.samplers.items():
            if key == served.key or key not in self.ready or not sampler.should_mirror():
                continue
            if not self.limiter.try_acquire():
                self.metrics.inc("slimgate_shadow_dropped", variant=key)
                continue
            self.metrics.inc("slimgate_shadow_requests", variant=key)
            task = asyncio.create_task(self._shadow(table, key, served, texts, request_id))
            self.shadow_tasks.add(task)
            task.add_done_callback(self.shadow_tasks.discard)

    async def _shadow(
        self, table: RouteTable, key: str, served: CallResult, texts: list[str], rid: str
    ) -> None:
        limiter = self.limiter
        try:
            shadow = await self._call(table, key, "shadow", texts)
        except Exception as err:  # noqa: BLE001 - a shadow failure must never reach a client
            self.metrics.inc("slimgate_shadow_errors", variant=key)
            log.info("shadow %s failed: %s", key, type(err).__name__)
            return
        finally:
            limiter.release()
        labels = self._labels(key) or self._labels(served.key)
        cmp = compare_batch(served.probabilities, shadow.probabilities, labels)
        agree = int(sum(c.agree for c in cmp))
        self.metrics.inc("slimgate_shadow_agreements", agree, variant=key)
        self.metrics.inc("slimgate_shadow_disagreements", len(cmp) - agree, variant=key)
        for i, c in enumerate(cmp):
            self.metrics.observe("slimgate_shadow_distance", c.tv_distance, variant=key)
            if not c.agree:
                self.disagreements.add(
                    text=texts[i],
                    served_variant=served.key,
                    served_label=c.served_label,
                    shadow_variant=key,
                    shadow_label=c.shadow_label,
                    tv_distance=c.tv_distance,
                    request_id=rid,
                )
        self.metrics.observe(
            "slimgate_shadow_latency_delta_seconds", max(0.0, shadow.seconds - served.seconds), variant=key
        )

    async def _learn_or_503(self, key: str) -> dict[str, Any]:
        try:
            return await self._learn(key)
        except Exception as err:  # noqa: BLE001 - a variant that cannot say what it serves is not ready
            raise ApiError(503, "unavailable", f"variant {key} is not ready ({type(err).__name__})") from None

    def _labels(self, key: str) -> tuple[str, ...]:
        return self.label_tables.get(key, ())

    # -- shared path of /v1/predict and the OIP infer endpoint -----------------------------
    async def _predict(
        self,
        table: RouteTable,
        request: Request,
        texts: list[str],
        body: dict[str, Any],
        pinned: str | None = None,
    ) -> tuple[CallResult, str]:
        request_id = _request_id()
        key, route = (pinned, "pinned") if pinned else self._choose(table, request, body)
        result = await self._serve(table, key, route, texts)
        self.metrics.inc("slimgate_requests", variant=result.key, route=result.route)
        self.metrics.inc("slimgate_inputs", len(texts), variant=result.key)
        self.metrics.observe(
            "slimgate_request_latency_seconds", result.seconds, variant=result.key, route=result.route
        )
        labels = self._labels(result.key)
        for idx in result.probabilities.argmax(axis=1):
            self.metrics.inc(
                "slimgate_predictions", variant=result.key, label=labels[idx] if labels else str(idx)
            )
        result.labels = labels
        if self.feedback is not None and labels:
            self.feedback.record(
                request_id, result.key, [labels[i] for i in result.probabilities.argmax(axis=1)]
            )
        if table.samplers:
            self._mirror(table, result, texts, request_id)
        return result, request_id

    async def _body(self, table: RouteTable, request: Request) -> Any:
        try:
            return decode_json(await _read_body(request, table.cfg.limits.max_body_bytes))
        except ApiError as err:
            self.metrics.inc("slimgate_errors", variant="none", kind="client_error")
            raise err

    @staticmethod
    def _headers(result: CallResult, request_id: str, table: RouteTable) -> dict[str, str]:
        return {
            "x-request-id": request_id,
            "x-slimgate-variant": result.key,
            "x-slimgate-model": result.name,
            "x-slimgate-model-version": str(result.version),
            "x-slimgate-config-revision": table.revision,
        }

    # -- HTTP API --------------------------------------------------------------------------
    @app.post("/v1/predict")
    async def predict(self, request: Request) -> JSONResponse:
        table = self._table()
        payload = await self._body(table, request)
        stable = table.cfg.routing.stable
        if stable not in self.label_tables:
            await self._learn_or_503(stable)
        n_labels = len(self._labels(stable)) or 1
        try:
            req: PredictRequest = parse_predict(payload, table.cfg.limits, n_labels)
        except ApiError:
            self.metrics.inc("slimgate_errors", variant="none", kind="client_error")
            raise
        result, request_id = await self._predict(table, request, req.texts, req.body)
        labels = result.labels
        outputs = []
        for row in result.probabilities:
            top = np.argsort(-row)[: req.top_k]
            outputs.append(
                {
                    "label": labels[int(top[0])] if labels else int(top[0]),
                    "probability": float(row[top[0]]),
                    "top_k": [
                        {"label": labels[int(j)] if labels else int(j), "probability": float(row[j])}
                        for j in top
                    ],
                }
            )
        body = {
            "request_id": request_id,
            "variant": result.key,
            "model": result.name,
            "version": result.version,
            "route": result.route,
            "outputs": outputs,
        }
        return JSONResponse(body, headers=self._headers(result, request_id, table))

    @app.post("/v1/feedback")
    async def feedback_endpoint(self, request: Request) -> JSONResponse:
        """Ground truth for an earlier answer: ``{"request_id", "label", "index"?}``."""
        table = self._table()
        payload = await self._body(table, request)
        rid, label, index = _parse_feedback(payload)
        served = self.feedback.lookup(rid) if self.feedback is not None else None
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
        known = self._labels(served.variant)
        if known and label not in known:
            raise ApiError(422, "unknown_label", f"label {label!r} is not one of the model's labels")
        if index in served.scored:
            raise ApiError(
                409, "duplicate_feedback", f"feedback for request {rid!r} input {index} was already recorded"
            )
        served.scored.add(index)
        correct = served.labels[index] == label
        self.metrics.inc("slimgate_feedback", variant=served.variant)
        if correct:
            self.metrics.inc("slimgate_feedback_correct", variant=served.variant)
        return JSONResponse(
            {
                "request_id": rid,
                "index": index,
                "variant": served.variant,
                "served_label": served.labels[index],
                "correct": correct,
            },
            status_code=202,
        )

    @app.get("/v2/health/live")
    async def live(self) -> dict[str, bool]:
        return {"live": True}

    @app.get("/v2/health/ready")
    async def ready(self) -> JSONResponse:
        table = self._table()
        ok = await self._variant_ready(table, table.cfg.routing.stable)
        return JSONResponse({"ready": ok}, status_code=200 if ok else 503)

    async def _variant_ready(self, table: RouteTable, key: str) -> bool:
        try:
            await asyncio.wait_for(self._handle(key).info.remote(), timeout=2.0)
            return True
        except Exception:  # noqa: BLE001 - any failure to answer means not ready
            return False

    def _model(self, table: RouteTable, name: str) -> str | None:
        """None for the routed gateway model, the variant key for a pinned one; 404 otherwise."""
        if name == GATEWAY_MODEL:
            return None
        if name in table.cfg.variants:
            return name
        known = [GATEWAY_MODEL, *sorted(table.cfg.variants)]
        raise ApiError(404, "unknown_model", f"model {name!r} not found (known: {', '.join(known)})")

    @app.get("/v2/models")
    async def models(self) -> dict[str, Any]:
        table = self._table()
        return {"models": [GATEWAY_MODEL, *sorted(table.cfg.variants)]}

    @app.get("/v2/models/{name}")
    async def model_metadata(self, name: str) -> dict[str, Any]:
        table = self._table()
        key = self._model(table, name)
        target = key or table.cfg.routing.stable
        info = self.info.get(target) or await self._learn_or_503(target)
        n_labels = len(info.get("labels", ()))
        if key is None:
            return oip.metadata(GATEWAY_MODEL, [table.revision], "slimgate-router", n_labels)
        platform = f"{info.get('backend', 'unknown')}/{info.get('precision', 'unknown')}"
        return oip.metadata(key, [str(info.get("version", ""))], platform, n_labels)

    @app.get("/v2/models/{name}/ready")
    async def model_ready(self, name: str) -> JSONResponse:
        table = self._table()
        key = self._model(table, name) or table.cfg.routing.stable
        ok = await self._variant_ready(table, key)
        return JSONResponse({"name": name, "ready": ok}, status_code=200 if ok else 503)

    @app.post("/v2/models/{name}/infer")
    async def infer(self, name: str, request: Request) -> JSONResponse:
        table = self._table()
        pinned = self._model(table, name)
        payload = await self._body(table, request)
        try:
            texts, wanted, client_id = oip.decode_infer(payload, table.cfg.limits)
        except ApiError:
            self.metrics.inc("slimgate_errors", variant="none", kind="client_error")
            raise
        body = payload.get("parameters") if isinstance(payload.get("parameters"), dict) else {}
        result, request_id = await self._predict(table, request, texts, body, pinned=pinned)
        labels = [result.labels[i] if result.labels else str(i) for i in result.probabilities.argmax(axis=1)]
        version = table.revision if pinned is None else str(result.version)
        out = oip.encode_infer(name, version, client_id or request_id, labels, result.probabilities, wanted)
        return JSONResponse(out, headers=self._headers(result, request_id, table))

    # -- admin -----------------------------------------------------------------------------
    def _authorize(self, table: RouteTable, request: Request) -> None:
        if table.token is None:
            raise ApiError(
                401,
                "admin_disabled",
                f"admin API disabled: no token configured (set ${table.cfg.admin.token_env})",
            )
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not given:
            raise ApiError(401, "unauthorized", "admin endpoints need 'Authorization: Bearer <token>'")
        if not hmac.compare_digest(given.strip().encode(), table.token.encode()):
            raise ApiError(401, "unauthorized", "invalid admin token")

    @app.get("/admin/config")
    async def admin_config(self, request: Request) -> dict[str, Any]:
        table = self._table()
        self._authorize(table, request)
        return {
            "revision": table.revision,
            "config": table.cfg.model_dump(mode="json"),
            "variants": self.info,
            "shadow_in_flight": self.limiter.stats(),
        }

    @app.get("/admin/disagreements")
    async def admin_disagreements(self, request: Request) -> dict[str, Any]:
        table = self._table()
        self._authorize(table, request)
        return {"total": self.disagreements.total, "samples": self.disagreements.snapshot()}
