"""The variants a router replica can send texts to, behind one small interface.

* :class:`InlineVariant` (``placement: router``): the artifact is loaded in the router replica's own
  process through the registry and the backend interface, and answered there: no extra hop, which
  on a small CPU variant is most of a request's cost. Concurrent requests are coalesced into
  batches (:mod:`serving.coalescer`) and run on the variant's own threads, so the event loop keeps
  accepting requests while a backend computes.
* :class:`RemoteVariant` (``placement: deployment``): the variant's own Ray Serve application,
  reached through a deployment handle, for large or GPU variants and for variants that scale or
  restart on their own. Requests to it are coalesced too: at most two calls per replica are in
  flight, and what arrives meanwhile goes out as one call of up to ``max_batch_size`` texts. A
  handle call costs the router about as much CPU as a small model's inference, so one call per
  request halves what the hop can carry (measured side by side in ``benchmarks/gateway.py``).

Both answer :meth:`predict` with an :class:`Answer` and describe what they serve with a
:class:`VariantInfo`; the dataplane never knows which kind it holds, and neither imports a backend
library (the registry's loading API does).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from serving.coalescer import Coalescer
from serving.config import VariantSpec
from serving.faults import Faults
from serving.metrics import BATCH_SIZE
from serving.metrics_recording import GatewayMetrics
from serving.warmup import WarmupFigures, measure_here

log = logging.getLogger("ray.serve")


@dataclass(frozen=True)
class VariantInfo:
    key: str
    name: str
    version: int
    labels: tuple[str, ...]
    backend: str
    precision: str
    placement: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "name": self.name,
            "version": self.version,
            "labels": list(self.labels),
            "backend": self.backend,
            "precision": self.precision,
            "placement": self.placement,
        }


@dataclass(frozen=True)
class Answer:
    probabilities: np.ndarray  # float32 [n, labels]
    name: str
    version: int
    # A cascade's answer: which stage answered each text (first, then or degraded); else None.
    stages: tuple[str, ...] | None = None


class VariantClient(Protocol):
    key: str

    @property
    def info(self) -> VariantInfo | None:
        """What the variant serves, once known (None until it has loaded or first answered)."""
        ...

    @property
    def ready(self) -> bool:
        """Whether a request sent now would be answered by this variant (not only after a start-up)."""
        ...

    def configure(self, spec: VariantSpec) -> None:
        """Apply the live settings (batching, faults) of a new config; never reloads the artifact."""
        ...

    async def predict(self, texts: list[str], timeout_s: float) -> Answer: ...

    def close(self) -> None: ...


def remote_coalescing(spec: VariantSpec) -> tuple[int, int]:
    """(texts per call, calls in flight) for a variant with replicas of its own: two per replica."""
    replicas = spec.replicas or (spec.autoscaling.max_replicas if spec.autoscaling else 1)
    return spec.batching.max_batch_size, 2 * replicas


def artifact_identity(spec: VariantSpec, registry: str | None) -> tuple[Any, ...]:
    """What a loaded artifact depends on: when this changes, the variant must be loaded again."""
    return (spec.ref, spec.backend, spec.device, spec.precision, spec.threads, registry)


class InlineVariant:
    def __init__(
        self,
        key: str,
        predictor: Any,
        spec: VariantSpec,
        identity: tuple[Any, ...],
        metrics: GatewayMetrics | None = None,
    ) -> None:
        self.key = key
        self.identity = identity
        self._predictor = predictor
        manifest = predictor.manifest
        self._info = VariantInfo(
            key,
            predictor.name,
            predictor.version,
            tuple(predictor.label_names),
            manifest.backend,
            predictor.precision,
            "router",
        )
        self._metrics = metrics
        self._concurrency = spec.batching.max_concurrent_batches
        self._pool = ThreadPoolExecutor(self._concurrency, thread_name_prefix=f"variant-{key}")
        self._coalescer = Coalescer(
            self._run,
            max_batch_size=spec.batching.max_batch_size,
            wait_s=spec.batching.batch_wait_timeout_s,
            max_concurrent=self._concurrency,
            on_batch=self._record_batch,
        )
        self._faults = Faults(spec.faults.model_dump())
        self.warmup: WarmupFigures | None = None

    @classmethod
    def load(
        cls, key: str, spec: VariantSpec, registry: str | None, metrics: GatewayMetrics | None = None
    ) -> InlineVariant:
        """Verify, open and warm up the artifact (blocking: call it off the event loop)."""
        from variants import Registry, load_variant

        name, version = spec.name, spec.version
        predictor = load_variant(
            name,
            version,
            registry=Registry(registry),
            threads=spec.threads,
            backend=spec.backend,
            device=spec.device,
            precision=spec.precision,
        )
        # Answer once before taking traffic: a variant that cannot infer never becomes ready.
        predictor.predict_proba(["warm-up: a variant is ready only after one inference succeeds"])
        loaded = cls(key, predictor, spec, artifact_identity(spec, registry), metrics)
        # Timed on the router's hardware at the batch size it loads with, as a replica times itself.
        loaded.warmup = measure_here(predictor, spec.batching.max_batch_size, str(predictor.device))
        return loaded

    @property
    def info(self) -> VariantInfo:
        return self._info

    @property
    def ready(self) -> bool:
        return True

    def configure(self, spec: VariantSpec) -> None:
        b = spec.batching
        if b.max_concurrent_batches != self._concurrency:
            old, self._concurrency = self._pool, b.max_concurrent_batches
            self._pool = ThreadPoolExecutor(self._concurrency, thread_name_prefix=f"variant-{self.key}")
            old.shutdown(wait=False)  # calls already running on it finish
        self._coalescer.configure(
            max_batch_size=b.max_batch_size, wait_s=b.batch_wait_timeout_s, max_concurrent=self._concurrency
        )
        self._faults = Faults(spec.faults.model_dump())

    async def _run(self, texts: list[str]) -> np.ndarray:
        return await asyncio.get_running_loop().run_in_executor(
            self._pool, self._predictor.predict_proba, texts
        )

    def _record_batch(self, n: int) -> None:
        if self._metrics is not None:
            self._metrics.observe(BATCH_SIZE, n, variant=self.key)

    async def _predict(self, texts: list[str]) -> np.ndarray:
        faults = self._faults
        if faults.active:
            await faults.before_call(self.key)
            return faults.after_call(await self._coalescer.submit(texts))
        return await self._coalescer.submit(texts)

    async def predict(self, texts: list[str], timeout_s: float) -> Answer:
        probs = await asyncio.wait_for(self._predict(texts), timeout_s)
        return Answer(probs, self._info.name, self._info.version)

    def close(self) -> None:
        self._pool.shutdown(wait=False)


class RemoteVariant:
    """A variant with its own Ray Serve application; ``handle`` is its deployment handle."""

    def __init__(
        self, key: str, handle_factory: Callable[[], Any], coalesce: tuple[int, int] | None = None
    ) -> None:
        """``coalesce``: (max texts per call, calls in flight) to batch requests in the router."""
        self.key = key
        self._coalescer = (
            Coalescer(self._call_batch, max_batch_size=coalesce[0], max_concurrent=coalesce[1])
            if coalesce
            else None
        )
        self._last: tuple[str, int] = ("", 0)
        self._handle_factory = handle_factory
        self._handle: Any = None
        self._info: VariantInfo | None = None
        self._ready = False
        self._closed = False
        self._warming: asyncio.Task | None = None

    @property
    def handle(self) -> Any:
        if self._handle is None:
            self._handle = self._handle_factory()
        return self._handle

    @property
    def info(self) -> VariantInfo | None:
        return self._info

    @property
    def ready(self) -> bool:
        return self._ready

    def configure(self, spec: VariantSpec) -> None:
        """Follow the batch size and replica count; the replicas get the rest from their user_config."""
        if self._coalescer is not None:
            size, in_flight = remote_coalescing(spec)
            self._coalescer.configure(max_batch_size=size, wait_s=0.0, max_concurrent=in_flight)

    def start_warming(self, retry_s: float = 0.5) -> None:
        """Wait, off the request path, until the variant's replicas answer; then it is ready.

        Ray deploys a new variant's application and the router's new config at the same moment, and
        its replicas take seconds to start: until they answer, its share goes to stable.
        """
        if self._warming is None and not self._ready:
            self._warming = asyncio.ensure_future(self._warm(retry_s))

    async def _warm(self, retry_s: float) -> None:
        while not self._closed:
            try:
                await self.learn(timeout_s=30.0)
                self._ready = True
                return
            except Exception:  # noqa: BLE001 - not deployed or not ready yet: try again shortly
                await asyncio.sleep(retry_s)

    async def learn(self, timeout_s: float = 10.0) -> VariantInfo:
        """Ask the replicas what they loaded (once per version, off the common path)."""
        raw = await asyncio.wait_for(self.handle.info.remote(), timeout=timeout_s)
        self._info = VariantInfo(
            self.key,
            raw["name"],
            raw["version"],
            tuple(raw["labels"]),
            raw.get("backend", "unknown"),
            raw.get("precision", "unknown"),
            "deployment",
        )
        return self._info

    async def _call_batch(self, texts: list[str]) -> np.ndarray:
        out = await self.handle.remote(texts)
        self._last = (out["name"], out["version"])
        return out["probabilities"]

    async def predict(self, texts: list[str], timeout_s: float) -> Answer:
        out: dict[str, Any]
        if self._coalescer is not None:
            probs = await asyncio.wait_for(self._coalescer.submit(texts), timeout=timeout_s)
            out = {"probabilities": probs, "name": self._last[0], "version": self._last[1]}
        else:
            response = self.handle.remote(texts)
            try:
                out = await asyncio.wait_for(response, timeout=timeout_s)
            except BaseException:
                response.cancel()
                raise
        known = self._info
        if known is None or (known.name, known.version) != (out["name"], out["version"]):
            await self.learn()
        return Answer(out["probabilities"], out["name"], out["version"])

    async def ping(self, timeout_s: float = 2.0) -> bool:
        try:
            await asyncio.wait_for(self.handle.info.remote(), timeout=timeout_s)
            return True
        except Exception:  # noqa: BLE001 - any failure to answer means not ready
            return False

    def close(self) -> None:
        self._closed = True
        if self._warming is not None:
            self._warming.cancel()
