"""What tests share: a clock, a deadline poller, and small fakes of the gateway's ports.

Fakes are passed in through constructors (never patched into modules): a :class:`FakeClock`
for anything that reads time, a :class:`MemorySink` for metrics, :class:`FakeVariant` for a
variant the dataplane calls. Tests wait for something to happen with :func:`poll_until` (or
:func:`apoll_until` inside a coroutine), never with a fixed sleep.

The other modules here: ``support.controller`` (fakes of the rollout controller's ports),
``support.e2e`` (the end-to-end gateway config and client), ``support.chart`` (rendering the Helm
chart with Helm's engine).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import numpy as np

from serving.metrics import MetricSpec
from serving.variant_clients import Answer, VariantInfo

LABELS = ("noun.animal", "noun.artifact", "noun.plant")


class FakeClock:
    """A clock that moves only when told to: :meth:`advance`, :meth:`tick`, or by setting ``now``."""

    def __init__(self, start: float = 1000.0, step: float = 1.0) -> None:
        self.now = start
        self.step = step

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def tick(self) -> float:
        """Move on one ``step`` (say, one analysis interval) and return the new time."""
        self.now += self.step
        return self.now


class TickingClock:
    """A clock that moves ``step`` seconds every time it is read (one controller tick per read)."""

    def __init__(self, start: float = 1000.0, step: float = 5.0) -> None:
        self.t = start
        self.step = step

    def __call__(self) -> float:
        self.t += self.step
        return self.t


def _timed_out(timeout_s: float, what: str, value: Any, diagnose: Callable[[], str] | None) -> AssertionError:
    message = f"timed out after {timeout_s} s waiting for {what} (last value: {value!r})"
    if diagnose is not None:
        message += f"\n{diagnose()}"
    return AssertionError(message)


def poll_until(
    condition: Callable[[], Any],
    timeout_s: float = 10.0,
    every_s: float = 0.05,
    *,
    what: str = "the condition",
    diagnose: Callable[[], str] | None = None,
) -> Any:
    """Call ``condition`` until it returns something truthy, and return that; fail at the deadline.

    It is called at once, then every ``every_s`` seconds. At the deadline the test fails with an
    AssertionError naming ``what`` and the last value, followed by what ``diagnose`` returns (a
    log tail, say). A condition that knows the wait is hopeless (the process exited) raises.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise _timed_out(timeout_s, what, value, diagnose)
        time.sleep(every_s)


async def apoll_until(
    condition: Callable[[], Any],
    timeout_s: float = 10.0,
    every_s: float = 0.01,
    *,
    what: str = "the condition",
    diagnose: Callable[[], str] | None = None,
) -> Any:
    """:func:`poll_until` inside a coroutine: the event loop runs the other tasks between calls.

    ``every_s=0`` checks after every pass of the event loop.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise _timed_out(timeout_s, what, value, diagnose)
        await asyncio.sleep(every_s)


class MemorySink:
    """Metric values as recorded, by (name, sorted tags)."""

    def __init__(self) -> None:
        self.counters: dict[tuple[str, tuple], float] = defaultdict(float)
        self.observations: dict[tuple[str, tuple], list[float]] = defaultdict(list)
        self.gauges: dict[tuple[str, tuple], float] = {}

    def inc(self, spec: MetricSpec, value: float, tags: dict[str, str]) -> None:
        self.counters[(spec.name, tuple(sorted(tags.items())))] += value

    def observe(self, spec: MetricSpec, value: float, tags: dict[str, str]) -> None:
        self.observations[(spec.name, tuple(sorted(tags.items())))].append(value)

    def set(self, spec: MetricSpec, value: float, tags: dict[str, str]) -> None:
        self.gauges[(spec.name, tuple(sorted(tags.items())))] = value

    def count(self, name: str, **tags: str) -> float:
        return self.counters.get((name, tuple(sorted(tags.items()))), 0.0)

    def total(self, name: str) -> float:
        return sum(v for (n, _), v in self.counters.items() if n == name)


def one_hot(label: int, n: int, labels: int = len(LABELS)) -> np.ndarray:
    probs = np.full((n, labels), 0.05, dtype=np.float32)
    probs[:, label] = 1.0 - 0.05 * (labels - 1)
    return probs


class FakeVariant:
    """A variant that answers ``label`` for every text, or fails, or stalls, as a test says."""

    def __init__(
        self, key: str, label: int = 0, *, version: int = 1, ready: bool = True, delay_s: float = 0.0
    ) -> None:
        self.key = key
        self.label = label
        self.version = version
        self._ready = ready
        self.delay_s = delay_s
        self.fail: Exception | None = None
        self.calls: list[list[str]] = []

    @property
    def info(self) -> VariantInfo:
        return VariantInfo(self.key, f"{self.key}-model", self.version, LABELS, "fake", "fp32", "router")

    @property
    def ready(self) -> bool:
        return self._ready

    def configure(self, spec: Any) -> None:
        pass

    async def predict(self, texts: list[str], timeout_s: float) -> Answer:
        self.calls.append(list(texts))
        if self.delay_s:
            # The variant's simulated latency (what a test stalls it with), not synchronisation.
            await asyncio.wait_for(asyncio.sleep(self.delay_s), timeout_s)
        if self.fail is not None:
            raise self.fail
        return Answer(one_hot(self.label, len(texts)), f"{self.key}-model", self.version)

    def close(self) -> None:
        pass


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout_s: float = 20.0) -> int:
    """Ask ``proc`` to stop with ``sig``; past ``timeout_s`` kill its whole session. Always reaped."""
    proc.send_signal(sig)
    try:
        return proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        return proc.wait()


# What a refusal may not say, on any surface: a Python class, a module or file path, a private name.
INTERNALS = re.compile(
    r"\b\w*(?:Error|Exception)\b|\.py\b|\b(?:serving|variants|ray|starlette)\.\w|\b_[a-z]\w*\b"
)
