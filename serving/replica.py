"""One variant as a Ray Serve deployment: load, warm up, batch, predict.

The replica loads its artifact through the registry (checksums verified) and the backend
interface, then runs one warm-up inference in its constructor: Ray Serve marks a replica
ready only when the constructor returns, so a variant whose model cannot load never
receives traffic. Requests are batched with ``@serve.batch`` counting texts, not calls;
batching and fault settings arrive through ``reconfigure`` (Ray Serve's ``user_config``),
so changing them never restarts the replica.

The replica also times itself on the hardware it serves on (:mod:`serving.warmup`: a fixed
sample, at most a few hundred ms) when its batch size is first set, which Ray Serve does through
``reconfigure`` before the replica is ready (the translation always sends ``batching``), and again
when the batch size changes. The figures are exported as gauges and returned by ``info()``; the
rollout controller's speed gate reads them before promoting a candidate.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

from ray import serve

from serving.faults import Faults
from serving.metrics import BATCH_SIZE
from serving.metrics_recording import GatewayMetrics
from serving.warmup import WarmupFigures, measure, record, this_machine

# serve.batch's default below, until reconfigure() sets the configured one.
DEFAULT_MAX_BATCH_SIZE = 16


class VariantReplica:
    def __init__(
        self,
        key: str,
        ref: str,
        registry: str | None,
        threads: int,
        backend: str | None = None,
        device: str | None = None,
        precision: str | None = None,
    ) -> None:
        from variants import Registry, load_variant
        from variants.registry import parse_ref

        name, version = parse_ref(ref)
        self.key = key
        # A replica asked for cuda on a node without a GPU fails here (BackendUnavailable), so it
        # never becomes ready and never answers from a CPU it was not measured on.
        self.predictor = load_variant(
            name,
            version,
            registry=Registry(registry),
            threads=threads,
            backend=backend,
            device=device,
            precision=precision,
        )
        self.version = self.predictor.version
        self.name = self.predictor.name
        self.metrics = GatewayMetrics()
        self.faults = Faults()
        self.predictor.predict(["warm-up: a replica is ready only after one inference succeeds"])
        self.replica = serve.get_replica_context().replica_id.unique_id
        self.warmup: WarmupFigures | None = None
        self._restater: threading.Thread | None = None

    def _measure(self, batch_size: int, clock: Callable[[], float] = time.perf_counter) -> None:
        """Time this replica on its own hardware (after the first inference paid for lazy setup)."""
        device = str(self.predictor.device)
        hardware, flags = this_machine(device)
        self.warmup = measure(
            self.predictor,
            clock,
            batch_size=batch_size,
            hardware=hardware,
            flags=flags,
            device=device,
        )
        self._restate()
        if self._restater is None:
            self._restater = threading.Thread(
                target=self._restate_forever, name="slimgate-gauges", daemon=True
            )
            self._restater.start()

    def _restate(self) -> None:
        if self.warmup is not None:
            record(self.metrics, self.warmup, self.key, self.replica)

    def _restate_forever(self) -> None:
        # Ray's metrics agent forgets a gauge that is not set again within two report intervals.
        while True:
            time.sleep(1.0)
            self._restate()

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        batching = user_config.get("batching", {})
        if "max_batch_size" in batching:
            self.predict.set_max_batch_size(batching["max_batch_size"])  # type: ignore[attr-defined]  # serve.batch
            # Throughput is measured at the batch size the replica serves with (module docstring).
            if self.warmup is None or self.warmup.batch_size != batching["max_batch_size"]:
                self._measure(batching["max_batch_size"])
        if "batch_wait_timeout_s" in batching:
            self.predict.set_batch_wait_timeout_s(batching["batch_wait_timeout_s"])  # type: ignore[attr-defined]
        self.faults = Faults(user_config.get("faults"))

    def info(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "name": self.name,
            "version": self.version,
            "labels": list(self.predictor.label_names),
            "backend": self.predictor.manifest.backend,
            "precision": self.predictor.precision,
            "device": self.predictor.device,
            "warmup": None if self.warmup is None else self.warmup.as_dict(),
        }

    @serve.batch(
        max_batch_size=DEFAULT_MAX_BATCH_SIZE,
        batch_wait_timeout_s=0.005,
        batch_size_fn=lambda reqs: sum(map(len, reqs)),
    )
    async def predict(self, requests: list[list[str]]) -> list[dict[str, Any]]:
        texts = [t for r in requests for t in r]
        self.metrics.observe(BATCH_SIZE, len(texts), variant=self.key)
        # The backend releases the GIL; running it off the event loop keeps the replica
        # accepting (and batching) the next requests meanwhile.
        probs = await asyncio.to_thread(self.predictor.predict_proba, texts)
        probs = self.faults.after_call(probs)
        out, i = [], 0
        for r in requests:
            out.append(
                {
                    "probabilities": probs[i : i + len(r)],
                    "variant": self.key,
                    "name": self.name,
                    "version": self.version,
                }
            )
            i += len(r)
        return out

    async def __call__(self, texts: list[str]) -> dict[str, Any]:
        await self.faults.before_call(self.key)
        return await self.predict(texts)


def deployment(spec_options: dict[str, Any]):
    """The Ray Serve deployment of :class:`VariantReplica` with one variant's options."""
    return serve.deployment(VariantReplica).options(**spec_options)  # type: ignore[attr-defined]
