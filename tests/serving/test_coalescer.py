"""Coalescing concurrent requests into batches: at once when idle, batched under load, exact rows."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from support import apoll_until

from serving.coalescer import Coalescer


class Backend:
    """Rows = [index of text in its batch, len(batch)]; slow enough for a queue to form."""

    def __init__(self, delay_s: float = 0.01) -> None:
        self.batches: list[list[str]] = []
        self.delay_s = delay_s
        self.running = 0
        self.peak = 0
        self.fail: Exception | None = None

    async def __call__(self, texts: list[str]) -> np.ndarray:
        self.batches.append(list(texts))
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            await asyncio.sleep(self.delay_s)  # the backend's simulated latency
            if self.fail:
                raise self.fail
            return np.array([[float(t.split("-")[1]), len(texts)] for t in texts])
        finally:
            self.running -= 1


def test_an_idle_coalescer_sends_a_request_at_once_and_alone():
    backend = Backend(delay_s=0.0)

    async def run():
        return await Coalescer(backend, max_batch_size=8).submit(["t-1"])

    rows = asyncio.run(run())
    assert backend.batches == [["t-1"]] and rows.tolist() == [[1.0, 1.0]]


def test_requests_queued_behind_a_running_batch_go_out_together_with_their_own_rows():
    backend = Backend()

    async def run():
        c = Coalescer(backend, max_batch_size=4)
        first = asyncio.ensure_future(c.submit(["t-0"]))
        # Once t-0 is running, the next 8 queue behind it.
        await apoll_until(lambda: backend.running == 1, every_s=0, what="t-0 to be running")
        rest = await asyncio.gather(*(c.submit([f"t-{i}"]) for i in range(1, 9)))
        return [await first, *rest]

    results = asyncio.run(run())
    # The first goes alone; the 8 that queued meanwhile go as two full batches of 4.
    assert [len(b) for b in backend.batches] == [1, 4, 4]
    assert [r[0, 0] for r in results] == list(range(9))  # every caller gets its own row
    assert backend.peak == 1


def test_a_request_bigger_than_a_batch_runs_alone_and_is_not_split():
    backend = Backend()

    async def run():
        c = Coalescer(backend, max_batch_size=2)
        return await asyncio.gather(c.submit(["t-0"]), c.submit(["t-1", "t-2", "t-3"]), c.submit(["t-4"]))

    a, big, c = asyncio.run(run())
    assert [len(b) for b in backend.batches] == [1, 3, 1]
    assert big[:, 0].tolist() == [1, 2, 3] and c[0, 0] == 4


def test_concurrent_batches_are_bounded():
    backend = Backend()

    async def run():
        c = Coalescer(backend, max_batch_size=1, max_concurrent=3)
        await asyncio.gather(*(c.submit([f"t-{i}"]) for i in range(10)))

    asyncio.run(run())
    assert backend.peak == 3 and len(backend.batches) == 10


def test_waiting_for_company_fills_a_batch():
    backend = Backend(delay_s=0.0)

    async def run():
        c = Coalescer(backend, max_batch_size=4, wait_s=0.2)

        async def late(i):
            await asyncio.sleep(0.01 * i)  # callers arriving one after another (the behaviour under test)
            return await c.submit([f"t-{i}"])

        await asyncio.gather(*(late(i) for i in range(4)))

    asyncio.run(run())
    assert [len(b) for b in backend.batches] == [4]


def test_a_failure_reaches_every_caller_of_the_batch_and_the_next_batch_still_runs():
    backend = Backend()
    backend.fail = ValueError("backend broke")

    async def run():
        c = Coalescer(backend, max_batch_size=4)
        results = await asyncio.gather(*(c.submit([f"t-{i}"]) for i in range(3)), return_exceptions=True)
        backend.fail = None
        return results, await c.submit(["t-9"])

    results, after = asyncio.run(run())
    assert all(isinstance(r, ValueError) for r in results)
    assert after[0, 0] == 9


def test_a_caller_that_gave_up_is_dropped_from_the_queue():
    backend = Backend(delay_s=0.05)

    async def run():
        c = Coalescer(backend, max_batch_size=8)
        first = asyncio.ensure_future(c.submit(["t-0"]))
        await asyncio.sleep(0)  # one pass of the event loop: t-0 is queued
        abandoned = asyncio.ensure_future(c.submit(["t-1"]))
        kept = asyncio.ensure_future(c.submit(["t-2"]))
        await asyncio.sleep(0)  # one pass: t-0 goes out alone, t-1 and t-2 queue behind it
        abandoned.cancel()
        await asyncio.gather(first, kept)

    asyncio.run(run())
    assert backend.batches == [["t-0"], ["t-2"]]


def test_bad_settings_are_refused():
    with pytest.raises(ValueError):
        Coalescer(Backend(), max_batch_size=0)
    with pytest.raises(ValueError):
        Coalescer(Backend(), max_batch_size=1, max_concurrent=0)
