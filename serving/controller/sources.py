"""Where the controller's measurements come from: a Prometheus server, or the gateway's own metrics.

This module owns the :class:`MetricsSource` interface the controller reads each interval and its
two implementations. :class:`PrometheusSource` runs the PromQL of :mod:`.signals` against a
Prometheus server's HTTP API. :class:`EmbeddedSource` is for machines without one: it scrapes
the gateway's exposition text itself (Ray's metrics endpoint), keeps timestamped snapshots, and
evaluates the same :func:`~.signals.definition` over them with the same math (:mod:`.signals`),
so that both reach the same decisions on the same traffic.

Where they may differ: Prometheus's ``increase()`` extrapolates to the window's edges, so its
sample counts can be fractionally higher (ratios and quantiles, being scale-free, are unaffected
as long as the series share scrape times); and a series born between two scrapes is counted from
zero here, but only from its first scrape (plus a little extrapolation) by Prometheus.

A source that cannot answer raises :class:`SourceError`; the controller turns that into its
"source failed" input, which is never the same as no data.
"""

from __future__ import annotations

import bisect
import http.client
import json
import math
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from prometheus_client.parser import text_string_to_metric_families

from serving.controller.rules import Measurement
from serving.controller.signals import (
    Distribution,
    Quantile,
    Ratio,
    Selector,
    counter_increase,
    definition,
    drift,
    duration,
    measurement,
    promql,
    quantile,
    ratio,
    speed_of,
    speed_selectors,
)
from serving.controller.speed import Speed


class SourceError(RuntimeError):
    """The metrics backend could not be reached or a query failed: the interval is unobserved."""


class MetricsSource(Protocol):
    def measure(
        self, variant: str, signals: Sequence[str], window_s: float, reference: Mapping[str, float] | None
    ) -> dict[str, Measurement]:
        """Each of ``signals`` of ``variant`` over the last ``window_s`` seconds.

        ``reference`` is the label distribution drift_psi compares against (no data without it).
        Raises SourceError when the backend is unreachable or a query fails.
        """
        ...

    def speed(self, variant: str) -> Speed | None:
        """``variant``'s warm-up figures as its replicas report them now; None when none report."""
        ...

    def series(self, selector: Selector) -> Vector:
        """Every series ``selector`` matches as it stands now (gauges: no window), with its labels."""
        ...


# -- Prometheus -----------------------------------------------------------------------------------
Vector = list[tuple[dict[str, str], float]]


class PrometheusSource:
    """Instant queries against ``base_url``'s ``/api/v1/query``.

    ``clock``, when given, fixes the evaluation time of every query of one :meth:`measure` call
    (so a value and its sample count describe the same window); without it each query is
    evaluated at the server's now.
    """

    def __init__(self, base_url: str, timeout_s: float = 5.0, clock: Callable[[], float] | None = None):
        if urllib.parse.urlsplit(base_url).scheme not in ("http", "https"):
            raise ValueError(f"base_url must be an http(s) URL, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.clock = clock

    def query(self, expr: str, at: float | None = None) -> Vector:
        """The instant vector ``expr`` evaluates to (a scalar becomes one label-less element)."""
        form = {"query": expr} | ({"time": f"{at:.3f}"} if at is not None else {})
        # POST: the form body has no URL length limit, and the queries are long.
        req = urllib.request.Request(
            f"{self.base_url}/api/v1/query",
            data=urllib.parse.urlencode(form).encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                body = resp.read()
        except urllib.error.HTTPError as err:
            # Prometheus answers a bad query with 400/422 and a JSON error; keep its words.
            with err:
                body = err.read()
            raise SourceError(f"prometheus {self.base_url}: HTTP {err.code}: {_error(body)}") from None
        except (OSError, ValueError, http.client.HTTPException) as err:  # URLError, refused, timeouts
            raise SourceError(f"prometheus {self.base_url} unreachable: {err}") from err
        return _vector(body, self.base_url)

    def measure(
        self, variant: str, signals: Sequence[str], window_s: float, reference: Mapping[str, float] | None
    ) -> dict[str, Measurement]:
        at = self.clock() if self.clock is not None else None
        out: dict[str, Measurement] = {}
        for signal in signals:
            d = definition(signal, variant)
            value_q, samples_q = promql(signal, variant, window_s)
            if isinstance(d, Distribution):
                if reference is None:
                    out[signal] = Measurement(None, 0)
                    continue
                counts = {labels.get(d.by, ""): v for labels, v in self.query(value_q, at)}
                out[signal] = drift(counts, reference)
                continue
            if isinstance(d, Quantile):
                # The buckets themselves, not histogram_quantile: the rule's test counts them, and
                # the quantile follows from them by the same interpolation.
                buckets_q = f"sum by (le) (increase({d.buckets.render()}[{duration(window_s)}]))"
                buckets = [(float(labels.get("le", "nan")), v) for labels, v in self.query(buckets_q, at)]
                out[signal] = quantile(d.q, [(le, v) for le, v in buckets if not math.isnan(le)])
                continue
            value = _one(self.query(value_q, at), value_q)
            count = _one(self.query(samples_q, at), samples_q)
            out[signal] = measurement(value, count or 0.0)
        return out

    def speed(self, variant: str) -> Speed | None:
        return speed_from(self, variant)

    def series(self, selector: Selector) -> Vector:
        return self.query(selector.render(), self.clock() if self.clock is not None else None)


def _error(body: bytes) -> str:
    try:
        doc = json.loads(body)
        return f"{doc.get('errorType', 'error')}: {doc.get('error', '')}"
    except (ValueError, AttributeError):
        return body[:200].decode(errors="replace")


def _vector(body: bytes, where: str) -> Vector:
    try:
        doc = json.loads(body)
        if doc.get("status") != "success":
            raise SourceError(f"prometheus {where}: {_error(body)}")
        data = doc["data"]
        if data["resultType"] == "scalar":
            return [({}, float(data["result"][1]))]
        if data["resultType"] != "vector":
            raise SourceError(f"prometheus {where}: expected a vector, got {data['resultType']}")
        return [(item["metric"], float(item["value"][1])) for item in data["result"]]
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as err:
        raise SourceError(f"prometheus {where}: unreadable answer: {err}") from err


def _one(vector: Vector, expr: str) -> float | None:
    """The single value of an aggregated query; None when it matched no series."""
    if not vector:
        return None
    if len(vector) > 1:
        raise SourceError(f"expected at most one series from {expr}, got {len(vector)}")
    return vector[0][1]


# -- embedded ---------------------------------------------------------------------------------------
SeriesKey = tuple[str, tuple[tuple[str, str], ...]]  # (sample name, sorted labels)


@dataclass(frozen=True)
class Snapshot:
    at: float
    values: Mapping[SeriesKey, float]


def parse_exposition(text: str) -> dict[SeriesKey, float]:
    """Every sample of a Prometheus text exposition (gauges too: the speed gate reads them)."""
    out: dict[SeriesKey, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name.endswith("_created"):
                continue
            out[(s.name, tuple(sorted(s.labels.items())))] = float(s.value)
    return out


class EmbeddedSource:
    """Measures from snapshots of the gateway's own exposition text, like ``increase()`` would.

    ``fetch_text`` returns the text (e.g. a GET of the node's Ray metrics endpoint); the controller
    calls :meth:`scrape` once per interval, then :meth:`measure`. A window's increase runs from
    the newest snapshot taken at or before ``clock() - window_s`` (the oldest one if the source
    is younger than the window) through every later snapshot, so resets in between are seen.
    Snapshots are kept for ``retention_s``, the longest window it can answer in full.
    """

    def __init__(
        self,
        fetch_text: Callable[[], str],
        clock: Callable[[], float] = time.time,
        retention_s: float = 3600.0,
    ):
        self.fetch_text = fetch_text
        self.clock = clock
        self.retention_s = retention_s
        self._snapshots: list[Snapshot] = []
        self._last_error: str | None = None
        self._lock = threading.Lock()

    def scrape(self) -> Snapshot:
        """Take a snapshot now; SourceError (remembered until the next success) if that fails."""
        try:
            values = parse_exposition(self.fetch_text())
        except Exception as err:  # noqa: BLE001 - any failure to fetch or parse is the same to us
            with self._lock:
                self._last_error = f"{type(err).__name__}: {err}"
            raise SourceError(f"scraping the gateway's metrics failed: {self._last_error}") from err
        snap = Snapshot(self.clock(), values)
        with self._lock:
            self._last_error = None
            self._snapshots.append(snap)
            self._snapshots.sort(key=lambda s: s.at)
            # Keep the newest snapshot at or before the retention horizon: it is the base of the
            # longest window.
            horizon = bisect.bisect_right([s.at for s in self._snapshots], snap.at - self.retention_s)
            del self._snapshots[: max(0, horizon - 1)]
        return snap

    def measure(
        self, variant: str, signals: Sequence[str], window_s: float, reference: Mapping[str, float] | None
    ) -> dict[str, Measurement]:
        if not window_s > 0:
            raise ValueError(f"window must be positive, got {window_s}")
        chain = self._chain(window_s)
        out: dict[str, Measurement] = {}
        for signal in signals:
            d = definition(signal, variant)
            if isinstance(d, Ratio):
                out[signal] = ratio(_total(chain, d.numerator), _total(chain, d.denominator))
            elif isinstance(d, Quantile):
                buckets: list[tuple[float, float]] = []
                for labels, inc in _increases(chain, d.buckets).items():
                    le = dict(labels).get("le")
                    if le is not None:
                        buckets.append((float(le), inc))
                out[signal] = quantile(d.q, buckets)
            else:
                counts: dict[str, float] = {}
                for labels, inc in _increases(chain, d.counter).items():
                    key = dict(labels).get(d.by, "")
                    counts[key] = counts.get(key, 0.0) + inc
                out[signal] = drift(counts, reference)
        return out

    def speed(self, variant: str) -> Speed | None:
        return speed_from(self, variant)

    def series(self, selector: Selector) -> Vector:
        """From the newest snapshot: gauges are read as they stand, not over a window."""
        chain = self._chain(0.0)
        if not chain:
            return []
        return [
            (dict(labels), v)
            for (name, labels), v in chain[-1].values.items()
            if selector.matches(name, dict(labels))
        ]

    def _chain(self, window_s: float) -> list[Snapshot]:
        with self._lock:
            if self._last_error is not None:
                raise SourceError(f"the last scrape of the gateway's metrics failed: {self._last_error}")
            if not self._snapshots:
                raise SourceError("no snapshot of the gateway's metrics yet: call scrape() first")
            now = self.clock()
            snaps = [s for s in self._snapshots if s.at <= now]
        start = bisect.bisect_right([s.at for s in snaps], now - window_s)
        return snaps[max(0, start - 1) :]


def _increases(chain: list[Snapshot], sel: Selector) -> dict[tuple[tuple[str, str], ...], float]:
    """The window increase of every series ``sel`` matches, keyed by its labels."""
    keys = {k for snap in chain for k in snap.values if k[0] == sel.name and sel.matches(k[0], dict(k[1]))}
    return {k[1]: counter_increase(snap.values.get(k) for snap in chain) for k in keys}


def _total(chain: list[Snapshot], selectors: Iterable[Selector]) -> float:
    return sum(sum(_increases(chain, sel).values()) for sel in selectors)


def speed_from(source: MetricsSource, variant: str) -> Speed | None:
    """``variant``'s warm-up figures (its slowest replica's) from any source's current series."""
    p50, tput, hw = (source.series(sel) for sel in speed_selectors(variant))
    return speed_of((v for _, v in p50), (v for _, v in tput), (lb.get("hardware", "") for lb, _ in hw))
