"""Admission control: a hard cap, and a limit that adapts to the latency objective (injected clock)."""

from __future__ import annotations

from support import FakeClock

from serving.admission import AdmissionControl
from serving.config import AdmissionConfig


def _adm(objective=0.1, cap=100, clock=None, **kw):
    return AdmissionControl(
        AdmissionConfig(latency_objective_s=objective, max_in_flight=cap), clock=clock or FakeClock(), **kw
    )


def _complete(adm: AdmissionControl, clock: FakeClock, n: int, latency_s: float, concurrent: int) -> None:
    """n requests, ``concurrent`` at a time, each taking ``latency_s``."""
    for _ in range(-(-n // concurrent)):
        started = []
        for _ in range(concurrent):
            if adm.try_admit() is None:
                started.append(clock())
        clock.advance(latency_s)
        for s in started:
            adm.done(s)


def test_the_hard_cap_sheds_beyond_max_in_flight():
    adm = _adm(objective=None, cap=3)
    assert [adm.try_admit() for _ in range(4)] == [None, None, None, "max_in_flight"]
    adm.done(adm.now())
    assert adm.try_admit() is None and adm.in_flight == 3


def test_latency_over_the_objective_shrinks_the_limit_until_admitted_requests_meet_it():
    clock = FakeClock()
    adm = _adm(objective=0.1, clock=clock, initial_limit=64, window=50)
    # A backend that answers 200 requests/s: latency = in flight / 200 (Little's law).
    for _ in range(40):
        conc = adm.limit
        _complete(adm, clock, 50, latency_s=conc / 200, concurrent=conc)
    assert adm.limit * (1 / 200) <= 0.1  # the limit now keeps latency within the objective
    assert adm.limit >= 2
    conc = adm.limit
    assert [adm.try_admit() for _ in range(conc)] == [None] * conc
    assert adm.try_admit() == "limit"  # the excess is shed at once


def test_comfortable_latency_grows_the_limit_only_when_it_is_used():
    clock = FakeClock()
    adm = _adm(objective=1.0, clock=clock, initial_limit=4, min_limit=2, window=20)
    _complete(adm, clock, 200, latency_s=0.01, concurrent=2)  # the limit of 4 never binds
    assert adm.limit == 4
    _complete(adm, clock, 200, latency_s=0.01, concurrent=4)  # bound and fast: it grows
    assert adm.limit > 4


def test_without_an_objective_only_the_cap_applies():
    adm = _adm(objective=None, cap=50)
    assert adm.limit == 50
    adm.configure(AdmissionConfig(latency_objective_s=None, max_in_flight=10))
    assert adm.limit == 10 and adm.max_in_flight == 10


def test_an_objective_set_again_starts_from_the_initial_limit_not_from_the_old_cap():
    adm = _adm(objective=None, cap=2)
    assert adm.limit == 2
    adm.configure(AdmissionConfig(latency_objective_s=0.5, max_in_flight=64))
    assert adm.limit == 64  # the initial limit, not the cap of 2 the previous config imposed
