"""The variants a router calls: in process (coalesced, on their own threads) or through a handle."""

from __future__ import annotations

import asyncio
import threading
from types import SimpleNamespace

import numpy as np
import pytest
from support import LABELS, MemorySink, apoll_until, one_hot

from serving.config import VariantSpec
from serving.faults import InjectedFault
from serving.metrics_recording import GatewayMetrics
from serving.variant_clients import InlineVariant, RemoteVariant, artifact_identity, remote_coalescing


class Predictor:
    name, version, label_names = "tiny", 3, LABELS
    manifest = SimpleNamespace(backend="onnxruntime", precision="int8-dynamic")
    precision = "int8-dynamic"

    def __init__(self) -> None:
        self.threads: set[str] = set()
        self.batches: list[int] = []

    def predict_proba(self, texts):
        self.threads.add(threading.current_thread().name)
        self.batches.append(len(texts))
        return one_hot(2, len(texts))


def _inline(**spec):
    pred = Predictor()
    sink = MemorySink()
    s = VariantSpec(ref="tiny@3", **spec)
    v = InlineVariant("tiny", pred, s, artifact_identity(s, None), GatewayMetrics(sink))
    return v, pred, sink


def test_inline_variant_answers_off_the_event_loop_with_its_info():
    v, pred, _ = _inline()

    async def run():
        return await v.predict(["a", "b"], timeout_s=1.0)

    answer = asyncio.run(run())
    assert answer.probabilities.shape == (2, 3) and (answer.name, answer.version) == ("tiny", 3)
    assert pred.threads == {"variant-tiny_0"}  # its own thread, not the event loop
    assert v.ready and v.info.labels == LABELS and v.info.placement == "router"


def test_inline_variant_coalesces_concurrent_requests_and_records_batch_sizes():
    v, pred, sink = _inline(batching={"max_batch_size": 8, "batch_wait_timeout_s": 0.05})

    async def run():
        return await asyncio.gather(*(v.predict([f"t{i}"], 1.0) for i in range(8)))

    answers = asyncio.run(run())
    assert pred.batches == [8] and all(a.probabilities.shape == (1, 3) for a in answers)
    v._metrics.flush()
    assert sink.observations[("slimgate_batch_size", (("variant", "tiny"),))] == [8]


def test_inline_faults_and_live_reconfiguration():
    v, pred, _ = _inline()
    v.configure(VariantSpec(ref="tiny@3", faults={"error_rate": 1.0}))
    with pytest.raises(InjectedFault):
        asyncio.run(v.predict(["a"], 1.0))
    v.configure(VariantSpec(ref="tiny@3", faults={"flip_rate": 1.0}, batching={"max_concurrent_batches": 2}))
    answer = asyncio.run(v.predict(["a"], 1.0))
    assert answer.probabilities.argmax(axis=1).tolist() == [0]  # label 2 rolled to 0
    v.configure(VariantSpec(ref="tiny@3", faults={"delay_ms": 500.0}))
    with pytest.raises(TimeoutError):
        asyncio.run(v.predict(["a"], 0.05))


def test_artifact_identity_changes_only_with_what_is_loaded():
    a = artifact_identity(VariantSpec(ref="x@1"), "/r")
    assert a == artifact_identity(VariantSpec(ref="x@1", batching={"max_batch_size": 4}), "/r")
    assert a != artifact_identity(VariantSpec(ref="x@2"), "/r")
    assert a != artifact_identity(VariantSpec(ref="x@1", threads=2), "/r")
    assert a != artifact_identity(VariantSpec(ref="x@1"), "/other")


class Handle:
    """Ray's deployment handle, as far as RemoteVariant uses it."""

    def __init__(self, up_after: int = 0) -> None:
        self.info_calls = 0
        self.up_after = up_after
        self.info = SimpleNamespace(remote=self._info)

    async def _answer_info(self):
        return {
            "name": "remote",
            "version": 2,
            "labels": list(LABELS),
            "backend": "torch",
            "precision": "fp32",
        }

    def _info(self):
        self.info_calls += 1
        if self.info_calls <= self.up_after:
            raise RuntimeError("not deployed yet")
        return self._answer_info()

    def remote(self, texts):
        async def answer():
            return {"probabilities": one_hot(1, len(texts)), "name": "remote", "version": 2}

        return Response(answer())


class Response:
    def __init__(self, coro) -> None:
        self.coro = coro
        self.cancelled = False

    def __await__(self):
        return self.coro.__await__()

    def cancel(self):
        self.cancelled = True


def test_remote_variant_is_ready_once_its_replicas_answer_and_learns_what_they_serve():
    handle = Handle(up_after=2)
    v = RemoteVariant("big", lambda: handle)

    async def run():
        v.start_warming(retry_s=0.01)
        await apoll_until(lambda: v.ready, timeout_s=1.0, what="the remote variant to be ready")
        return await v.predict(["a"], 1.0)

    answer = asyncio.run(run())
    assert v.ready and handle.info_calls == 3
    assert v.info.version == 2 and v.info.placement == "deployment"
    np.testing.assert_array_equal(answer.probabilities.argmax(axis=1), [1])


def test_remote_requests_are_coalesced_two_calls_per_replica():
    calls = []

    class SlowHandle(Handle):
        def remote(self, texts):
            calls.append(len(texts))

            async def answer():
                await asyncio.sleep(0.02)  # the replica's simulated latency, so that requests queue
                return {"probabilities": one_hot(1, len(texts)), "name": "remote", "version": 2}

            return Response(answer())

    spec = VariantSpec(ref="big@1", placement="deployment", replicas=1, batching={"max_batch_size": 8})
    v = RemoteVariant("big", SlowHandle, remote_coalescing(spec))

    async def run():
        return await asyncio.gather(*(v.predict([f"t{i}"], 2.0) for i in range(18)))

    answers = asyncio.run(run())
    assert len(answers) == 18 and all(a.probabilities.shape == (1, 3) for a in answers)
    assert len(calls) < 18 and max(calls) <= 8  # fewer calls than requests, none over the batch size
    assert remote_coalescing(VariantSpec(ref="x@1", placement="deployment", replicas=3)) == (16, 6)
