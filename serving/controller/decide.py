"""The controller's pure step: one analysis interval in, the next candidate state and actions out.

This module owns the transitions of one candidate variant (its state, the policy that paces it
and the actions are :mod:`.candidate`): the :func:`step` taken every interval (Flagger's
scheduler, made a pure function), the operator's transitions (:func:`track`, :func:`promote`,
:func:`abort`, :func:`pause`, :func:`resume`) and :func:`merge`, which settles an operator action
racing an automatic one. Nothing here does I/O or reads a clock: ``now`` is passed in, actions
are returned as data, and the caller applies them in order and persists the state.

How an interval counts (``outcomes`` maps rule names to :class:`~.rules.Outcome`):

* any FAIL: a failing interval. The failure streak grows and the pass streak resets; the
  ``failures_to_rollback``-th failing interval in a row rolls the candidate back.
* no FAIL and at least one PASS: a passing interval. The pass streak grows and the failure
  streak resets; ``passes_per_step`` in a row move a PROGRESSING candidate to the next step.
* only NO_DATA (or no rules at all): nothing is learned, so both streaks are left exactly as
  they were. A quiet interval neither advances, fails, nor breaks a streak; a failing, quiet,
  failing sequence is two failing intervals in a row.
* ``outcomes is None`` (the metrics source failed): the pass streak resets, since advancing must
  rest on intervals actually seen back to back, and the failure streak is kept, since a blind
  interval is no evidence of recovery. ``source_errors_to_act`` failures in a row freeze the
  candidate (or roll it back, per policy); a candidate is never advanced or promoted blind.

Promotion may be held (``hold``, from the speed gate of :mod:`.speed`): a passing interval that
would promote keeps the candidate at its weight instead, with the hold's reason, and a ``hold``
audit entry when what holds it changes (not every interval). Its pass streak keeps growing, so it
is promoted on the first passing interval after the hold lifts; failures still roll it back.
An operator :func:`promote` is not held: it is the override.

Weights: the controller moves a candidate only to 0 or to one of the policy's steps. The last
step, 100, is reached only by promotion: the gateway config requires the stable variant to keep
weight > 0, so "candidate at 100" is expressible only by making it the stable variant.
A :class:`~.candidate.SetWeight` names the candidate's share; the rest goes to the stable variant.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from serving.controller.candidate import (
    CandidateState,
    Freeze,
    InvalidTransition,
    Phase,
    Policy,
    Promote,
    Record,
    Rollback,
    SetWeight,
    Transition,
)
from serving.controller.rules import Outcome
from serving.controller.speed import Hold

_DONE = frozenset({Phase.PROMOTED, Phase.ROLLED_BACK})
_HELD = frozenset({Phase.PAUSED, Phase.FROZEN})


def _index(steps: tuple[int, ...], weight: int) -> int:
    return sum(1 for w in steps if w <= weight) - 1


def _record(
    event: str,
    before: CandidateState,
    after: CandidateState,
    reason: str,
    actor: str,
    now: float,
    signals: Mapping[str, Any] | None = None,
) -> Record:
    detail = {
        "actor": actor,
        "variant": after.variant,
        "revision": after.revision,
        "phase_before": before.phase.value,
        "phase_after": after.phase.value,
        "weight_before": before.weight,
        "weight_after": after.weight,
        "reason": reason,
        "signals": dict(signals or {}),
        "at": now,
    }
    return Record(event, detail)


def _rollback(
    before: CandidateState, s: CandidateState, reason: str, signals: Mapping[str, str], actor: str, now: float
) -> Transition:
    new = replace(
        s,
        phase=Phase.ROLLED_BACK,
        weight=0,
        step_index=-1,
        consecutive_passes=0,
        since=now,
        last_reason=reason,
    )
    # Traffic first, then teardown, then the record (Flagger's order): whatever fails after the
    # first action, no caller is left on the bad candidate.
    return new, [
        SetWeight(s.variant, 0, reason),
        Rollback(s.variant, reason, dict(signals)),
        _record("rollback", before, new, reason, actor, now, signals),
    ]


def _promote(
    before: CandidateState,
    s: CandidateState,
    policy: Policy,
    reason: str,
    actor: str,
    now: float,
    signals: Mapping[str, Any] | None = None,
) -> Transition:
    new = replace(
        s,
        held="",
        phase=Phase.PROMOTED,
        weight=100,
        step_index=len(policy.steps) - 1,
        consecutive_failures=0,
        consecutive_passes=0,
        consecutive_source_errors=0,
        since=now,
        last_reason=reason,
    )
    return new, [Promote(s.variant, reason), _record("promote", before, new, reason, actor, now, signals)]


def promotes_next(state: CandidateState, policy: Policy) -> bool:
    """Whether the candidate's next advance would be its promotion (the only move a hold stops)."""
    return next((w for w in policy.steps if w > state.weight), None) == policy.steps[-1]


def _held(before: CandidateState, s: CandidateState, hold: Hold, now: float) -> Transition:
    reason = f"held before promotion: {hold.reason}"
    if s.held == hold.key:
        return replace(s, last_reason=reason), []
    new = replace(s, held=hold.key, last_reason=reason)
    return new, [_record("hold", before, new, hold.reason, "controller", now, {"speed_gate": hold.figures})]


def _advance(
    before: CandidateState, s: CandidateState, policy: Policy, now: float, hold: Hold | None = None
) -> Transition:
    # The next step is found from the weight, not the stored index, so a policy edited between
    # ticks (or a candidate tracked at an off-step weight) still moves to a step above it.
    nxt = next(i for i, w in enumerate(policy.steps) if w > s.weight)
    reason = f"{s.consecutive_passes} passing intervals in a row at {s.weight}%"
    if nxt == len(policy.steps) - 1:
        if hold is not None:
            return _held(before, s, hold, now)
        return _promote(before, s, policy, reason, "controller", now)
    weight = policy.steps[nxt]
    new = replace(
        s,
        step_index=nxt,
        weight=weight,
        consecutive_passes=0,
        since=now,
        last_reason=f"advanced to {weight}%: {reason}",
    )
    return new, [
        SetWeight(s.variant, weight, reason),
        _record("advance", before, new, reason, "controller", now),
    ]


def step(
    state: CandidateState,
    outcomes: Mapping[str, Outcome] | None,
    policy: Policy,
    now: float,
    *,
    advance: bool = True,
    required: frozenset[str] = frozenset(),
    hold: Hold | None = None,
) -> Transition:
    """Judge one interval (see the module docstring for exactly how each kind counts).

    ``advance=False`` (a variant configured ``progressive: false``) judges exactly the same and
    rolls back the same, but never moves the candidate up: only an operator promotes it.
    ``required``: rule names that must PASS for the interval to count as passing; no data in one
    of them makes a failure-free interval a quiet one (a candidate never advances on evidence
    that leaves out, say, the latency it serves with). ``hold``: why promotion must wait (the
    speed gate); it stops only the advance that would promote (module docstring).
    """
    if state.phase in _DONE:
        return state, []
    if outcomes is None:
        return _source_error(state, policy, now)
    s = replace(state, consecutive_source_errors=0)
    signals = {k: Outcome(v).value for k, v in sorted(outcomes.items())}
    failed = [k for k, v in signals.items() if v == Outcome.FAIL]
    if failed:
        n, limit = s.consecutive_failures + 1, policy.failures_to_rollback
        reason = f"failing interval {n}/{limit}: {', '.join(failed)}"
        s = replace(s, consecutive_failures=n, consecutive_passes=0, last_reason=reason)
        if n >= limit:
            return _rollback(state, s, reason, signals, "controller", now)
        return s, []
    if Outcome.PASS not in signals.values():
        return replace(s, last_reason="no data: streaks held"), []
    missing = sorted(k for k in required if signals.get(k) != Outcome.PASS)
    if missing:
        return replace(s, last_reason=f"no data for {', '.join(missing)}: streaks held"), []
    if hold is None and s.held:
        s = replace(s, held="")  # the hold lifted: a later one is news again
    n, need = s.consecutive_passes + 1, policy.passes_per_step
    reason = f"passing interval {n}/{need}" if advance else f"passing interval {n} (not progressive: held)"
    s = replace(s, consecutive_passes=n, consecutive_failures=0, last_reason=reason)
    if s.phase is not Phase.PROGRESSING or n < need or not advance:
        return s, []
    return _advance(state, s, policy, now, hold)


def _source_error(state: CandidateState, policy: Policy, now: float) -> Transition:
    n, limit = state.consecutive_source_errors + 1, policy.source_errors_to_act
    reason = f"metrics source failed {n} interval(s) in a row"
    s = replace(state, consecutive_source_errors=n, consecutive_passes=0, last_reason=reason)
    if n < limit or s.phase is Phase.FROZEN:
        return s, []
    if policy.on_source_errors == "rollback":
        return _rollback(state, s, reason, {}, "controller", now)
    new = replace(s, phase=Phase.FROZEN, since=now)
    return new, [Freeze(s.variant, reason), _record("freeze", state, new, reason, "controller", now)]


# -- operator transitions -----------------------------------------------------------------------
def track(
    state: CandidateState | None,
    variant: str,
    revision: str,
    policy: Policy,
    now: float,
    *,
    weight: int = 0,
    rolled_back: Iterable[str] = (),
) -> Transition:
    """Start judging ``variant`` at ``revision``, currently at ``weight`` percent.

    The same revision again returns ``state`` unchanged, whatever its phase: a rolled-back revision
    stays out however good its metrics look later, and a promoted one stays promoted. A revision
    in ``rolled_back`` (the store remembers them across restarts and across other revisions) is
    refused and rolled back at once. Tracking moves no traffic: the first step is earned with
    passing intervals (from shadow traffic, when the candidate is shadowed at weight 0).
    """
    if state is not None and state.variant != variant:
        raise ValueError(f"state is for variant {state.variant!r}, not {variant!r}")
    if state is not None and state.revision == revision:
        return state, []
    if isinstance(weight, bool) or not 0 <= weight < 100:
        raise ValueError(f"a tracked candidate's weight must be within 0..99, got {weight}")
    new = CandidateState(
        variant,
        revision,
        Phase.PROGRESSING,
        _index(policy.steps, weight),
        weight,
        last_reason=f"tracking revision {revision}",
        since=now,
        tracked_at=now,
    )
    before = state or new
    if revision in set(rolled_back):
        reason = f"revision {revision} was rolled back before; it does not re-enter"
        return _rollback(before, new, reason, {}, "controller", now)
    return new, [_record("track", before, new, new.last_reason, "controller", now)]


def _refuse(state: CandidateState, what: str) -> InvalidTransition:
    return InvalidTransition(f"cannot {what} {state.variant} ({state.revision}): it is {state.phase.value}")


def promote(
    state: CandidateState,
    policy: Policy,
    now: float,
    *,
    reason: str = "operator promote",
    actor: str = "operator",
    signals: Mapping[str, Any] | None = None,
) -> Transition:
    """Promote by hand, held or not (the override of the speed gate; ``signals``: what it overrode)."""
    if state.phase is Phase.PROMOTED:
        return state, []
    if state.phase is Phase.ROLLED_BACK:
        raise _refuse(state, "promote")
    return _promote(state, state, policy, reason, actor, now, signals)


def abort(
    state: CandidateState, now: float, *, reason: str = "operator abort", actor: str = "operator"
) -> Transition:
    """Roll back by hand; the same revision then stays out like any rolled-back one."""
    if state.phase is Phase.ROLLED_BACK:
        return state, []
    if state.phase is Phase.PROMOTED:
        raise _refuse(state, "abort")
    return _rollback(state, state, reason, {}, actor, now)


def pause(
    state: CandidateState, now: float, *, reason: str = "operator pause", actor: str = "operator"
) -> Transition:
    """Hold the candidate's weight; failures still roll it back. A frozen candidate stays frozen."""
    if state.phase in _HELD:
        return state, []
    if state.phase in _DONE:
        raise _refuse(state, "pause")
    new = replace(state, phase=Phase.PAUSED, since=now, last_reason=reason)
    return new, [_record("pause", state, new, reason, actor, now)]


def resume(
    state: CandidateState, now: float, *, reason: str = "operator resume", actor: str = "operator"
) -> Transition:
    """Let a paused or frozen candidate progress again, from fresh pass and source-error streaks."""
    if state.phase is Phase.PROGRESSING:
        return state, []
    if state.phase in _DONE:
        raise _refuse(state, "resume")
    # Passes seen while held, and errors that caused a freeze, do not carry into progress; the
    # failure streak does, as it is evidence against the candidate whoever holds it.
    new = replace(
        state,
        phase=Phase.PROGRESSING,
        consecutive_passes=0,
        consecutive_source_errors=0,
        since=now,
        last_reason=reason,
    )
    return new, [_record("resume", state, new, reason, actor, now)]


def merge(auto: Transition, operator: Transition) -> Transition:
    """One transition from an automatic and an operator one, both computed from the same state.

    Neither may have been applied yet; the result is the one to apply and persist. Rollback wins:
    whichever result rolls back is taken, so a racing promote or resume never outvotes a rollback
    (and an operator abort is never undone by an automatic advance). Otherwise an operator action
    that did something wins over the automatic step, whose actions are dropped and whose interval
    counts again next tick, except that its failure streak is kept, so a racing pause never delays
    a rollback. An operator no-op leaves the automatic step as it was.
    """
    a, o = auto[0], operator[0]
    if (a.variant, a.revision) != (o.variant, o.revision):
        raise ValueError(f"cannot merge transitions of {a.variant}@{a.revision} and {o.variant}@{o.revision}")
    if o.phase is Phase.ROLLED_BACK:
        return operator
    if a.phase is Phase.ROLLED_BACK or not operator[1]:
        return auto
    if o.phase is Phase.PROMOTED:
        return operator
    return replace(o, consecutive_failures=a.consecutive_failures), operator[1]
