"""Rollout drills on a running gateway: steady client load, a controller in a thread, changes applied
the way an operator applies them, and a watch on what the controller does about them.

``slimgate demo`` uses these to show a degraded candidate rolled back and a healthy one promoted
live; ``benchmarks/rollout.py`` uses them to time the same events and count client errors.
"""

from __future__ import annotations

import json
import random
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from serving.controller.candidate import CandidateState


@dataclass(frozen=True)
class Sample:
    at: float  # time.monotonic() when the answer arrived
    status: int  # HTTP status; 0 = no HTTP answer at all
    variant: str


class SteadyLoad:
    """``rate`` requests per second spread over ``threads`` paced clients, each sticky to a user."""

    def __init__(self, url: str, texts: list[str], rate: float = 20.0, threads: int = 4, users: int = 500):
        self.url = url.rstrip("/") + "/v1/predict"
        self.texts, self.rate, self.threads, self.users = texts, rate, threads, users
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._workers: list[threading.Thread] = []

    def __enter__(self) -> SteadyLoad:
        for i in range(self.threads):
            t = threading.Thread(target=self._client, args=(i,), daemon=True)
            t.start()
            self._workers.append(t)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._workers:
            t.join(timeout=40)

    def _client(self, seed: int) -> None:
        rng = random.Random(seed)
        period = self.threads / self.rate
        next_at = time.monotonic() + rng.random() * period
        while not self._stop.is_set():
            delay = next_at - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                return
            next_at = max(next_at + period, time.monotonic() - period)
            body = json.dumps({"inputs": [rng.choice(self.texts)]}).encode()
            user = f"user-{rng.randrange(self.users)}"
            req = urllib.request.Request(
                self.url,
                data=body,
                method="POST",
                headers={"content-type": "application/json", "x-user-id": user},
            )
            try:
                with urllib.request.urlopen(req, timeout=30) as resp:
                    variant = json.loads(resp.read()).get("variant", "")
                    self.samples.append(Sample(time.monotonic(), resp.status, variant))
            except urllib.error.HTTPError as err:
                err.close()
                self.samples.append(Sample(time.monotonic(), err.code, ""))
            except OSError:
                self.samples.append(Sample(time.monotonic(), 0, ""))

    def window(self, start: float, end: float | None = None) -> list[Sample]:
        stop = time.monotonic() if end is None else end
        return [s for s in list(self.samples) if start <= s.at <= stop]

    def errors(self, start: float, end: float | None = None) -> int:
        return sum(1 for s in self.window(start, end) if s.status != 200)


class ControllerThread:
    """``slimgate controller run`` in a thread of this process, on the given metrics source.

    Like the real one it serves its /metrics (and admin API) on loopback, at ``api_port`` (0: any
    free port; ``url`` says which), so a Prometheus can scrape the controller's own series.
    """

    def __init__(self, source, state: Path, dashboard: str | None = None, api_port: int = 0) -> None:
        from serving import ray_rest
        from serving.controller.api import ControllerAPI
        from serving.controller.service import ControllerMetrics, build

        self.metrics = ControllerMetrics()
        self.ctl = build(
            source, state, dashboard=dashboard or ray_rest.DEFAULT_DASHBOARD, metrics=self.metrics
        )
        self.api = ControllerAPI(self.ctl, self.metrics, "127.0.0.1", api_port)
        self.url = f"http://127.0.0.1:{self.api.port}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        from serving.controller.service import run

        run(self.ctl, self.metrics, stop=self._stop)

    def __enter__(self) -> ControllerThread:
        self.api.start()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
        self.api.close()
        self.ctl.store.close()


def free_port() -> int:
    """A loopback port free right now, for a server whose address must be known before it starts."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def watch(
    ctl,
    variant: str,
    until: Callable[[CandidateState], bool],
    timeout_s: float,
    on_change: Callable[[CandidateState, float], None] = lambda _s, _t: None,
    since: float | None = None,
    revision: str | None = None,
) -> tuple[CandidateState | None, float]:
    """Poll the controller's stored state of ``variant`` until ``until(state)``; (state, seconds taken).

    ``on_change(state, seconds)`` is called whenever the phase or weight changes. None as the state
    when the timeout passes first. ``revision``: only states of that revision count (the state of
    an earlier revision stays in the store until the controller tracks the new one).
    """
    start = time.monotonic() if since is None else since
    last = None
    while time.monotonic() - start < timeout_s:
        state = ctl.store.load(variant)
        if state is not None and revision is not None and state.revision != revision:
            state = None
        if state is not None and (last is None or (state.phase, state.weight) != (last.phase, last.weight)):
            on_change(state, time.monotonic() - start)
            last = state
        if state is not None and until(state):
            return state, time.monotonic() - start
        time.sleep(0.2)
    return None, time.monotonic() - start


def running_revision(variant: str) -> str:
    """The revision (as the controller tracks it) of ``variant`` in the running gateway's config."""
    from serving.controller.candidate import revision_of
    from serving.controller.service import RayGateway

    return revision_of(RayGateway().current(), variant)
