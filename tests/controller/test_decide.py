"""The controller's pure step, tick by tick, with an injected clock."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import pytest
from pydantic import ValidationError
from support import FakeClock

from serving.config import GatewayConfig, parse_config
from serving.controller.candidate import (
    Action,
    CandidateState,
    Freeze,
    InvalidTransition,
    Phase,
    Policy,
    Promote,
    Record,
    Rollback,
    SetWeight,
    check_actions,
    revision_of,
)
from serving.controller.decide import abort, merge, pause, promote, resume, step, track
from serving.controller.rules import Outcome

P, F, N = Outcome.PASS, Outcome.FAIL, Outcome.NO_DATA
PASS = {"latency": P, "errors": P, "agreement": N}  # one no-data among passes is still a pass
FAIL = {"latency": P, "errors": F, "agreement": P}
QUIET = {"latency": N, "errors": N, "agreement": N}
ERR = None  # the metrics source failed
POLICY = Policy()


class Run:
    """Feeds intervals through ``step`` and keeps every action, as the controller loop would."""

    def __init__(self, state: CandidateState, policy: Policy = POLICY) -> None:
        # Every tick of the clock is one analysis interval.
        self.state, self.policy, self.clock = state, policy, FakeClock(1_000.0, step=60.0)
        self.actions: list[Action] = []

    def feed(self, intervals: Iterable[Mapping[str, Outcome] | None]) -> list[Action]:
        new: list[Action] = []
        for outcomes in intervals:
            self.state, acts = step(self.state, outcomes, self.policy, self.clock.tick())
            new += acts
        self.actions += new
        return new

    def weights(self) -> list[int]:
        return [a.weight for a in self.actions if isinstance(a, SetWeight)]


def tracked(policy: Policy = POLICY, weight: int = 0, revision: str = "tiny@1#aa") -> CandidateState:
    state, actions = track(None, "tiny", revision, policy, 0.0, weight=weight)
    assert state.phase is Phase.PROGRESSING and [type(a) for a in actions] == [Record]
    return state


def kinds(actions: Iterable[Action]) -> list[str]:
    return [type(a).__name__ for a in actions]


# -- the happy path -----------------------------------------------------------------------------
def test_healthy_candidate_walks_every_step_then_is_promoted() -> None:
    run = Run(tracked())
    seen = []
    for _ in range(4):
        # Exactly M passing intervals per step: one short of M moves nothing.
        assert run.feed([PASS] * (POLICY.passes_per_step - 1)) == []
        run.feed([PASS])
        seen.append(run.state.weight)
    assert seen == [5, 25, 50, 100]
    assert run.weights() == [5, 25, 50]  # 100 only through promotion
    assert run.state.phase is Phase.PROMOTED and run.state.step_index == 3
    assert kinds(run.actions[-2:]) == ["Promote", "Record"]
    assert run.feed([PASS, FAIL, FAIL, ERR, ERR, ERR, ERR]) == []  # done is done


def test_advance_records_why_and_when() -> None:
    run = Run(tracked())
    run.feed([PASS, PASS])
    set_weight, record = run.actions
    assert set_weight == SetWeight("tiny", 5, "2 passing intervals in a row at 0%")
    assert record.event == "advance"
    assert record.detail["weight_before"] == 0 and record.detail["weight_after"] == 5
    assert record.detail["at"] == run.clock.now == run.state.since


def test_custom_steps_and_passes() -> None:
    policy = Policy(steps=[10, 100], passes_per_step=3)
    run = Run(tracked(policy), policy)
    run.feed([PASS] * 6)
    assert run.weights() == [10] and run.state.phase is Phase.PROMOTED


# -- failure ------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 2, 3])
def test_rolled_back_after_exactly_n_failing_intervals_weight_zero_first(n: int) -> None:
    policy = Policy(failures_to_rollback=n)
    run = Run(tracked(policy), policy)
    run.feed([PASS, PASS, PASS, PASS])  # at 25%
    assert run.state.weight == 25
    assert run.feed([FAIL] * (n - 1)) == []
    actions = run.feed([FAIL])
    assert kinds(actions) == ["SetWeight", "Rollback", "Record"]
    assert actions[0] == SetWeight("tiny", 0, actions[0].reason)
    assert isinstance(actions[1], Rollback) and actions[1].signals["errors"] == "fail"
    assert f"failing interval {n}/{n}: errors" in actions[1].reason
    assert run.state.phase is Phase.ROLLED_BACK and run.state.weight == 0


def test_a_pass_breaks_the_failure_streak() -> None:
    run = Run(tracked())
    assert run.feed([FAIL, PASS, FAIL, PASS, FAIL]) == []
    assert run.state.phase is Phase.PROGRESSING and run.state.consecutive_failures == 1


# -- no data ------------------------------------------------------------------------------------
def test_quiet_night_causes_no_rollback_and_no_advance() -> None:
    run = Run(tracked(weight=5))
    before = run.state
    assert run.feed([QUIET] * 50 + [{}] * 50) == []
    assert run.state.phase is Phase.PROGRESSING and run.state.weight == 5
    assert (run.state.consecutive_failures, run.state.consecutive_passes) == (0, 0)
    assert run.state.since == before.since


def test_no_data_holds_both_streaks_where_they_are() -> None:
    run = Run(tracked())
    run.feed([PASS, QUIET, QUIET])
    assert run.state.consecutive_passes == 1
    run.feed([PASS])  # pass, quiet, quiet, pass = two passing intervals in a row
    assert run.weights() == [5]
    run.feed([FAIL] + [QUIET] * 10)
    assert run.state.consecutive_failures == 1 and run.state.phase is Phase.PROGRESSING
    run.feed([FAIL])
    assert run.state.phase is Phase.ROLLED_BACK


# -- rolled back stays out ----------------------------------------------------------------------
def test_flapping_metrics_never_bring_back_a_rolled_back_revision() -> None:
    run = Run(tracked())
    run.feed([PASS, PASS, FAIL, FAIL])
    assert run.state.phase is Phase.ROLLED_BACK
    assert run.feed([PASS, FAIL, PASS, PASS, PASS, QUIET] * 20) == []
    # The controller re-tracking what the config still names changes nothing.
    again, actions = track(run.state, "tiny", "tiny@1#aa", POLICY, run.clock.tick())
    assert again == run.state and actions == []
    assert run.state.phase is Phase.ROLLED_BACK and run.weights() == [5, 0]


def test_a_new_revision_re_enters() -> None:
    run = Run(tracked())
    run.feed([FAIL, FAIL])
    state, actions = track(run.state, "tiny", "tiny@2#bb", POLICY, 5.0)
    assert state.phase is Phase.PROGRESSING and state.revision == "tiny@2#bb"
    assert (state.weight, state.consecutive_failures) == (0, 0)
    assert kinds(actions) == ["Record"] and actions[0].detail["phase_before"] == "rolled_back"
    run.state = state
    run.feed([PASS, PASS])
    assert run.state.weight == 5


def test_a_revision_rolled_back_before_is_refused_on_return() -> None:
    # A rolled back, then B tracked, then the config goes back to A: the store remembers A.
    state, actions = track(
        tracked(revision="tiny@2#bb"), "tiny", "tiny@1#aa", POLICY, 9.0, weight=5, rolled_back={"tiny@1#aa"}
    )
    assert state.phase is Phase.ROLLED_BACK and state.weight == 0
    assert kinds(actions) == ["SetWeight", "Rollback", "Record"] and actions[0].weight == 0


def test_track_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="variant"):
        track(tracked(), "other", "x", POLICY, 0.0)
    with pytest.raises(ValueError, match="0..99"):
        track(None, "tiny", "x", POLICY, 0.0, weight=100)


def test_tracked_at_an_off_step_weight_moves_to_the_next_step() -> None:
    state = tracked(weight=10)
    assert state.step_index == 0
    run = Run(state)
    run.feed([PASS, PASS])
    assert run.weights() == [25]


def test_policy_edited_between_ticks_still_moves_to_a_step_above() -> None:
    run = Run(tracked(weight=5))
    run.policy = Policy(steps=[20, 60, 100])
    run.feed([PASS, PASS])
    assert run.weights() == [20] and run.state.step_index == 0


# -- metrics source errors ----------------------------------------------------------------------
def test_source_errors_freeze_after_k_and_never_promote() -> None:
    run = Run(tracked(weight=50))
    run.feed([PASS])
    assert run.feed([ERR, ERR]) == []
    assert run.state.consecutive_passes == 0  # a blind interval breaks a pass streak
    actions = run.feed([ERR])
    assert kinds(actions) == ["Freeze", "Record"] and isinstance(actions[0], Freeze)
    assert run.state.phase is Phase.FROZEN and run.state.weight == 50
    assert run.feed([ERR] * 10) == []  # frozen once, not every interval
    assert run.feed([PASS] * 100) == []  # recovered metrics do not unfreeze or promote
    assert run.state.phase is Phase.FROZEN and run.state.weight == 50


def test_errors_between_passes_never_advance() -> None:
    run = Run(tracked())
    assert run.feed([PASS, ERR, PASS, ERR, PASS, ERR]) == []
    assert run.state.weight == 0


def test_a_blind_interval_keeps_the_failure_streak() -> None:
    run = Run(tracked())
    run.feed([FAIL, ERR, FAIL])
    assert run.state.phase is Phase.ROLLED_BACK


def test_frozen_still_rolls_back_on_failures() -> None:
    run = Run(tracked(weight=25))
    run.feed([ERR] * 3 + [FAIL, FAIL])
    assert run.state.phase is Phase.ROLLED_BACK and run.weights() == [0]


def test_source_errors_can_roll_back_by_policy() -> None:
    policy = Policy(on_source_errors="rollback", source_errors_to_act=2)
    run = Run(tracked(policy, weight=25), policy)
    actions = run.feed([ERR, ERR])
    assert kinds(actions) == ["SetWeight", "Rollback", "Record"] and actions[0].weight == 0


def test_resume_after_freeze_progresses_from_fresh_streaks() -> None:
    run = Run(tracked(weight=5))
    run.feed([ERR] * 3)
    run.state, actions = resume(run.state, run.clock.tick())
    assert run.state.phase is Phase.PROGRESSING and run.state.consecutive_source_errors == 0
    run.feed([PASS, PASS])
    assert run.weights() == [25]


# -- paused -------------------------------------------------------------------------------------
def test_paused_does_not_advance_but_still_rolls_back() -> None:
    run = Run(tracked(weight=25))
    run.state, actions = pause(run.state, run.clock.tick())
    assert run.state.phase is Phase.PAUSED and kinds(actions) == ["Record"]
    assert run.feed([PASS] * 30) == []
    assert run.state.weight == 25
    actions = run.feed([FAIL, FAIL])
    assert kinds(actions) == ["SetWeight", "Rollback", "Record"] and run.state.phase is Phase.ROLLED_BACK


def test_resume_needs_fresh_passes() -> None:
    run = Run(tracked(weight=25))
    run.state, _ = pause(run.state, 1.0)
    run.feed([PASS] * 5)
    run.state, _ = resume(run.state, 2.0)
    assert run.feed([PASS]) == []
    run.feed([PASS])
    assert run.weights() == [50]


def test_paused_candidate_is_frozen_by_source_errors() -> None:
    run = Run(tracked(weight=25))
    run.state, _ = pause(run.state, 1.0)
    run.feed([ERR] * 3)
    assert run.state.phase is Phase.FROZEN
    assert pause(run.state, 2.0) == (run.state, [])  # frozen stays frozen


# -- operator actions ---------------------------------------------------------------------------
def test_operator_transitions_by_phase() -> None:
    state = tracked(weight=25)
    promoted, actions = promote(state, POLICY, 1.0)
    assert promoted.phase is Phase.PROMOTED and promoted.weight == 100
    assert actions[0] == Promote("tiny", "operator promote") and actions[1].detail["actor"] == "operator"
    assert promote(promoted, POLICY, 2.0) == (promoted, [])
    aborted, actions = abort(state, 1.0, reason="looks wrong", actor="operator:ana")
    assert kinds(actions) == ["SetWeight", "Rollback", "Record"] and aborted.phase is Phase.ROLLED_BACK
    assert actions[2].detail["actor"] == "operator:ana"
    assert abort(aborted, 2.0) == (aborted, [])
    assert resume(state, 1.0) == (state, [])
    for fn in (lambda s: pause(s, 1.0), lambda s: resume(s, 1.0), lambda s: abort(s, 1.0)):
        with pytest.raises(InvalidTransition):
            fn(promoted)
    with pytest.raises(InvalidTransition, match="cannot promote"):
        promote(aborted, POLICY, 1.0)


def test_operator_abort_racing_automatic_promote_rollback_wins() -> None:
    run = Run(tracked(weight=50))
    run.feed([PASS])
    base = run.state
    auto = step(base, PASS, POLICY, 10.0)
    assert auto[0].phase is Phase.PROMOTED
    state, actions = merge(auto, abort(base, 10.0))
    assert state.phase is Phase.ROLLED_BACK and state.weight == 0
    assert kinds(actions) == ["SetWeight", "Rollback", "Record"]
    assert not any(isinstance(a, Promote) for a in actions)


def test_operator_promote_racing_automatic_rollback_rollback_wins() -> None:
    run = Run(tracked(weight=50))
    run.feed([FAIL])
    base = run.state
    state, actions = merge(step(base, FAIL, POLICY, 10.0), promote(base, POLICY, 10.0))
    assert state.phase is Phase.ROLLED_BACK and actions[0] == SetWeight("tiny", 0, actions[0].reason)


def test_operator_pause_racing_automatic_advance_wins_and_keeps_failure_evidence() -> None:
    run = Run(tracked(weight=25))
    run.feed([PASS])
    base = run.state
    state, actions = merge(step(base, PASS, POLICY, 10.0), pause(base, 10.0))
    assert state.phase is Phase.PAUSED and state.weight == 25
    assert not any(isinstance(a, SetWeight) for a in actions)
    # A failing interval racing a pause still counts towards the rollback.
    state, _ = merge(step(base, FAIL, POLICY, 10.0), pause(base, 10.0))
    assert state.phase is Phase.PAUSED and state.consecutive_failures == 1
    state, actions = step(state, FAIL, POLICY, 11.0)
    assert state.phase is Phase.ROLLED_BACK


def test_operator_no_op_leaves_the_automatic_step() -> None:
    run = Run(tracked(weight=25))
    run.feed([PASS])
    auto = step(run.state, PASS, POLICY, 10.0)
    assert merge(auto, resume(run.state, 10.0)) == auto


def test_merge_refuses_transitions_of_different_revisions() -> None:
    a, b = tracked(revision="r1"), tracked(revision="r2")
    with pytest.raises(ValueError, match="cannot merge"):
        merge((a, []), (b, []))


# -- what the controller may touch --------------------------------------------------------------
def test_check_actions_keeps_the_controller_within_the_config() -> None:
    check_actions(
        [SetWeight("tiny", 25, ""), SetWeight("tiny", 0, ""), Promote("tiny", "")],
        stable="base",
        policy=POLICY,
    )
    with pytest.raises(ValueError, match="stable variant"):
        check_actions([SetWeight("base", 5, "")], stable="base", policy=POLICY)
    with pytest.raises(ValueError, match="stable variant"):
        check_actions([Rollback("base", "")], stable="base", policy=POLICY)
    with pytest.raises(ValueError, match="not a policy step"):
        check_actions([SetWeight("tiny", 30, "")], stable="base", policy=POLICY)
    for bad in (100, 101, -1):
        with pytest.raises(ValueError, match="0..99"):
            SetWeight("tiny", bad, "")


@pytest.mark.parametrize(
    "steps",
    [[], [5, 25, 50], [25, 5, 100], [5, 5, 100], [0, 50, 100], [50, 150]],
    ids=["empty", "no-100", "decreasing", "repeated", "zero", "over-100"],
)
def test_policy_steps_are_validated(steps: list[int]) -> None:
    with pytest.raises(ValidationError) as info:
        Policy(steps=steps)
    assert info.value.errors()[0]["loc"] == ("steps",)


def test_policy_schema_is_strict() -> None:
    with pytest.raises(ValidationError):
        Policy(failures_to_rollback=0)
    with pytest.raises(ValidationError):
        Policy.model_validate({"interval": 30})
    with pytest.raises(ValidationError):
        Policy.model_validate({"on_source_errors": "ignore"})
    assert Policy.model_validate({"steps": [10, 100]}).steps == (10, 100)


def test_revision_follows_the_variant_not_the_weights() -> None:
    def cfg(weight: int, ref: str = "tiny@1") -> GatewayConfig:
        return parse_config(
            {
                "variants": {"base": {"ref": "base@1"}, "tiny": {"ref": ref}},
                "routing": {"stable": "base", "weights": {"base": 100 - weight, "tiny": weight}},
            }
        )

    assert revision_of(cfg(5), "tiny") == revision_of(cfg(25), "tiny")
    assert revision_of(cfg(5), "tiny").startswith("tiny@1#")
    assert revision_of(cfg(5), "tiny") != revision_of(cfg(5, "tiny@2"), "tiny")


def test_required_rules_must_pass_for_an_interval_to_count() -> None:
    state = tracked(weight=5)
    no_latency = {"latency": N, "errors": P, "agreement": P}
    held, acts = step(state, no_latency, POLICY, 1.0, required=frozenset({"latency", "errors"}))
    assert acts == [] and held.consecutive_passes == 0 and "no data for latency" in held.last_reason
    # ...but it can still fail on what it does show.
    failed, _ = step(state, {"latency": N, "errors": F}, POLICY, 1.0, required=frozenset({"latency"}))
    assert failed.consecutive_failures == 1
    passed, _ = step(state, PASS, POLICY, 1.0, required=frozenset({"latency", "errors"}))
    assert passed.consecutive_passes == 1


def test_non_progressive_candidate_counts_passes_but_never_moves() -> None:
    state = tracked(weight=5)
    for t in range(5):
        state, acts = step(state, PASS, POLICY, float(t), advance=False)
        assert acts == [] and state.weight == 5
    assert state.consecutive_passes == 5 and "not progressive" in state.last_reason
