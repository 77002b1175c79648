import asyncio
import math
import random
import threading

import numpy as np
import pytest

from serving.policies import (
    DisagreementLog,
    InFlightLimiter,
    ShadowSampler,
    WeightedSplit,
    compare,
    compare_batch,
    moved_fraction,
)

N = 20_000
KEYS = [f"user-{i}" for i in range(N)]


def _within_5_sigma(count: int, n: int, p: float) -> bool:
    sigma = math.sqrt(n * p * (1 - p))
    return abs(count - n * p) <= 5 * sigma


# -- WeightedSplit -----------------------------------------------------------------------------
def test_random_split_matches_weights():
    split = WeightedSplit({"stable": 70, "canary": 20, "other": 10})
    rng = random.Random(1)
    picks = [split.choose(None, rng) for _ in range(N)]
    for name, w in split.weights.items():
        assert _within_5_sigma(picks.count(name), N, w / 100), (name, picks.count(name))


def test_keyed_split_matches_weights_and_accepts_numpy_rng():
    split = WeightedSplit({"stable": 95, "canary": 5})
    picks = [split.choose(k) for k in KEYS]
    assert _within_5_sigma(picks.count("canary"), N, 0.05)
    rng = np.random.default_rng(0)
    picks = [split.choose(None, rng) for _ in range(N)]
    assert _within_5_sigma(picks.count("canary"), N, 0.05)


def test_sticky_keys_keep_their_variant():
    split = WeightedSplit({"stable": 50, "canary": 50})
    rng = random.Random(2)
    first = [split.choose(k, rng) for k in KEYS[:500]]
    assert [split.choose(k, rng) for k in KEYS[:500]] == first
    # A fresh instance (another replica, a restart) agrees: the hash is not per-process.
    assert [WeightedSplit({"canary": 50, "stable": 50}).choose(k) for k in KEYS[:500]] == first


def test_empty_key_is_random():
    split = WeightedSplit({"stable": 50, "canary": 50})
    rng = random.Random(3)
    assert {split.choose("", rng) for _ in range(200)} == {"stable", "canary"}


def test_canary_growth_moves_only_the_moved_interval():
    before = WeightedSplit({"student-int8": 95, "student-int8-qat": 5})
    after = WeightedSplit({"student-int8": 75, "student-int8-qat": 25})
    a = [before.choose(k) for k in KEYS]
    b = [after.choose(k) for k in KEYS]
    moved = [(x, y) for x, y in zip(a, b, strict=True) if x != y]
    assert _within_5_sigma(len(moved), N, 0.20)
    # Every move is stable -> canary; no caller is taken back from the canary.
    assert set(moved) == {("student-int8", "student-int8-qat")}
    assert moved_fraction(before.weights, after.weights) == pytest.approx(0.20)


def test_moving_back_and_promoting_stable_change_nothing_else():
    a = {"stable": 95, "canary": 5}
    assert moved_fraction(a, {"stable": 75, "canary": 25}) == pytest.approx(0.20)
    assert moved_fraction(a, a) == 0.0
    # A zero-weight variant owns nothing, so adding one moves nobody.
    assert moved_fraction(a, {"stable": 95, "canary": 5, "new": 0}) == 0.0
    split = WeightedSplit({"stable": 95, "canary": 5, "new": 0})
    assert all(split.choose(k) != "new" for k in KEYS[:2000])


def test_zero_weight_is_never_chosen():
    split = WeightedSplit({"a": 0, "b": 100, "c": 0})
    rng = random.Random(4)
    assert {split.choose(None, rng) for _ in range(2000)} == {"b"}
    assert {split.choose(k) for k in KEYS[:2000]} == {"b"}


class _EdgeRng:
    def __init__(self, value: float) -> None:
        self.value = value

    def random(self) -> float:
        return self.value


def test_rng_edges_stay_in_range():
    split = WeightedSplit({"a": 1, "b": 99, "c": 0})
    assert split.choose(None, _EdgeRng(0.0)) == "a"
    assert split.choose(None, _EdgeRng(math.nextafter(1.0, 0.0))) == "b"


def test_bad_weights_are_refused():
    for weights in ({}, {"a": 0}, {"a": -1, "b": 101}, {"a": 1.5}, {"a": True}):
        with pytest.raises(ValueError):
            WeightedSplit(weights)


def test_ranges_are_exact_and_in_name_order():
    r = WeightedSplit({"zeta": 25, "alpha": 75}).ranges()
    assert list(r) == ["alpha", "zeta"]
    assert r["alpha"][1] - r["alpha"][0] == pytest.approx(0.75) and r["zeta"][1] == 1


# -- ShadowSampler -----------------------------------------------------------------------------
@pytest.mark.parametrize("fraction", [0.0, 0.05, 0.2, 1.0])
def test_shadow_sampler_fraction(fraction):
    sampler = ShadowSampler(fraction, random.Random(5))
    hits = sum(sampler.should_mirror() for _ in range(N))
    if fraction in (0.0, 1.0):
        assert hits == fraction * N
    else:
        assert _within_5_sigma(hits, N, fraction)


def test_shadow_sampler_refuses_bad_fraction():
    with pytest.raises(ValueError):
        ShadowSampler(1.5)


# -- InFlightLimiter ---------------------------------------------------------------------------
def test_limiter_caps_counts_drops_and_releases():
    lim = InFlightLimiter(2)
    assert lim.try_acquire() and lim.try_acquire()
    assert not lim.try_acquire() and not lim.try_acquire()
    assert lim.stats() == {"limit": 2, "in_flight": 2, "admitted": 2, "dropped": 2}
    lim.release()
    assert lim.try_acquire()
    lim.release()
    lim.release()
    assert lim.in_flight == 0 and lim.dropped == 2 and lim.admitted == 3
    with pytest.raises(RuntimeError):
        lim.release()
    lim.set_limit(1)
    assert lim.try_acquire() and not lim.try_acquire() and lim.limit == 1
    with pytest.raises(ValueError):
        InFlightLimiter(0)


def test_limiter_never_exceeds_its_cap_across_threads():
    lim = InFlightLimiter(3)
    peak, lock, barrier = [0], threading.Lock(), threading.Barrier(8)

    def worker():
        barrier.wait()
        for _ in range(500):
            if lim.try_acquire():
                with lock:
                    peak[0] = max(peak[0], lim.in_flight)
                lim.release()

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    s = lim.stats()
    assert peak[0] <= 3 and s["in_flight"] == 0 and s["admitted"] + s["dropped"] == 8 * 500


def test_limiter_in_asyncio_never_blocks():
    lim = InFlightLimiter(4)

    async def shadow_call():
        try:
            await asyncio.sleep(0.01)  # a shadow call's simulated latency: the slots stay taken meanwhile
        finally:
            lim.release()

    async def main():
        tasks = [asyncio.create_task(shadow_call()) for _ in range(10) if lim.try_acquire()]
        assert len(tasks) == 4 and lim.dropped == 6
        await asyncio.gather(*tasks)

    asyncio.run(main())
    assert lim.in_flight == 0


# -- compare -----------------------------------------------------------------------------------
LABELS = ("x", "y", "z")


def test_compare_hand_examples():
    same = compare(np.array([0.7, 0.2, 0.1]), np.array([0.7, 0.2, 0.1]), LABELS)
    assert same.agree and same.tv_distance == 0.0 and same.served_label == same.shadow_label == "x"
    near = compare(np.array([0.6, 0.3, 0.1]), np.array([0.5, 0.3, 0.2]), LABELS)
    assert near.agree and near.tv_distance == pytest.approx(0.1)
    flip = compare(np.array([0.7, 0.2, 0.1]), np.array([0.1, 0.2, 0.7]), LABELS)
    assert not flip.agree and flip.tv_distance == pytest.approx(0.6)
    assert (flip.served_label, flip.shadow_label) == ("x", "z")
    disjoint = compare(np.array([1.0, 0.0, 0.0]), np.array([0.0, 0.0, 1.0]), LABELS)
    assert disjoint.tv_distance == pytest.approx(1.0)


def test_compare_batch_matches_rowwise_and_stays_in_range():
    rng = np.random.default_rng(6)
    p = rng.dirichlet(np.ones(3), size=50).astype(np.float32)
    q = rng.dirichlet(np.ones(3), size=50).astype(np.float32)
    batch = compare_batch(p, q, LABELS)
    assert len(batch) == 50
    for i in range(50):
        one = compare(p[i], q[i], LABELS)
        assert batch[i].agree == one.agree and batch[i].tv_distance == pytest.approx(one.tv_distance)
    assert ((batch.tv_distance >= 0) & (batch.tv_distance <= 1)).all()
    assert batch.agreement_rate == pytest.approx(batch.agree.mean())
    assert compare_batch(np.zeros((0, 3)), np.zeros((0, 3)), LABELS).agreement_rate == 1.0


def test_compare_refuses_mismatched_shapes():
    with pytest.raises(ValueError):
        compare(np.array([0.5, 0.5]), np.array([0.2, 0.3, 0.5]), LABELS)
    with pytest.raises(ValueError):
        compare_batch(np.ones((2, 3)) / 3, np.ones((2, 2)) / 2, LABELS)
    with pytest.raises(ValueError):
        compare(np.array([np.nan, 0.5, 0.5]), np.array([0.2, 0.3, 0.5]), LABELS)


# -- DisagreementLog ---------------------------------------------------------------------------
def test_disagreement_log_keeps_the_last_n():
    log = DisagreementLog(3, max_text_chars=5, clock=lambda: 123.0)
    for i in range(5):
        log.add(f"text-{i}", "stable", "x", "teacher", "y", 0.5 + i / 10)
    snap = log.snapshot()
    assert len(log) == 3 and log.total == 5
    assert [s["text"] for s in snap] == ["text-", "text-", "text-"]
    assert [s["tv_distance"] for s in snap] == pytest.approx([0.7, 0.8, 0.9])
    assert snap[0] == {
        "text": "text-",
        "served_variant": "stable",
        "served_label": "x",
        "shadow_variant": "teacher",
        "shadow_label": "y",
        "tv_distance": pytest.approx(0.7),
        "at": 123.0,
        "request_id": None,
    }
    snap.clear()
    assert len(log.snapshot()) == 3  # a snapshot is a copy


def test_disagreement_log_is_thread_safe():
    log = DisagreementLog(50)

    def writer(n):
        for i in range(300):
            log.add(f"{n}-{i}", "a", "x", "b", "y", at=float(i))
            log.snapshot()

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(log) == 50 and log.total == 1200
    with pytest.raises(ValueError):
        DisagreementLog(0)
