"""Metrics sources: the shared signal math, the embedded scraper, and agreement with a real Prometheus.

The last part starts ``/usr/bin/prometheus`` on a loopback port, lets it scrape a local exporter
that publishes the gateway's metrics under their real exported names and labels, drives
synthetic traffic, and checks that :class:`PrometheusSource` and :class:`EmbeddedSource` fed the
same exposition text measure the same thing. Those tests are skipped only where the binary is
missing (CI installs it).
"""

from __future__ import annotations

import math
import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, start_http_server
from support import FakeClock, poll_until

from serving.controller.rules import Measurement
from serving.controller.signals import (
    FEEDBACK_SPECS,
    SIGNALS,
    bucket_quantile,
    counter_increase,
    duration,
    exported_name,
    promql,
    psi,
)
from serving.controller.sources import EmbeddedSource, PrometheusSource, SourceError
from serving.metrics import PROMETHEUS_NAMES, SPECS, MetricSpec

INF = math.inf


# -- pure math ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("q", "buckets", "expected"),
    [
        # rank 20 lies in (0.1, 0.5] holding 20 of it, 10 below: 0.1 + 0.4 * 10/20
        (0.5, [(0.1, 10), (0.5, 30), (1.0, 40), (INF, 40)], 0.3),
        # rank 39.6 in (0.5, 1]: 0.5 + 0.5 * 9.6/10
        (0.99, [(0.1, 10), (0.5, 30), (1.0, 40), (INF, 40)], 0.98),
        # the lowest bucket interpolates from 0: rank 5 of 10 in (0, 0.1]
        (0.25, [(0.1, 10), (1.0, 20), (INF, 20)], 0.05),
        # a rank in the +Inf bucket returns the highest finite bound
        (0.9, [(0.1, 0), (1.0, 5), (INF, 10)], 1.0),
        # order does not matter; equal bounds merge (two series summed by le)
        (0.5, [(INF, 20), (0.5, 15), (0.1, 5), (INF, 20), (0.5, 15), (0.1, 5)], 0.1 + 0.4 * 10 / 20),
        # a decreasing count is lifted to the envelope, as Prometheus does
        (0.5, [(0.1, 10), (0.5, 8), (1.0, 20), (INF, 20)], 0.1),
    ],
)
def test_bucket_quantile_interpolates_like_prometheus(q, buckets, expected):
    assert bucket_quantile(q, buckets) == pytest.approx(expected)


@pytest.mark.parametrize(
    "buckets",
    [
        [],
        [(0.1, 0), (INF, 0)],  # no observations
        [(0.1, 5), (1.0, 10)],  # no +Inf bucket
        [(INF, 10)],  # fewer than two buckets
    ],
)
def test_bucket_quantile_is_nan_without_a_usable_histogram(buckets):
    assert math.isnan(bucket_quantile(0.99, buckets))


def test_psi_is_zero_for_identical_distributions_and_grows_with_the_shift():
    ref = {"pos": 0.5, "neg": 0.5}
    assert psi({"pos": 50, "neg": 50}, ref) == pytest.approx(0.0, abs=1e-12)
    small, large = psi({"pos": 55, "neg": 45}, ref), psi({"pos": 90, "neg": 10}, ref)
    assert 0 < small < large
    # (0.9 - 0.5) ln(0.9/0.5) + (0.1 - 0.5) ln(0.1/0.5), up to the epsilon smoothing
    assert large == pytest.approx(0.4 * math.log(1.8) + 0.4 * math.log(5), rel=1e-3)
    # a label never seen on one side is large but finite
    assert math.isfinite(psi({"pos": 10, "other": 10}, ref)) and psi({"pos": 10, "other": 10}, ref) > 1


def test_psi_refuses_an_empty_distribution():
    with pytest.raises(ValueError):
        psi({}, {"pos": 1.0})
    with pytest.raises(ValueError):
        psi({"pos": 3}, {"pos": 0.0})


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([5, 7, 9], 4),
        ([5, 7, 2, 4], 2 + 2 + 2),  # reset to 0 then counted up to 2: all of it is increase
        ([None, 3, 5], 5),  # born inside the window: counted from 0
        ([3, None, 5], 2),  # missing from one snapshot: skipped
        ([4], 0),
        ([], 0),
    ],
)
def test_counter_increase_handles_resets_and_new_series(values, expected):
    assert counter_increase(values) == expected


def test_promql_uses_only_exported_names():
    allowed = set(PROMETHEUS_NAMES.values()) | {exported_name(k) for k in FEEDBACK_SPECS}
    for signal in SIGNALS:
        for query in promql(signal, "cand", 300):
            names = set(re.findall(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{", query))
            assert names, query
            for name in names:
                assert re.sub(r"_(bucket|sum|count)$", "", name) in allowed or name in allowed, name
            assert 'variant="cand"' in query and "[300s]" in query


def test_promql_reads_as_documented():
    value, samples = promql("latency_p99_s", "cand", 60)
    latency = PROMETHEUS_NAMES["slimgate_request_latency_seconds"]
    assert value == f'histogram_quantile(0.99, sum by (le) (rate({latency}_bucket{{variant="cand"}}[60s])))'
    assert samples == f'sum(increase({latency}_count{{variant="cand"}}[60s]))'
    value, _ = promql("error_rate", "cand", 60)
    assert 'kind=~"variant_error|timeout"' in value and "or vector(0)" in value
    value, _ = promql("fallback_rate", "cand", 60)
    assert 'route!="fallback"' in value
    assert promql("drift_psi", "cand", 60)[0].startswith("sum by (label) (increase(")
    assert promql("error_rate", 'a"b', 60)[0].count('variant="a\\"b"') == 3


def test_windows_render_as_prometheus_durations():
    assert duration(300) == "300s" and duration(1.5) == "1500ms"
    for bad in (0, -1, math.inf, math.nan):
        with pytest.raises(ValueError):
            duration(bad)
    with pytest.raises(ValueError):
        promql("p50", "cand", 60)


# -- the gateway's metrics, as Ray exports them ------------------------------------------------------
def _spec(key: str) -> MetricSpec:
    return SPECS.get(key) or FEEDBACK_SPECS[key]


@dataclass(frozen=True)
class Op:
    """One recorded metric event repeated ``n`` times: an increment, or an observation of ``value``."""

    key: str
    labels: dict[str, str]
    n: int
    value: float | None = None  # histograms only


# One batch of traffic between scrapes. cand fails 3 of its 23 calls and each falls back to stable;
# stable itself times out once. Per batch, by hand:
#   error_rate   cand 3/23, stable 1/(40 + 3 + 1); fallback_rate cand 3/23, stable 0/40
#   latency      cand 18 x 4 ms, 2 x 40 ms; stable 40 x 12 ms, 3 fallbacks x 200 ms
#   shadow       cand agrees on 45 of 50 texts, distance 0.02 x 45 and 0.4 x 5 (mean 0.058)
#   predictions  cand 10 pos / 10 neg; stable 30 pos / 13 neg; feedback cand 8/10, stable 19/20
#   cascade      cand (a cascade) answers 16 texts with its first stage, escalates 4: 3 answered
#                by its second stage, 1 degraded
BATCH = [
    Op("slimgate_requests", {"variant": "stable", "route": "split"}, 40),
    Op("slimgate_requests", {"variant": "stable", "route": "fallback"}, 3),
    Op("slimgate_requests", {"variant": "cand", "route": "split"}, 20),
    Op("slimgate_errors", {"variant": "cand", "kind": "variant_error"}, 2),
    Op("slimgate_errors", {"variant": "cand", "kind": "timeout"}, 1),
    Op("slimgate_errors", {"variant": "cand", "kind": "client_error"}, 4),  # not the variant's fault
    Op("slimgate_errors", {"variant": "stable", "kind": "timeout"}, 1),
    Op("slimgate_fallbacks", {"variant": "cand"}, 3),
    Op("slimgate_request_latency_seconds", {"variant": "stable", "route": "split"}, 40, 0.012),
    Op("slimgate_request_latency_seconds", {"variant": "stable", "route": "fallback"}, 3, 0.2),
    Op("slimgate_request_latency_seconds", {"variant": "cand", "route": "split"}, 18, 0.004),
    Op("slimgate_request_latency_seconds", {"variant": "cand", "route": "split"}, 2, 0.04),
    Op("slimgate_shadow_agreements", {"variant": "cand"}, 45),
    Op("slimgate_shadow_disagreements", {"variant": "cand"}, 5),
    Op("slimgate_shadow_distance", {"variant": "cand"}, 45, 0.02),
    Op("slimgate_shadow_distance", {"variant": "cand"}, 5, 0.4),
    Op("slimgate_predictions", {"variant": "cand", "label": "pos"}, 10),
    Op("slimgate_predictions", {"variant": "cand", "label": "neg"}, 10),
    Op("slimgate_predictions", {"variant": "stable", "label": "pos"}, 30),
    Op("slimgate_predictions", {"variant": "stable", "label": "neg"}, 13),
    Op("slimgate_feedback", {"variant": "cand"}, 10),
    Op("slimgate_feedback_correct", {"variant": "cand"}, 8),
    Op("slimgate_feedback", {"variant": "stable"}, 20),
    Op("slimgate_feedback_correct", {"variant": "stable"}, 19),
    Op("slimgate_cascade_texts", {"variant": "cand", "stage": "first"}, 16),
    Op("slimgate_cascade_texts", {"variant": "cand", "stage": "then"}, 3),
    Op("slimgate_cascade_texts", {"variant": "cand", "stage": "degraded"}, 1),
]
REFERENCE = {"pos": 0.5, "neg": 0.5}


def expected(batches: int) -> dict[str, dict[str, Measurement]]:
    """What both sources must measure after ``batches`` batches (hand-computed, see BATCH)."""
    n = batches
    return {
        "cand": {
            "error_rate": Measurement(3 / 23, 23 * n),
            "fallback_rate": Measurement(3 / 23, 23 * n),
            # rank 0.99 * 20n lies among the 2n observations in (0.03, 0.05]
            "latency_p99_s": Measurement(0.03 + 0.02 * (0.99 * 20 * n - 18 * n) / (2 * n), 20 * n),
            "shadow_agreement": Measurement(0.9, 50 * n),
            "shadow_distance": Measurement(0.058, 50 * n),
            "drift_psi": Measurement(0.0, 20 * n),
            "live_accuracy": Measurement(0.8, 10 * n),
            "escalation_rate": Measurement(4 / 20, 20 * n),
        },
        "stable": {
            "error_rate": Measurement(1 / 44, 44 * n),
            "fallback_rate": Measurement(0.0, 40 * n),
            # rank 0.99 * 43n lies among the 3n fallback observations in (0.15, 0.25]
            "latency_p99_s": Measurement(0.15 + 0.1 * (0.99 * 43 * n - 40 * n) / (3 * n), 43 * n),
            "shadow_agreement": Measurement(None, 0),
            "shadow_distance": Measurement(None, 0),
            "drift_psi": Measurement(psi({"pos": 30, "neg": 13}, REFERENCE), 43 * n),
            "live_accuracy": Measurement(0.95, 20 * n),
            "escalation_rate": Measurement(None, 0),
        },
    }


def assert_measured(got: dict[str, Measurement], want: dict[str, Measurement], rel: float = 1e-9) -> None:
    assert set(got) == set(want)
    for signal, w in want.items():
        g = got[signal]
        assert g.samples == w.samples, (signal, g, w)
        if w.value is None:
            assert g.value is None, (signal, g)
        else:
            assert g.value == pytest.approx(w.value, rel=rel, abs=1e-9), (signal, g, w)


class Gateway:
    """The metrics the signals read, with their real exported names and labels, in a fresh registry.

    Every series also carries a ``WorkerId`` label, as Ray's exporter adds per-process labels, so
    the sources must sum across them.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.metrics: dict[str, Any] = {}
        for key in {op.key for op in BATCH}:
            spec, name = _spec(key), exported_name(key)
            labels = [*spec.labels, "WorkerId"]
            if spec.kind == "counter":
                self.metrics[key] = Counter(name, spec.help, labels, registry=self.registry)
            else:
                self.metrics[key] = Histogram(
                    name, spec.help, labels, buckets=spec.buckets, registry=self.registry
                )

    def prime(self, worker: str) -> None:
        """Create every series at 0, as if the gateway had run before the first scrape."""
        for op in BATCH:
            self.metrics[op.key].labels(**op.labels, WorkerId=worker)

    def batch(self, worker: str) -> None:
        for op in BATCH:
            child = self.metrics[op.key].labels(**op.labels, WorkerId=worker)
            for _ in range(op.n):
                child.inc() if op.value is None else child.observe(op.value)

    def text(self) -> str:
        return generate_latest(self.registry).decode()


def test_exported_names_match_the_metric_table():
    text = Gateway().text()
    for key in ("slimgate_requests", "slimgate_errors", "slimgate_feedback", "slimgate_feedback_correct"):
        assert f"# TYPE {exported_name(key)} counter" in text
    assert f"# TYPE {PROMETHEUS_NAMES['slimgate_shadow_distance']} histogram" in text


# -- the embedded source --------------------------------------------------------------------------------
SIGNAL_LIST = list(SIGNALS)


def test_embedded_source_measures_the_traffic_between_snapshots():
    gw, clock = Gateway(), FakeClock(0.0)
    gw.prime("w1")
    src = EmbeddedSource(gw.text, clock)
    src.scrape()
    gw.batch("w1")
    clock.now = 10
    src.scrape()
    gw.batch("w2")
    clock.now = 20
    src.scrape()
    want = expected(2)
    for variant in ("cand", "stable"):
        assert_measured(src.measure(variant, SIGNAL_LIST, 60, REFERENCE), want[variant])
    # a 10 s window at t=20 starts at the t=10 snapshot: the second batch only
    assert_measured(src.measure("cand", SIGNAL_LIST, 10, REFERENCE), expected(1)["cand"])
    # without a reference distribution drift is no data, never a pass
    assert src.measure("cand", ["drift_psi"], 60, None) == {"drift_psi": Measurement(None, 0)}


def test_embedded_source_reports_no_data_when_nothing_happened():
    gw, clock = Gateway(), FakeClock(0.0)
    gw.batch("w1")
    src = EmbeddedSource(gw.text, clock)
    src.scrape()
    # one snapshot is no window at all
    assert set(src.measure("cand", SIGNAL_LIST, 60, REFERENCE).values()) == {Measurement(None, 0)}
    clock.now = 10
    src.scrape()
    got = src.measure("cand", SIGNAL_LIST, 60, REFERENCE)
    assert got == dict.fromkeys(SIGNAL_LIST, Measurement(None, 0))
    assert src.measure("unknown-variant", ["error_rate"], 60, None) == {"error_rate": Measurement(None, 0)}


def _text(requests: float, timeouts: float, variant_errors: float | None = None) -> str:
    # As Ray's exporter writes it: no _created samples, extra per-process labels.
    req, err = exported_name("slimgate_requests"), exported_name("slimgate_errors")
    lines = [
        f"# TYPE {req} counter",
        f'{req}{{Component="serve",route="split",variant="cand"}} {requests}',
        f"# TYPE {err} counter",
        f'{err}{{Component="serve",kind="timeout",variant="cand"}} {timeouts}',
    ]
    if variant_errors is not None:
        lines.append(f'{err}{{Component="serve",kind="variant_error",variant="cand"}} {variant_errors}')
    return "\n".join(lines) + "\n"


def test_embedded_source_handles_counter_resets_and_series_born_in_the_window():
    texts = iter(
        [
            _text(100, 10),
            _text(150, 15),
            _text(20, 5, variant_errors=3),  # the gateway restarted; variant_error is new
            _text(60, 5, variant_errors=3),
        ]
    )
    clock = FakeClock(0.0)
    src = EmbeddedSource(lambda: next(texts), clock)
    for t in (0, 10, 20, 30):
        clock.now = t
        src.scrape()
    # requests: 50 + 20 + 40 = 110; failed calls: 5 + (5 + 3) + 0 = 13
    got = src.measure("cand", ["error_rate"], 60, None)["error_rate"]
    assert got == Measurement(pytest.approx(13 / 123), 123)


def test_embedded_source_keeps_snapshots_for_the_retention_only():
    values = iter([0, 10, 30, 60])
    clock = FakeClock(0.0)
    src = EmbeddedSource(lambda: _text(next(values), 0), clock, retention_s=100)
    for t in (0, 50, 120, 200):
        clock.now = t
        src.scrape()
    # the t=0 snapshot is gone; the longest window now starts at t=50 (the last one before 200 - 100)
    assert src.measure("cand", ["error_rate"], 10_000, None)["error_rate"] == Measurement(0.0, 50)


def test_embedded_source_failures_are_source_errors_until_a_scrape_succeeds():
    clock = FakeClock(0.0)
    answers: list[Callable[[], str]] = [
        lambda: _text(1, 0),
        lambda: (_ for _ in ()).throw(ConnectionRefusedError("gateway down")),
        lambda: "this is { not an exposition",
        lambda: _text(5, 0),
    ]
    src = EmbeddedSource(lambda: answers.pop(0)(), clock)
    with pytest.raises(SourceError, match="scrape"):
        src.measure("cand", ["error_rate"], 60, None)
    src.scrape()
    with pytest.raises(SourceError, match="gateway down"):
        src.scrape()
    with pytest.raises(SourceError):
        src.measure("cand", ["error_rate"], 60, None)
    with pytest.raises(SourceError):
        src.scrape()
    clock.now = 10
    src.scrape()
    assert src.measure("cand", ["error_rate"], 60, None)["error_rate"] == Measurement(0.0, 4)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_prometheus_source_unreachable_is_a_source_error():
    src = PrometheusSource(f"http://127.0.0.1:{_free_port()}", timeout_s=2)
    with pytest.raises(SourceError, match="unreachable"):
        src.measure("cand", ["error_rate"], 60, None)
    with pytest.raises(ValueError):
        PrometheusSource("file:///etc/passwd")


# -- against a real Prometheus ---------------------------------------------------------------------------
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"


def _get(url: str) -> bytes | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.read()
    except (OSError, urllib.error.URLError):
        return None


def wait_for(
    what: str, check: Callable[[], Any], timeout_s: float, proc: subprocess.Popen | None = None
) -> Any:
    """:func:`support.poll_until`, giving up at once if Prometheus (``proc``) exits meanwhile."""

    def checked() -> Any:
        result = check()
        if not result and proc is not None and proc.poll() is not None:
            raise AssertionError(f"prometheus exited with {proc.returncode} while waiting for {what}")
        return result

    return poll_until(checked, timeout_s, every_s=0.1, what=what)


@dataclass
class Stack:
    gateway: Gateway
    exporter_url: str
    prometheus_url: str
    proc: subprocess.Popen

    def last_scrape(self) -> float:
        """Timestamp of Prometheus's latest sample of the gateway (0 before the first)."""
        got = PrometheusSource(self.prometheus_url).query(
            f"max(timestamp({exported_name('slimgate_requests')}))"
        )
        return got[0][1] if got else 0.0


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if not Path(PROMETHEUS).exists():
        pytest.skip("prometheus is not installed (CI installs it with apt)")
    tmp = tmp_path_factory.mktemp("prometheus")
    gw = Gateway()
    for worker in ("w1", "w2"):
        gw.prime(worker)
    server, thread = start_http_server(0, addr="127.0.0.1", registry=gw.registry)
    exporter = f"127.0.0.1:{server.server_port}"
    port = _free_port()
    config = tmp / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}\n"
        f"scrape_configs: [{{job_name: gateway, static_configs: [{{targets: ['{exporter}']}}]}}]\n"
    )
    log = (tmp / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    s = Stack(gw, f"http://{exporter}/metrics", url, proc)
    try:
        wait_for("prometheus to be ready", lambda: _get(f"{url}/-/ready"), 30, proc)
        wait_for("the first scrape", s.last_scrape, 15, proc)
        yield s
    except AssertionError:
        log.flush()
        print((tmp / "prometheus.log").read_text(errors="replace")[-3000:])
        raise
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_prometheus_and_embedded_sources_agree_on_the_same_traffic(stack: Stack):
    def fetch() -> str:
        body = _get(stack.exporter_url)
        if body is None:
            raise ConnectionError(f"cannot GET {stack.exporter_url}")
        return body.decode()

    embedded = EmbeddedSource(fetch)
    embedded.scrape()  # every series at 0, as in Prometheus's first samples
    for worker in ("w1", "w2", "w1"):
        stack.gateway.batch(worker)
        # A scrape that started after the batch saw all of it. Scrape timestamps are start times,
        # which Prometheus may shift by up to 2 ms to align them, hence the margin.
        done = time.time() + 0.01
        last = wait_for("a scrape after the batch", lambda d=done: (t := stack.last_scrape()) > d and t, 10)
        embedded.scrape()
    # Evaluated exactly at the last scrape, with every series starting from 0 in the window,
    # Prometheus's increase() has nothing to extrapolate: counts are exact, not just ratios.
    prom = PrometheusSource(stack.prometheus_url, clock=lambda: last)
    want = expected(3)
    for variant in ("cand", "stable"):
        from_prometheus = prom.measure(variant, SIGNAL_LIST, 120, REFERENCE)
        from_embedded = embedded.measure(variant, SIGNAL_LIST, 120, REFERENCE)
        assert_measured(from_prometheus, want[variant], rel=1e-6)
        assert_measured(from_embedded, want[variant])
        assert_measured(from_prometheus, from_embedded, rel=1e-6)
    # The buckets the latency rule counts over-bound requests from arrive the same from both:
    # 2 of cand's 20 observations a batch lie above 30 ms.
    over = [
        src.measure("cand", ["latency_p99_s"], 120, None)["latency_p99_s"].above(0.03)
        for src in (prom, embedded)
    ]
    assert over == [2 * 3, 2 * 3]


def test_prometheus_query_errors_are_source_errors(stack: Stack):
    src = PrometheusSource(stack.prometheus_url)
    with pytest.raises(SourceError, match="bad_data"):
        src.query("sum(")
    assert src.measure("nobody", SIGNAL_LIST, 60, REFERENCE) == dict.fromkeys(
        SIGNAL_LIST, Measurement(None, 0)
    )
