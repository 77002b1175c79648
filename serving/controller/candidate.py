"""What the controller's decisions are about and what they produce, with no decision in it.

This module owns one candidate variant's state (:class:`CandidateState`, :class:`Phase`, and
:func:`revision_of`, which says what the candidate *is*), the :class:`Policy` that paces it, the
actions a decision returns (:class:`SetWeight`, :class:`Rollback`, :class:`Promote`,
:class:`Freeze`, :class:`Record`) and :func:`check_actions`, the guard every caller runs before
applying them. The decisions themselves are :mod:`serving.controller.decide`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from serving.config import GatewayConfig, RolloutPolicy
from serving.errors_and_auth import Refusal
from variants.registry import sha256_json


class Phase(StrEnum):
    PROGRESSING = "progressing"  # judged every interval, advanced on passes
    PAUSED = "paused"  # held by an operator: never advanced, still rolled back on failures
    FROZEN = "frozen"  # held because the metrics source kept failing; an operator resumes it
    PROMOTED = "promoted"  # the candidate became the stable variant; done
    ROLLED_BACK = "rolled_back"  # weight 0; done until a different revision is tracked


class InvalidTransition(Refusal, ValueError):
    """An operator action that the candidate's phase does not allow."""

    status_code = 409
    error_code = "invalid_transition"


# The policy is part of the gateway config (its ``rollout`` section): one schema, one file.
Policy = RolloutPolicy


@dataclass(frozen=True)
class CandidateState:
    """Where one candidate stands. ``since``: clock time its phase or weight last changed."""

    variant: str
    # What the candidate *is* (see revision_of); a rolled-back revision never re-enters.
    revision: str
    phase: Phase
    # Index of the largest policy step <= weight; -1 below the first step.
    step_index: int
    weight: int
    consecutive_failures: int = 0
    consecutive_passes: int = 0
    consecutive_source_errors: int = 0
    last_reason: str = ""
    since: float = 0.0
    # Clock time this revision was first tracked: older metrics in a window belong to another one.
    tracked_at: float = 0.0
    # What holds it before promotion (serving.controller.speed.Hold.key); "" when nothing does.
    held: str = ""


# -- actions, applied by the caller in the order returned ---------------------------------------
@dataclass(frozen=True)
class SetWeight:
    variant: str
    weight: int
    reason: str

    def __post_init__(self) -> None:
        # 100 is never set directly (stable must keep traffic); that is Promote.
        if isinstance(self.weight, bool) or not 0 <= self.weight < 100:
            raise ValueError(f"SetWeight({self.variant}): weight must be within 0..99, got {self.weight}")


@dataclass(frozen=True)
class Rollback:
    """Tear the candidate down (after its weight went to 0): drop it from shadowing, mark it out."""

    variant: str
    reason: str
    signals: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Promote:
    """Make the candidate the stable variant, with all traffic."""

    variant: str
    reason: str


@dataclass(frozen=True)
class Freeze:
    variant: str
    reason: str


@dataclass(frozen=True)
class Record:
    """An audit entry to write; ``detail`` has actor, variant, revision, phases, weights, reason."""

    event: str
    detail: Mapping[str, Any]


Action = SetWeight | Rollback | Promote | Freeze | Record
Transition = tuple[CandidateState, list[Action]]


# -- guards -------------------------------------------------------------------------------------
def check_actions(actions: Iterable[Action], *, stable: str, policy: Policy) -> None:
    """Raise ValueError for an action the controller may not take under the current config.

    It never acts on the stable variant, and it sets a weight only to 0 or one of the policy's
    steps (100 only through Promote). Callers run this before applying anything.
    """
    allowed = {0, *policy.steps[:-1]}
    for act in actions:
        variant = getattr(act, "variant", None)
        if variant is not None and variant == stable:
            raise ValueError(f"{type(act).__name__} targets the stable variant {stable!r}")
        if isinstance(act, SetWeight) and act.weight not in allowed:
            raise ValueError(f"SetWeight({act.variant}, {act.weight}) is not a policy step {sorted(allowed)}")


def revision_of(cfg: GatewayConfig, key: str) -> str:
    """The revision of variant ``key`` in ``cfg``: its artifact ref plus a hash of its whole spec.

    Not the config revision: that changes with every weight the controller sets, which would make
    a rolled-back candidate look new after its own rollback. Resolve a versionless ref first if
    a new registered version should count as a new revision.
    """
    spec = cfg.variants[key]
    return f"{spec.ref}#{sha256_json(spec.model_dump(mode='json'))[:8]}"
