"""Coalescing concurrent requests for one variant into fewer backend calls.

A :class:`Coalescer` sits in front of one batch function (an in-process backend, or a call to a
variant's own replicas) and runs at most ``max_concurrent`` calls of it at once. Requests that
arrive while every call slot is busy wait together and go out as one batch of up to
``max_batch_size`` texts when a slot frees: at low load a request is sent at once, alone, and pays
nothing for batching; under load the queue turns into batches by itself. ``wait_s`` > 0 makes the
first request of a batch wait that long for company (classic dynamic batching), which trades
latency for fewer, fuller calls when a call has a large fixed cost.

A request larger than ``max_batch_size`` texts is never split; it runs as a batch of its own.
A request whose caller gave up (cancelled, timed out) before its batch left is dropped from the
queue, so a stalled backend does not build an unbounded backlog of abandoned work.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np

BatchFn = Callable[[list[str]], Awaitable[np.ndarray]]


@dataclass
class _Pending:
    texts: list[str]
    future: asyncio.Future


class Coalescer:
    def __init__(
        self,
        run: BatchFn,
        *,
        max_batch_size: int,
        wait_s: float = 0.0,
        max_concurrent: int = 1,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        if max_batch_size < 1 or max_concurrent < 1 or wait_s < 0:
            raise ValueError("max_batch_size and max_concurrent must be >= 1 and wait_s >= 0")
        self._run = run
        self.max_batch_size = max_batch_size
        self.wait_s = wait_s
        self.max_concurrent = max_concurrent
        self._on_batch = on_batch
        self._queue: deque[_Pending] = deque()
        self._queued_texts = 0
        self._active = 0
        self._filled: asyncio.Event | None = None
        self._workers: set[asyncio.Task] = set()  # held so the loop does not drop a running worker

    def configure(self, *, max_batch_size: int, wait_s: float, max_concurrent: int) -> None:
        """Change the batching live; batches already running finish as they were."""
        if max_batch_size < 1 or max_concurrent < 1 or wait_s < 0:
            raise ValueError("max_batch_size and max_concurrent must be >= 1 and wait_s >= 0")
        self.max_batch_size, self.wait_s, self.max_concurrent = max_batch_size, wait_s, max_concurrent

    @property
    def queued(self) -> int:
        """Requests waiting for a call slot."""
        return len(self._queue)

    async def submit(self, texts: list[str]) -> np.ndarray:
        """The batch function's rows for ``texts``, computed alone or together with other requests."""
        future = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(texts, future))
        self._queued_texts += len(texts)
        if self._filled is not None and self._queued_texts >= self.max_batch_size:
            self._filled.set()
        if self._active < self.max_concurrent:
            self._active += 1
            task = asyncio.ensure_future(self._worker())
            self._workers.add(task)
            task.add_done_callback(self._workers.discard)
        return await future

    async def _worker(self) -> None:
        try:
            while self._queue:
                if self.wait_s > 0 and self._queued_texts < self.max_batch_size:
                    await self._wait_for_company()
                batch = self._take()
                if batch:
                    await self._call(batch)
        finally:
            self._active -= 1

    async def _wait_for_company(self) -> None:
        self._filled = asyncio.Event()
        try:
            await asyncio.wait_for(self._filled.wait(), self.wait_s)
        except TimeoutError:
            pass
        finally:
            self._filled = None

    def _take(self) -> list[_Pending]:
        batch: list[_Pending] = []
        size = 0
        while self._queue:
            nxt = self._queue[0]
            if nxt.future.done():  # its caller gave up: nothing to compute
                self._queue.popleft()
                self._queued_texts -= len(nxt.texts)
                continue
            if batch and size + len(nxt.texts) > self.max_batch_size:
                break
            self._queue.popleft()
            self._queued_texts -= len(nxt.texts)
            batch.append(nxt)
            size += len(nxt.texts)
        return batch

    async def _call(self, batch: list[_Pending]) -> None:
        texts = [t for p in batch for t in p.texts] if len(batch) > 1 else batch[0].texts
        if self._on_batch is not None:
            self._on_batch(len(texts))
        try:
            rows = await self._run(texts)
        except BaseException as err:  # noqa: BLE001 - every waiter of the batch gets the failure
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(err if isinstance(err, Exception) else RuntimeError(str(err)))
            if not isinstance(err, Exception):
                raise
            return
        i = 0
        for p in batch:
            n = len(p.texts)
            if not p.future.done():
                p.future.set_result(rows[i : i + n])
            i += n
