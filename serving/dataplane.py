"""The request path without HTTP and without Ray: choose -> call -> fall back -> record -> mirror.

:class:`Dataplane` turns texts (plus the caller's pin and sticky key) into an answer from one
variant. It picks the variant (a pin, else consistent hashing of the sticky key, else a weighted
draw; a variant that is not ready yet gives its share to stable), calls it with its deadline,
answers from the stable variant when a candidate fails, records what happened in metrics and in
the feedback window, and hands the answer to the :class:`~serving.shadow.Mirror`.

Everything it decides from is one immutable :class:`RouteTable` per config revision, swapped in
by a single assignment, so a request that started under one config finishes under it. The
variants are :class:`~serving.variant_clients.VariantClient` objects, metrics and the clock are
passed in: unit tests build a dataplane from small fakes and run in milliseconds.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from serving.config import GatewayConfig
from serving.errors_and_auth import ApiError
from serving.feedback import FeedbackJoin
from serving.metrics import (
    BROWNOUT_CHANGES,
    ERRORS,
    FALLBACKS,
    INPUTS,
    PREDICTIONS,
    REQUEST_LATENCY_SECONDS,
    REQUESTS,
)
from serving.metrics_recording import GatewayMetrics
from serving.names import GATEWAY_MODEL
from serving.policies import ShadowSampler, WeightedSplit
from serving.shadow import Mirror
from serving.slo_guard import Change, SloGuard
from serving.variant_clients import Answer, VariantClient, VariantInfo

log = logging.getLogger("ray.serve")


@dataclass(frozen=True)
class RouteTable:
    """Everything one request needs to be routed, built once per config revision."""

    cfg: GatewayConfig
    revision: str
    split: WeightedSplit
    samplers: dict[str, ShadowSampler]
    # The SLO guard's plan (serving.brownout_plan): variant -> where it browns out to, and the
    # registry's test accuracy of each variant for the expected accuracy of the mix.
    brownout: Mapping[str, str] = field(default_factory=dict)
    accuracy: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        cfg: GatewayConfig,
        revision: str,
        rng: random.Random,
        brownout: Mapping[str, str] | None = None,
        accuracy: Mapping[str, float] | None = None,
    ) -> RouteTable:
        weights = {k: w for k, w in cfg.routing.weights.items() if w > 0}
        return cls(
            cfg=cfg,
            revision=revision,
            split=WeightedSplit(weights, rng=rng),
            samplers={k: ShadowSampler(cfg.shadow.fraction, rng) for k in cfg.shadow.variants},
            brownout=dict(brownout or {}),
            accuracy=dict(accuracy or {}),
        )

    @property
    def stable(self) -> str:
        return self.cfg.routing.stable


@dataclass(frozen=True)
class Served:
    key: str  # the variant that answered
    route: str  # how the request reached it (serving.metrics.ROUTES)
    answer: Answer
    seconds: float  # the answering call, as the router measured it
    labels: tuple[str, ...]

    def label_names(self) -> list[str]:
        """The top-1 label of every text (the label index when the table is not known)."""
        idx = self.answer.probabilities.argmax(axis=1)
        return [self.labels[i] for i in idx] if self.labels else [str(i) for i in idx]


def _failure_kind(err: BaseException) -> str:
    return "timeout" if isinstance(err, TimeoutError) else "variant_error"


def model_key(table: RouteTable, name: str) -> str | None:
    """None for the routed gateway model (also an empty name, as gRPC allows), the variant key for
    a pinned one; 404 for any other name."""
    if name in ("", GATEWAY_MODEL):
        return None
    if name in table.cfg.variants:
        return name
    known = [GATEWAY_MODEL, *sorted(table.cfg.variants)]
    raise ApiError(404, "unknown_model", f"model {name!r} not found (known: {', '.join(known)})")


@dataclass(frozen=True)
class ModelView:
    """A model as the inference protocol names it: the routed gateway model or a pinned variant."""

    name: str
    key: str | None  # None: the routed model
    info: VariantInfo  # what answers it (the stable variant, for the routed model)
    platform: str
    versions: list[str]  # the config revision for the routed model, the registry version pinned
    batching: Any | None  # a pinned variant's coalescing (its BatchingSpec)


class Dataplane:
    def __init__(
        self,
        metrics: GatewayMetrics,
        *,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.metrics = metrics
        self.rng = rng if rng is not None else random.Random()
        self.clock = clock
        self.table: RouteTable | None = None
        self.variants: Mapping[str, VariantClient] = {}
        self.mirror = Mirror(self._shadow_call, metrics, clock)
        self.feedback: FeedbackJoin | None = None
        self.guard = SloGuard(clock=clock, rng=self.rng, on_change=self._brownout_changed)

    # -- configuration --------------------------------------------------------------------
    def configure(self, table: RouteTable, variants: Mapping[str, VariantClient]) -> None:
        cfg = table.cfg
        self.mirror.configure(cfg.shadow)
        fb = cfg.feedback
        if self.feedback is None or (self.feedback.max_entries, self.feedback.retention_s) != (
            fb.max_entries,
            fb.retention_s,
        ):
            self.feedback = FeedbackJoin(fb.max_entries, fb.retention_s)
        self.variants = variants
        self.guard.configure(cfg.slo, table.brownout, table.accuracy)
        self.table = table  # one assignment: requests in flight keep the table they started with

    def _brownout_changed(self, change: Change) -> None:
        self.metrics.inc(BROWNOUT_CHANGES, variant=change.variant, target=change.target, kind=change.kind)
        log.warning(
            "slo guard: %s -> %s %.0f%% -> %.0f%% (%s)",
            change.variant,
            change.target,
            100 * change.before,
            100 * change.after,
            change.reason,
        )

    def current(self) -> RouteTable:
        if self.table is None:
            raise ApiError(503, "not_configured", "the gateway has not received its configuration yet")
        return self.table

    def labels(self, key: str) -> tuple[str, ...]:
        client = self.variants.get(key)
        info = client.info if client is not None else None
        return info.labels if info is not None else ()

    def is_ready(self, key: str) -> bool:
        client = self.variants.get(key)
        return client is not None and client.ready

    def model_view(self, table: RouteTable, name: str) -> ModelView:
        """The model the inference protocol's ``name`` stands for, for its metadata and config
        (HTTP and gRPC alike): 404 for a model the gateway does not serve, 503 before it loads."""
        key = model_key(table, name)
        client = self.variants.get(key or table.stable)
        info = client.info if client is not None else None
        if info is None:
            raise ApiError(503, "unavailable", f"variant {key or table.stable} is not ready")
        if key is None:
            return ModelView(GATEWAY_MODEL, None, info, "slimgate-router", [table.revision], None)
        platform, batching = f"{info.backend}/{info.precision}", table.cfg.variants[key].batching
        return ModelView(key, key, info, platform, [str(info.version)], batching)

    # -- choosing -------------------------------------------------------------------------
    def choose(self, table: RouteTable, pinned: str | None, sticky: str | None) -> tuple[str, str]:
        if pinned is not None:
            if pinned not in table.cfg.variants:
                raise ApiError(
                    400,
                    "unknown_variant",
                    f"header {table.cfg.routing.pin_header}: {pinned!r} is not a served variant "
                    f"(known: {', '.join(sorted(table.cfg.variants))})",
                )
            return pinned, "pinned"
        if sticky:
            chosen, route = table.split.choose(sticky), "sticky"
        else:
            chosen, route = table.split.choose(None, self.rng), "split"
        if chosen != table.stable and not self.is_ready(chosen):
            return table.stable, "starting"  # it has not loaded, or its replicas are not up yet
        if self.guard.enabled:
            cheaper = self.guard.route(chosen, sticky, self.is_ready)
            if cheaper is not None:
                return cheaper, "brownout"
        return chosen, route

    # -- calling --------------------------------------------------------------------------
    async def _call(self, table: RouteTable, key: str, texts: list[str]) -> tuple[Answer, float]:
        client = self.variants.get(key)
        if client is None:
            raise RuntimeError(f"variant {key} is not set up in this router")
        start = self.clock()
        answer = await client.predict(texts, table.cfg.variant_timeout_s(key))
        return answer, self.clock() - start

    async def _shadow_call(self, key: str, texts: list[str]) -> np.ndarray:
        table = self.current()
        answer, _ = await self._call(table, key, texts)
        return answer.probabilities

    async def call(self, table: RouteTable, key: str, route: str, texts: list[str]) -> Served:
        """Call ``key``; if it is not the stable variant and fails, answer from stable."""
        stable = table.stable
        try:
            answer, seconds = await self._call(table, key, texts)
            return Served(key, route, answer, seconds, self.labels(key))
        except Exception as err:  # noqa: BLE001 - any variant failure is handled the same way
            kind = _failure_kind(err)
            self.metrics.inc(ERRORS, variant=key, kind=kind)
            if key == stable:
                raise ApiError(503, "unavailable", f"variant {key} could not answer ({kind})") from None
        self.metrics.inc(FALLBACKS, variant=key)
        try:
            answer, seconds = await self._call(table, stable, texts)
        except Exception as err:  # noqa: BLE001
            kind = _failure_kind(err)
            self.metrics.inc(ERRORS, variant=stable, kind=kind)
            raise ApiError(503, "unavailable", f"no variant could answer (stable {stable}: {kind})") from None
        return Served(stable, "fallback", answer, seconds, self.labels(stable))

    # -- the whole path -------------------------------------------------------------------
    async def serve(
        self,
        table: RouteTable,
        texts: list[str],
        request_id: str,
        *,
        pinned: str | None = None,
        sticky: str | None = None,
    ) -> Served:
        key, route = self.choose(table, pinned, sticky)
        served = await self.call(table, key, route, texts)
        self.record(served, texts, request_id)
        if table.samplers:
            self.mirror.offer(
                table.samplers,
                self.is_ready,
                served.key,
                served.answer.probabilities,
                served.seconds,
                served.labels,
                texts,
                request_id,
            )
        return served

    def record(self, served: Served, texts: list[str], request_id: str) -> None:
        m, key = self.metrics, served.key
        if self.guard.enabled:  # off, nothing would ever end its interval: nothing is kept
            self.guard.observe(key, served.seconds)
        m.inc(REQUESTS, variant=key, route=served.route)
        m.inc(INPUTS, len(texts), variant=key)
        m.observe(REQUEST_LATENCY_SECONDS, served.seconds, variant=key, route=served.route)
        predicted = served.label_names()
        for label in predicted:
            m.inc(PREDICTIONS, variant=key, label=label)
        if self.feedback is not None and served.labels:
            self.feedback.record(request_id, key, predicted)
