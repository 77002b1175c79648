"""The controller's loop: observe each candidate, take the pure step, apply its actions, persist.

Everything with side effects sits behind three small interfaces passed in: the metrics source
(:mod:`serving.controller.sources`), the gateway it changes
(:class:`~serving.controller.routes.GatewayPort`: read the running config, set routes) and the
state store. Before a passing interval would promote a candidate that claims to be cheaper (its
lineage descends from a configured variant: ``claims_for``), the speed gate of :mod:`.speed`
compares the warm-up figures the source reports for it and for those variants, and may hold it.
One :meth:`Controller.tick` is one analysis
interval; traffic changes are applied before the state and audit entry are saved, so a crash
between the two leaves the gateway safe (at worst at weight 0) and the next tick re-derives the
rest. The controller changes only weights and shadowing, and only within what the config lists.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from serving.config import ConfigError, GatewayConfig, config_revision
from serving.controller.brownouts import BrownoutLog
from serving.controller.brownouts import read as read_brownouts
from serving.controller.candidate import (
    Action,
    CandidateState,
    InvalidTransition,
    Phase,
    Policy,
    Record,
    Rollback,
    SetWeight,
    check_actions,
    revision_of,
)
from serving.controller.decide import abort, pause, promote, promotes_next, resume, step, track
from serving.controller.routes import GatewayPort, Routes, next_routes
from serving.controller.rules import SERVING_SIGNALS, Measurement, Outcome, Rule, evaluate_all
from serving.controller.signals import Selector
from serving.controller.speed import Hold, Speed, judge
from serving.controller.store import AuditEntry, StateStore


class NotACandidate(InvalidTransition):
    """An operator action on a variant that is not a non-stable variant of the running gateway."""

    status_code = 404
    error_code = "not_a_candidate"


class NotAllowed(InvalidTransition):
    """A move the gateway config does not allow (the config with it would be invalid)."""


class Source(Protocol):
    def measure(
        self, variant: str, signals: Sequence[str], window_s: float, reference: Mapping[str, float] | None
    ) -> dict[str, Measurement]: ...

    def speed(self, variant: str) -> Speed | None: ...

    def series(self, selector: Selector) -> list[tuple[dict[str, str], float]]: ...


def reweigh(cfg: GatewayConfig, action: Action) -> GatewayConfig:
    """The config after one traffic action (ConfigError when the config does not allow it)."""
    routes = Routes.of(cfg)
    after = next_routes(routes, action, tuple(cfg.variants))
    return cfg if after == routes else after.applied_to(cfg)


def _keep_out(state: CandidateState, now: float) -> list[Action]:
    reason = f"revision {state.revision} was rolled back; it stays out until it changes"
    detail: dict[str, Any] = {
        "actor": "controller",
        "variant": state.variant,
        "revision": state.revision,
        "phase_before": state.phase.value,
        "phase_after": state.phase.value,
        "weight_before": state.weight,
        "weight_after": 0,
        "reason": reason,
        "signals": {},
        "at": now,
    }
    return [SetWeight(state.variant, 0, reason), Rollback(state.variant, reason), Record("keep-out", detail)]


def _evidence(
    rules: list[Rule],
    outcomes: Mapping[str, Any],
    cand: Mapping[str, Measurement],
    base: Mapping[str, Measurement],
) -> dict[str, Any]:
    """Per rule: its outcome, the candidate's value and samples, and the stable variant's value."""
    out: dict[str, Any] = {}
    for r in rules:
        c, b = cand.get(r.signal), base.get(r.signal)
        out[r.name] = {
            "outcome": Outcome(outcomes[r.name]).value,
            "value": _plain(None if c is None else c.value),
            "samples": 0 if c is None else c.samples,
            "stable": _plain(None if b is None else b.value),
        }
    return out


def _plain(v: float | None) -> float | str | None:
    # Strict JSON has no NaN (Prometheus' 0/0: no value) or infinity (a quantile above every bucket).
    if v is None or math.isnan(v):
        return None
    return v if math.isfinite(v) else str(v)


def _speed_figures(record: Record) -> dict[str, Any]:
    signals = record.detail.get("signals", {})
    return {"speed_gate": signals["speed_gate"]} if "speed_gate" in signals else {}


INTERVAL_OUTCOMES = ("pass", "fail", "no_data", "source_error")


def interval_outcome(outcomes: Mapping[str, Any] | None) -> str:
    """How one interval counted: source_error, fail (any rule failed), pass, or no_data."""
    if outcomes is None:
        return "source_error"
    values = {Outcome(v) for v in outcomes.values()}
    if Outcome.FAIL in values:
        return "fail"
    return "pass" if Outcome.PASS in values else "no_data"


def candidates(cfg: GatewayConfig) -> list[str]:
    """Variants the controller judges: every non-stable variant that serves or shadows traffic."""
    return sorted(
        k
        for k in cfg.variants
        if k != cfg.routing.stable and (cfg.routing.weights.get(k, 0) > 0 or k in cfg.shadow.variants)
    )


@dataclass
class Controller:
    gateway: GatewayPort
    source: Source
    store: StateStore
    # None: the running config's ``rollout`` section, read afresh every tick.
    policy: Policy | None = None
    # Given the config the tick read (one read per tick: every candidate is judged against the same).
    rules_for: Callable[[GatewayConfig, str], list[Rule]] = lambda _cfg, _key: []
    reference_for: Callable[[GatewayConfig, str], Mapping[str, float] | None] = lambda _cfg, _key: None
    # The configured variants a candidate descends from in the registry lineage: what it claims to
    # be cheaper than. None of them: the speed gate does not apply to it.
    claims_for: Callable[[GatewayConfig, str], Sequence[str]] = lambda _cfg, _key: ()
    # None: the running config's ``rollout.window_s``.
    window_s: float | None = None
    clock: Callable[[], float] = time.time
    # Told of every audit entry written and of every interval's outcome (pass, fail, no_data,
    # source_error): the service turns them into its metrics.
    on_record: Callable[[AuditEntry], None] = lambda _e: None
    on_interval: Callable[[str, str], None] = lambda _key, _outcome: None
    last_config: GatewayConfig | None = None
    brownouts: BrownoutLog = field(default_factory=BrownoutLog)

    def _exclusive(self):
        # One tick, operator action or apply at a time, across processes: they never interleave,
        # so whichever runs second sees the other's result (a rolled-back candidate refuses a
        # later promote: rollback wins).
        return self.store.exclusive()

    def operate(self, key: str, command: str, actor: str = "operator") -> CandidateState:
        """``promote | abort | pause | resume`` by hand; InvalidTransition when the phase forbids it."""
        with self._exclusive():
            cfg = self.gateway.current()
            if key not in cfg.variants or key == cfg.routing.stable:
                raise NotACandidate(f"{key!r} is not a candidate of the running gateway")
            now = self.clock()
            policy = self._policy(cfg)
            state, cfg = self._track(cfg, key, now, policy)
            reason = f"{command} by {actor}"
            if command == "promote":
                # The override: promoted whatever the speed gate says, and the audit says what it overrode.
                hold, figures = self.speed_gate(cfg, key, policy)
                if hold is not None:
                    reason += f", overriding the speed gate: {hold.reason}"
                signals = {"speed_gate": figures} if figures else None
                state, actions = promote(state, policy, now, reason=reason, actor=actor, signals=signals)
            elif command == "abort":
                state, actions = abort(state, now, reason=reason, actor=actor)
            elif command == "pause":
                state, actions = pause(state, now, reason=reason, actor=actor)
            elif command == "resume":
                state, actions = resume(state, now, reason=reason, actor=actor)
            else:
                raise ValueError(f"unknown command {command!r}: promote, abort, pause or resume")
            self._apply(cfg, state, actions, policy)
            return state

    def speed_gate(self, cfg: GatewayConfig, key: str, policy: Policy) -> tuple[Hold | None, dict[str, Any]]:
        """The speed gate's verdict on promoting ``key`` now (see :mod:`.speed`), and its figures."""
        from serving.controller.sources import SourceError

        gate = policy.speed_gate
        claims = [k for k in self.claims_for(cfg, key) if k in cfg.variants and k != key]
        if not gate.enabled or not claims:
            return None, {}
        # What it claims to be cheaper than is what it descends from (stable among them, when it
        # does): a candidate more accurate and dearer than an unrelated stable claims nothing of it.
        refs = sorted(set(claims))
        try:
            cand = self.source.speed(key)
            figures = {k: self.source.speed(k) for k in refs}
        except SourceError as err:
            return Hold("source-error", f"the warm-up figures could not be read: {err}"), {}
        return judge(key, cand, figures, gate.tolerance)

    def _policy(self, cfg: GatewayConfig) -> Policy:
        return self.policy if self.policy is not None else cfg.rollout

    def window(self, cfg: GatewayConfig) -> float:
        return self.window_s if self.window_s is not None else cfg.rollout.window_s

    def _track(
        self, cfg: GatewayConfig, key: str, now: float, policy: Policy
    ) -> tuple[CandidateState, GatewayConfig]:
        """The candidate's stored state, (re)started when the running config holds a new revision."""
        state, actions = track(
            self.store.load(key),
            key,
            revision_of(cfg, key),
            policy,
            now,
            weight=cfg.routing.weights.get(key, 0),
            rolled_back=self.store.rolled_back(key),
        )
        return state, self._apply(cfg, state, actions, policy)

    def tick(self) -> dict[str, CandidateState]:
        """One analysis interval for every candidate; returns their states afterwards."""
        with self._exclusive():
            return self._tick()

    def _tick(self) -> dict[str, CandidateState]:
        from serving.controller.sources import SourceError

        cfg = self.gateway.current()
        self.last_config = cfg
        now = self.clock()
        self._notice_outside_changes(cfg, now)
        policy, window = self._policy(cfg), self.window(cfg)
        out: dict[str, CandidateState] = {}
        stable = cfg.routing.stable
        for key in candidates(cfg):
            state, cfg = self._track(cfg, key, now, policy)
            if state.phase is Phase.ROLLED_BACK:
                # Same revision handed traffic again (e.g. the old config re-applied): it stays out.
                cfg = self._apply(cfg, state, _keep_out(state, now), policy)
            if state.phase in (Phase.ROLLED_BACK, Phase.PROMOTED):
                out[key] = state
                continue
            rules = self.rules_for(cfg, key)
            signals = sorted({r.signal for r in rules})
            evidence: dict[str, Any] = {}
            # Judge a new revision on its own metrics: the window reaches back no further than one
            # interval before it was tracked (a previous revision's slow or wrong answers are not
            # its), but spans at least two intervals, since a rate needs two scrapes to exist.
            since = now - state.tracked_at + policy.interval_s
            own = window if not state.tracked_at else min(window, max(since, 2 * policy.interval_s))
            try:
                cand = self.source.measure(key, signals, own, self.reference_for(cfg, key))
                base = self.source.measure(stable, signals, window, self.reference_for(cfg, stable))
                judged = evaluate_all(rules, cand, base)
                evidence = _evidence(rules, judged, cand, base)
                outcomes: dict[str, Any] | None = judged
            except SourceError:
                outcomes = None
            self.on_interval(key, interval_outcome(outcomes))
            advance = cfg.variants[key].progressive
            # Serving traffic, it must show its latency and errors to advance; shadow-only, it cannot.
            required = (
                frozenset(r.name for r in rules if r.signal in SERVING_SIGNALS)
                if state.weight
                else frozenset()
            )
            before = state
            # Asked only when this interval could promote it: the gate holds promotion, nothing else.
            hold = None
            if advance and state.phase is Phase.PROGRESSING and promotes_next(state, policy):
                hold = self.speed_gate(cfg, key, policy)[0]
            state, actions = step(state, outcomes, policy, now, advance=advance, required=required, hold=hold)
            # The audit keeps the values behind each outcome, not just the verdicts (and a hold's
            # speed figures beside them).
            actions = [
                Record(a.event, {**a.detail, "signals": {**evidence, **_speed_figures(a)}})
                if isinstance(a, Record) and evidence
                else a
                for a in actions
            ]
            try:
                cfg = self._apply(cfg, state, actions, policy)
            except NotAllowed as err:
                state = replace(before, last_reason=f"held: {err}")
                self.store.save(state)
            out[key] = state
        self._record_brownouts(cfg, now)
        return out

    def _record_brownouts(self, cfg: GatewayConfig, now: float) -> None:
        """Audit the SLO guard's moves since the last interval (:mod:`.brownouts`)."""
        from serving.controller.sources import SourceError

        try:
            seen = read_brownouts(self.source.series)
        except SourceError:
            return  # the candidates' intervals already count the source as down
        for e in self.brownouts.entries(seen, cfg, now):
            fields = (e.actor, e.action, e.variant, e.revision, e.weights_before, e.weights_after)
            self.on_record(self.store.append(*fields, e.signals, e.reason, e.at, e.config_revision))

    def _notice_outside_changes(self, cfg: GatewayConfig, now: float) -> None:
        """Audit a config change made neither by this controller nor by ``slimgate apply``.

        (e.g. ``helm upgrade`` or Ray's REST API used directly): who did it is unknown here, but
        when, what revision and which weights are not.
        """
        rev, weights = config_revision(cfg), dict(cfg.routing.weights)
        seen = self.store.seen_config()
        audit = []
        if seen is not None and seen[0] != rev:
            audit.append(
                AuditEntry(
                    "unknown",
                    "config-change",
                    "*",
                    rev,
                    seen[1],
                    weights,
                    {},
                    f"config revision {seen[0]} -> {rev} outside slimgate apply and this controller",
                    now,
                    rev,
                )
            )
        if seen is None or seen[0] != rev:
            for entry in self.store.see_config(rev, weights, audit):
                self.on_record(entry)

    def _apply(
        self, cfg: GatewayConfig, state: CandidateState, actions: list[Action], policy: Policy
    ) -> GatewayConfig:
        check_actions(actions, stable=cfg.routing.stable, policy=policy)
        before = dict(cfg.routing.weights)
        audit: list[AuditEntry] = []
        for act in actions:
            if isinstance(act, Record):
                d = act.detail
                audit.append(
                    AuditEntry(
                        d["actor"],
                        act.event,
                        d["variant"],
                        d["revision"],
                        before,
                        dict(cfg.routing.weights),
                        d.get("signals", {}),
                        d["reason"],
                        d["at"],
                        config_revision(cfg),
                    )
                )
                continue
            try:
                new = reweigh(cfg, act)
            except ConfigError as err:
                # Nothing was applied yet for this move and its state is not saved: the caller
                # keeps the candidate where it is.
                raise NotAllowed(
                    f"the config does not allow {type(act).__name__} of {state.variant}: {err}"
                ) from None
            if new != cfg:
                # Traffic first: the record follows what really happened.
                self.gateway.set_routes(Routes.of(new))
                cfg = new
        saved = self.store.save(state, audit)
        if dict(cfg.routing.weights) != before or saved:
            self.store.see_config(config_revision(cfg), cfg.routing.weights)
        for entry in saved:
            self.on_record(entry)
        return cfg
