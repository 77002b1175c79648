"""The gateway's ingress deployment: one Ray Serve replica = HTTP -> dataplane -> variant -> backend.

:class:`Router` is the composition root of a router replica. It builds the pieces once (metrics,
the :class:`~serving.dataplane.Dataplane`, :class:`~serving.admission.AdmissionControl`, the
:class:`~serving.http_api.HttpApi`) and keeps the variants the dataplane calls in step with the
config Ray Serve hands it (``user_config``, in :meth:`reconfigure`):

* a variant placed in the router is loaded in this process, off the event loop, and swapped in
  once it has answered a warm-up inference; a new artifact for it is loaded the same way while
  the old one keeps serving, so nothing restarts. If a load fails, the variant gets no traffic
  (stable answers its share) and the failure is reported (``/admin/config``, the
  ``slimgate_variant_ready`` gauge, the log); a stable variant that fails to reload keeps its
  previous artifact.
* a variant with a deployment of its own is reached through its handle, and receives traffic
  only once its replicas answer.

Requests never wait on any of this: they run against the route table and variant set that were
current when they arrived.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import threading
import time
from dataclasses import asdict
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from serving.admission import AdmissionControl
from serving.brownout_plan import accuracies, brownout_targets, offline_figures
from serving.cascade_client import CascadeClient, read_calibration
from serving.config import GatewayConfig, config_revision, parse_config
from serving.dataplane import Dataplane, RouteTable
from serving.errors_and_auth import AdminToken, ApiError
from serving.http_api import HttpApi
from serving.metrics import (
    ADMISSION_LIMIT,
    BROWNOUT_FRACTION,
    CASCADE_EXPECTED_ESCALATION,
    CONFIG_REVISION,
    EXPECTED_ACCURACY,
    IN_FLIGHT,
    SLO_GUARD_FIGURE,
    VARIANT_READY,
    WEIGHT,
)
from serving.metrics_recording import GatewayMetrics
from serving.names import VARIANT_APP_PREFIX, VARIANT_DEPLOYMENT
from serving.oip_grpc import UNIMPLEMENTED, GrpcApi
from serving.variant_clients import (
    InlineVariant,
    RemoteVariant,
    VariantClient,
    artifact_identity,
    remote_coalescing,
)
from serving.warmup import record as record_warmup

log = logging.getLogger("ray.serve")


def _ray_request_id(request: Request) -> str:
    """Ray's id of this request (the client's ``x-request-id`` when it sent one)."""
    from ray.serve.context import _get_serve_request_context

    return (
        _get_serve_request_context().request_id or request.headers.get("x-request-id") or os.urandom(16).hex()
    )


class Router:
    def __init__(self) -> None:
        from ray import serve

        self._serve = serve
        self.metrics = GatewayMetrics()
        self.dp = Dataplane(self.metrics, rng=random.Random())
        self.cfg: GatewayConfig | None = None
        self.admission: AdmissionControl | None = None
        self.api: HttpApi | None = None
        self.grpc: GrpcApi | None = None
        self.token = AdminToken(None, "SLIMGATE_ADMIN_TOKEN")
        self.clients: dict[str, VariantClient] = {}
        self.load_errors: dict[str, str] = {}
        self._lock = asyncio.Lock()
        try:
            self.replica = serve.get_replica_context().replica_id.unique_id
        except Exception:  # noqa: BLE001 - outside a replica (tests)
            self.replica = "local"
        threading.Thread(target=self._restate_gauges, name="slimgate-gauges", daemon=True).start()

    # -- configuration --------------------------------------------------------------------
    async def reconfigure(self, user_config: dict[str, Any]) -> None:
        cfg = parse_config(user_config["gateway"], "router user_config")
        async with self._lock:
            clients = await self._sync_variants(cfg)
            offline = await asyncio.to_thread(offline_figures, cfg) if cfg.slo.objective_s is not None else {}
            table = RouteTable.build(
                cfg, config_revision(cfg), self.dp.rng, brownout_targets(cfg, offline), accuracies(offline)
            )
            if self.admission is None:
                self.admission = AdmissionControl(cfg.admission)
                self.api = HttpApi(
                    self.dp,
                    self.admission,
                    self.metrics,
                    admin_token=lambda: self.token,
                    admin_state=self._admin_state,
                    request_id=_ray_request_id,
                )
                self.grpc = GrpcApi(self.dp, self.admission, self.metrics)
            else:
                self.admission.configure(cfg.admission)
            self.token = AdminToken.of(cfg.admin)
            self.dp.configure(table, clients)
            old = self.clients
            self.clients = clients
            self.cfg = cfg
        for key, client in old.items():
            if clients.get(key) is not client:
                client.close()

    async def _sync_variants(self, cfg: GatewayConfig) -> dict[str, VariantClient]:
        registry = str(cfg.registry) if cfg.registry else None
        out: dict[str, VariantClient] = {}
        for key, spec in sorted(cfg.variants.items()):
            current = self.clients.get(key)
            if spec.cascade is not None:
                continue  # composed from its stages' clients below
            if not spec.in_router:
                if isinstance(current, RemoteVariant):
                    current.configure(spec)
                    out[key] = current
                else:
                    remote = RemoteVariant(key, self._handle_factory(key), remote_coalescing(spec))
                    remote.start_warming()
                    out[key] = remote
                continue
            identity = artifact_identity(spec, registry)
            if isinstance(current, InlineVariant) and current.identity == identity:
                current.configure(spec)
                out[key] = current
                continue
            try:
                loaded = await asyncio.to_thread(InlineVariant.load, key, spec, registry, self.metrics)
                self.load_errors.pop(key, None)
                out[key] = loaded
                log.info("variant %s: loaded %s in the router", key, spec.ref)
            except Exception as err:  # noqa: BLE001 - a bad artifact must not take the router down
                self.load_errors[key] = f"{type(err).__name__}: {err}"
                log.error("variant %s: could not load %s in the router: %s", key, spec.ref, err)
                if key == cfg.routing.stable and isinstance(current, InlineVariant):
                    current.configure(spec)
                    out[key] = current  # stable keeps serving what it had
        for key, spec in sorted(cfg.variants.items()):
            if spec.cascade is not None:
                cascade = await self._cascade(key, spec, out, registry)
                if cascade is not None:
                    out[key] = cascade
        return out

    async def _cascade(
        self, key: str, spec: Any, stages: dict[str, VariantClient], registry: str | None
    ) -> CascadeClient | None:
        first, then = stages.get(spec.cascade.first), stages.get(spec.cascade.then)
        if first is None or then is None:
            missing = spec.cascade.first if first is None else spec.cascade.then
            self.load_errors[key] = f"its stage {missing} is not loaded in this router"
            return None
        current = self.clients.get(key)
        same_entry = isinstance(current, CascadeClient) and (
            current.calibration.name,
            current.calibration.version,
        ) == (spec.name, spec.version)
        if (
            isinstance(current, CascadeClient)
            and same_entry
            and current.first is first
            and current.then is then
        ):
            current.configure(spec)
            return current
        try:
            calibration = await asyncio.to_thread(read_calibration, registry, spec.ref)
        except Exception as err:  # noqa: BLE001 - a bad entry must not take the router down
            self.load_errors[key] = f"{type(err).__name__}: {err}"
            log.error("cascade %s: could not read %s: %s", key, spec.ref, err)
            return None
        self.load_errors.pop(key, None)
        return CascadeClient(key, spec, first, then, calibration, self.metrics)

    def _handle_factory(self, key: str):
        def make() -> Any:
            return self._serve.get_deployment_handle(VARIANT_DEPLOYMENT, app_name=VARIANT_APP_PREFIX + key)

        return make

    def _admin_state(self) -> dict[str, Any]:
        variants = {}
        for key in sorted(self.cfg.variants) if self.cfg else []:
            client = self.clients.get(key)
            info = client.info if client is not None else None
            warmup = client.warmup if isinstance(client, InlineVariant) else None
            variants[key] = {
                **(info.as_dict() if info is not None else {"key": key}),
                **({"warmup": warmup.as_dict()} if warmup is not None else {}),
                "ready": bool(client is not None and client.ready),
                **({"load_error": self.load_errors[key]} if key in self.load_errors else {}),
            }
        adm = self.admission
        guard = self.dp.guard
        return {
            "variants": variants,
            "slo_guard": {
                "enabled": guard.enabled,
                "brownouts": {
                    k: {"target": st.target, "fraction": st.fraction, "figures": dict(st.figures)}
                    for k, st in guard.states.items()
                },
                "expected_accuracy": guard.expected_accuracy(),
                "changes": [{**asdict(c), "kind": c.kind} for c in guard.recent],
            },
            "admission": {
                "in_flight": adm.in_flight if adm else 0,
                "limit": adm.limit if adm else 0,
                "objective_s": adm.objective_s if adm else None,
            },
        }

    def _restate_gauges(self) -> None:
        # Ray's metrics agent forgets a gauge that is not set again within two report intervals,
        # so the router states its gauges every second, not once per config. Variants removed
        # from the config are simply no longer stated and age out.
        while True:
            cfg, adm = self.cfg, self.admission
            if cfg is not None:
                for key in cfg.variants:
                    self.metrics.set(WEIGHT, cfg.routing.weights.get(key, 0), variant=key)
                    client = self.clients.get(key)
                    self.metrics.set(
                        VARIANT_READY, 1 if client is not None and client.ready else 0, variant=key
                    )
                    if isinstance(client, InlineVariant) and client.warmup is not None:
                        record_warmup(self.metrics, client.warmup, key, self.replica)
                    if (
                        isinstance(client, CascadeClient)
                        and client.calibration.expected_escalation is not None
                    ):
                        expected = client.calibration.expected_escalation
                        self.metrics.set(CASCADE_EXPECTED_ESCALATION, expected, variant=key)
                self.metrics.set(CONFIG_REVISION, 1, revision=config_revision(cfg))
                self._restate_guard()
            if adm is not None:
                self.metrics.set(IN_FLIGHT, adm.in_flight, replica=self.replica)
                self.metrics.set(ADMISSION_LIMIT, adm.limit, replica=self.replica)
            time.sleep(1.0)

    def _restate_guard(self) -> None:
        guard, replica = self.dp.guard, self.replica
        if not guard.enabled:
            return
        for key, st in list(guard.states.items()):
            self.metrics.set(BROWNOUT_FRACTION, st.fraction, variant=key, target=st.target, replica=replica)
            for figure, value in list(st.figures.items()):
                self.metrics.set(SLO_GUARD_FIGURE, value, variant=key, figure=figure, replica=replica)
        expected = guard.expected_accuracy()
        if expected is not None:
            self.metrics.set(EXPECTED_ACCURACY, expected, replica=replica)

    # -- HTTP -----------------------------------------------------------------------------
    async def __call__(self, request: Request) -> Response:
        api = self.api
        if api is None:
            from serving.http_api import error_response

            err = ApiError(503, "not_configured", "the gateway has not received its configuration yet")
            return error_response(err, request.url.path)
        return await api.handle(request)

    # -- gRPC (Ray Serve calls the method named after the RPC) -----------------------------
    async def _rpc(self, method: str, request: Any, grpc_context: Any) -> Any:
        if self.grpc is None:
            import grpc
            from tritonclient.grpc import service_pb2

            if grpc_context is not None:
                grpc_context.set_code(grpc.StatusCode.UNAVAILABLE)
                grpc_context.set_details("the gateway has not received its configuration yet")
            return getattr(service_pb2, f"{method}Response")()
        return await self.grpc.call(method, request, grpc_context)

    async def ServerLive(self, request: Any, grpc_context: Any = None) -> Any:  # noqa: N802
        return await self._rpc("ServerLive", request, grpc_context)

    async def ServerReady(self, request: Any, grpc_context: Any = None) -> Any:  # noqa: N802
        return await self._rpc("ServerReady", request, grpc_context)

    async def ServerMetadata(self, request: Any, grpc_context: Any = None) -> Any:  # noqa: N802
        return await self._rpc("ServerMetadata", request, grpc_context)

    async def ModelReady(self, request: Any, grpc_context: Any = None) -> Any:  # noqa: N802
        return await self._rpc("ModelReady", request, grpc_context)

    async def ModelMetadata(self, request: Any, grpc_context: Any = None) -> Any:  # noqa: N802
        return await self._rpc("ModelMetadata", request, grpc_context)

    async def ModelConfig(self, request: Any, grpc_context: Any = None) -> Any:  # noqa: N802
        return await self._rpc("ModelConfig", request, grpc_context)

    async def ModelInfer(self, request: Any, grpc_context: Any = None) -> Any:  # noqa: N802
        return await self._rpc("ModelInfer", request, grpc_context)


def _rpc_method(method: str) -> Any:
    async def rpc(self: Router, request: Any, grpc_context: Any = None) -> Any:
        return await self._rpc(method, request, grpc_context)

    rpc.__name__ = rpc.__qualname__ = method
    return rpc


# Ray Serve's gRPC ingress calls the router's method named after the RPC: the ones slimgate does
# not serve exist too, so that they answer UNIMPLEMENTED (serving.oip_grpc) rather than Ray's own
# error naming the router's methods.
for _method in UNIMPLEMENTED:
    setattr(Router, _method, _rpc_method(_method))
