"""The request path without HTTP or Ray: choose, call, fall back, record, mirror (fakes, milliseconds)."""

from __future__ import annotations

import asyncio
import random

import pytest
from support import LABELS, FakeVariant, MemorySink, apoll_until

from serving.config import parse_config
from serving.dataplane import Dataplane, RouteTable
from serving.errors_and_auth import ApiError
from serving.metrics_recording import GatewayMetrics


def _cfg(**over):
    data = {
        "variants": {"stable": {"ref": "a@1"}, "canary": {"ref": "b@1"}, "shadow": {"ref": "c@1"}},
        "routing": {"stable": "stable", "weights": {"stable": 50, "canary": 50}},
        "shadow": {"variants": ["shadow"], "fraction": 0.0, "max_in_flight": 2},
    }
    for path, value in over.items():
        node = data
        *parents, leaf = path.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return parse_config(data)


def _plane(cfg=None, **variants):
    sink = MemorySink()
    dp = Dataplane(GatewayMetrics(sink), rng=random.Random(0))
    clients = {
        "stable": FakeVariant("stable", 0),
        "canary": FakeVariant("canary", 1),
        "shadow": FakeVariant("shadow", 2),
        **variants,
    }
    cfg = cfg or _cfg()
    dp.configure(RouteTable.build(cfg, "rev1", dp.rng), clients)
    return dp, clients, sink


def _serve(dp, texts=("a text",), **kw):
    return asyncio.run(dp.serve(dp.current(), list(texts), "rid-1", **kw))


def test_sticky_key_keeps_a_caller_on_its_variant():
    dp, _, _ = _plane()
    first = {u: _serve(dp, sticky=f"user-{u}").key for u in range(50)}
    assert {u: _serve(dp, sticky=f"user-{u}").key for u in range(50)} == first
    assert set(first.values()) == {"stable", "canary"}
    assert {_serve(dp, sticky=f"user-{u}").route for u in range(5)} == {"sticky"}


def test_weighted_split_without_a_key():
    dp, _, _ = _plane(_cfg(**{"routing.weights": {"stable": 80, "canary": 20}}))
    served = [_serve(dp).key for _ in range(2000)]
    assert abs(served.count("canary") / 2000 - 0.2) < 0.04
    assert _serve(dp).route == "split"


def test_pin_wins_and_an_unknown_pin_is_a_named_400():
    dp, _, _ = _plane()
    s = _serve(dp, pinned="shadow", sticky="user-1")
    assert (s.key, s.route) == ("shadow", "pinned")
    with pytest.raises(ApiError) as e:
        _serve(dp, pinned="ghost")
    assert (e.value.status, e.value.code) == (400, "unknown_variant")
    assert (
        "x-slimgate-variant: 'ghost' is not a served variant (known: canary, shadow, stable)"
        in e.value.message
    )


def test_a_variant_that_is_not_ready_gives_its_share_to_stable():
    dp, clients, _ = _plane(canary=FakeVariant("canary", 1, ready=False))
    routes = {(_serve(dp).key, _serve(dp).route) for _ in range(40)}
    assert ("canary", "split") not in routes and ("stable", "starting") in routes
    assert clients["canary"].calls == []


def test_a_failing_candidate_falls_back_to_stable_and_is_counted():
    dp, clients, sink = _plane(_cfg(**{"routing.weights": {"stable": 1, "canary": 99}}))
    clients["canary"].fail = RuntimeError("boom")
    s = _serve(dp, pinned="canary")
    assert (s.key, s.route) == ("stable", "fallback")
    assert s.answer.probabilities.argmax(axis=1).tolist() == [0]
    dp.metrics.flush()
    assert sink.count("slimgate_errors", variant="canary", kind="variant_error") == 1
    assert sink.count("slimgate_fallbacks", variant="canary") == 1
    assert sink.count("slimgate_requests", variant="stable", route="fallback") == 1


def test_a_timed_out_candidate_falls_back_and_a_failing_stable_is_a_503():
    cfg = _cfg(**{"variants.canary.timeout_s": 0.05})
    dp, clients, sink = _plane(cfg, canary=FakeVariant("canary", 1, delay_s=5.0))
    assert _serve(dp, pinned="canary").route == "fallback"
    dp.metrics.flush()
    assert sink.count("slimgate_errors", variant="canary", kind="timeout") == 1
    clients["stable"].fail = RuntimeError("down")
    with pytest.raises(ApiError) as e:
        _serve(dp, pinned="stable")
    assert (e.value.status, e.value.code) == (503, "unavailable")
    assert "boom" not in e.value.message and "down" not in e.value.message  # no internals


def test_answers_are_recorded_for_metrics_and_feedback():
    dp, _, sink = _plane()
    s = _serve(dp, ["one", "two"], pinned="canary")
    dp.metrics.flush()
    assert sink.count("slimgate_requests", variant="canary", route="pinned") == 1
    assert sink.count("slimgate_inputs", variant="canary") == 2
    assert sink.count("slimgate_predictions", variant="canary", label=LABELS[1]) == 2
    assert (
        len(
            sink.observations[
                ("slimgate_request_latency_seconds", (("route", "pinned"), ("variant", "canary")))
            ]
        )
        == 1
    )
    remembered = dp.feedback.lookup("rid-1")
    assert remembered.variant == "canary" and remembered.labels == (LABELS[1], LABELS[1])
    assert s.label_names() == [LABELS[1], LABELS[1]]


def test_shadow_is_mirrored_compared_and_capped():
    async def run(dp, n):
        out = [await dp.serve(dp.current(), ["t"], f"r{i}", pinned="stable") for i in range(n)]
        await apoll_until(lambda: not dp.mirror._tasks, what="the mirrored calls to finish")
        return out

    dp, clients, sink = _plane(_cfg(**{"shadow.fraction": 1.0, "shadow.max_in_flight": 8}))
    asyncio.run(run(dp, 3))
    dp.metrics.flush()
    assert len(clients["shadow"].calls) == 3
    assert sink.count("slimgate_shadow_disagreements", variant="shadow") == 3  # label 2 vs label 0
    assert dp.mirror.disagreements.total == 3
    sample = dp.mirror.disagreements.snapshot()[-1]
    assert (sample["served_label"], sample["shadow_label"]) == (LABELS[0], LABELS[2])

    # A stalled shadow: at most max_in_flight (2) run at once, the rest are dropped, never queued.
    stalled = FakeVariant("shadow", 2, delay_s=5.0)
    dp2, _, sink2 = _plane(_cfg(**{"shadow.fraction": 1.0, "variants.shadow.timeout_s": 5.0}), shadow=stalled)

    async def burst():
        for i in range(6):
            await dp2.serve(dp2.current(), ["t"], f"r{i}", pinned="stable")
        stats = dp2.mirror.stats()
        for t in list(dp2.mirror._tasks):
            t.cancel()
        return stats

    stats = asyncio.run(burst())
    dp2.metrics.flush()
    assert stats["in_flight"] == 2 and stats["dropped"] == 4
    assert sink2.count("slimgate_shadow_dropped", variant="shadow") == 4


def test_a_shadow_failure_never_reaches_the_client():
    async def run(dp):
        s = await dp.serve(dp.current(), ["t"], "r", pinned="stable")
        await apoll_until(lambda: not dp.mirror._tasks, what="the mirrored call to finish")
        return s

    failing = FakeVariant("shadow", 2)
    failing.fail = RuntimeError("shadow down")
    dp, _, sink = _plane(_cfg(**{"shadow.fraction": 1.0}), shadow=failing)
    assert asyncio.run(run(dp)).key == "stable"
    dp.metrics.flush()
    assert sink.count("slimgate_shadow_errors", variant="shadow") == 1


def test_no_configuration_yet_is_a_503():
    dp = Dataplane(GatewayMetrics(MemorySink()))
    with pytest.raises(ApiError) as e:
        dp.current()
    assert (e.value.status, e.value.code) == (503, "not_configured")
