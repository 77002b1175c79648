"""HTTP load from ``hey`` (a Go load generator, Debian package ``hey``), parsed per request.

The load generator is a compiled program in its own process, not a Python client competing with
the gateway for the same interpreter. Every request's latency and status come back from
``hey -o csv``, so shed (503) and answered (200) requests are summarised apart.
"""

from __future__ import annotations

import csv
import io
import shutil
import statistics
import subprocess
from dataclasses import dataclass, field

BODY = '{"inputs": ["a tall perennial woody plant having a main trunk and branches"]}'


def hey_binary() -> str:
    path = shutil.which("hey")
    if path is None:
        raise SystemExit("benchmarks need `hey` (Debian package hey; scripts/bootstrap.sh installs it)")
    return path


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(round(q / 100 * len(s))) - 1))]


@dataclass
class Load:
    """One hey run: per-status latencies (seconds) and the run's wall time."""

    seconds: float
    latencies: dict[int, list[float]] = field(default_factory=dict)
    # (seconds from the start when the answer came, status) per answered request, in hey's order.
    answers: list[tuple[float, int]] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(len(v) for v in self.latencies.values())

    def count(self, status: int) -> int:
        return len(self.latencies.get(status, []))

    @property
    def rps(self) -> float:
        return self.total / self.seconds if self.seconds else 0.0

    def ok_rps(self) -> float:
        return self.count(200) / self.seconds if self.seconds else 0.0

    def p(self, q: float, status: int | None = 200) -> float:
        lat = (
            self.latencies.get(status, [])
            if status is not None
            else [x for v in self.latencies.values() for x in v]
        )
        return _pct(lat, q)

    def statuses(self) -> dict[int, int]:
        return {s: len(v) for s, v in sorted(self.latencies.items())}

    def line(self, name: str) -> str:
        return (
            f"  {name:52s} {self.ok_rps():8.1f} req/s   p50 {1000 * self.p(50):7.1f} ms   "
            f"p99 {1000 * self.p(99):7.1f} ms   {self.statuses()}"
        )


def hey(
    url: str,
    *,
    n: int | None = None,
    duration_s: float | None = None,
    concurrency: int = 32,
    rate_per_worker: float | None = None,
    headers: dict[str, str] | None = None,
    body: str = BODY,
    timeout_s: int = 30,
) -> Load:
    """Run hey against ``url`` (POST ``body``); ``n`` requests or ``duration_s`` seconds."""
    args = [
        hey_binary(),
        "-c",
        str(concurrency),
        "-m",
        "POST",
        "-T",
        "application/json",
        "-d",
        body,
        "-t",
        str(timeout_s),
        "-o",
        "csv",
    ]
    if n is not None:
        args += ["-n", str(n)]
    if duration_s is not None:
        args += ["-z", f"{duration_s:g}s"]
    if rate_per_worker is not None:
        args += ["-q", f"{rate_per_worker:g}"]
    for k, v in (headers or {}).items():
        args += ["-H", f"{k}: {v}"]
    out = subprocess.run([*args, url], capture_output=True, text=True, check=True).stdout
    latencies: dict[int, list[float]] = {}
    answers: list[tuple[float, int]] = []
    for row in csv.DictReader(io.StringIO(out)):
        status = int(row["status-code"])
        latency = float(row["response-time"])
        latencies.setdefault(status, []).append(latency)
        answers.append((float(row["offset"]) + latency, status))
    last = max((t for t, _ in answers), default=0.0)
    return Load(duration_s if duration_s else last, latencies, answers)


def median_of(runs: list[Load]) -> Load:
    """The run with the median throughput (figures stay those of one real run)."""
    return sorted(runs, key=lambda r: r.ok_rps())[len(runs) // 2]


def mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else float("nan")
