"""The speed gate: a candidate that claims to be cheaper must measure faster where it runs.

A compressed variant is not faster everywhere (int8 without VNNI can be slower than fp32), so the
compression's premise is checked on the serving hardware. Each variant replica times itself at
warm-up (:mod:`serving.warmup`) and exports its batch-1 p50 and its throughput at its batch size;
the metrics source reads them per variant as a :class:`Speed` (the slowest replica's figures:
the worst any caller gets). This module owns :class:`Speed`, :class:`Hold` and :func:`judge`.

The rules, with ``t`` the configured ``rollout.speed_gate.tolerance``:

* The gate applies only to a candidate that *claims* to be cheaper: one whose registry lineage
  descends from the stable variant or from another configured variant (its parent). Others are
  never held by it. A claiming candidate is compared with every configured ancestor (each a
  *reference*; stable is one when the candidate descends from it): a candidate dearer and more
  accurate than an unrelated stable claims nothing of it.
* It gates **promotion only**: the candidate steps through the canary weights as usual (its live
  latency is judged there by the rules anyway), and only the move to stable is held. A held
  candidate keeps its weight and is still judged every interval, so failures still roll it back;
  it is never rolled back for being slow, since a slow-but-correct variant is no emergency.
* Held, with the figures named, when its p50 is above ``(1 + t)`` times a reference's, or its
  throughput below a reference's divided by ``(1 + t)``.
* Held as "not measured on this hardware yet" when the candidate has no figures (its replicas
  have not reported, or it runs inside the router, which does not time itself), and when no
  reference has figures to compare with: a claim that cannot be checked is not taken on trust.
  A reference without figures is left out of the comparison when another one has them.
* An operator ``promote`` overrides the gate; its audit entry carries the figures it overrode.

:attr:`Hold.key` names what holds the candidate (which references it is slower than, or that it is
unmeasured); the controller writes a ``hold`` audit entry when the key changes, not every interval.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Speed:
    """One variant's warm-up figures on its hardware: worst replica's p50 and throughput."""

    p50_s: float
    texts_per_s: float
    replicas: int = 1
    hardware: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "p50_s": self.p50_s,
            "texts_per_s": self.texts_per_s,
            "replicas": self.replicas,
            "hardware": list(self.hardware),
        }


@dataclass(frozen=True)
class Hold:
    """Why promotion waits: ``key`` (stable across intervals), ``reason`` (words) and the figures."""

    key: str
    reason: str
    figures: Mapping[str, Any] = field(default_factory=dict)


def _figures(
    candidate: str, cand: Speed | None, refs: Mapping[str, Speed | None], tolerance: float, verdict: str
) -> dict[str, Any]:
    return {
        "verdict": verdict,
        "tolerance": tolerance,
        "candidate": {candidate: None if cand is None else cand.as_dict()},
        "references": {k: None if v is None else v.as_dict() for k, v in sorted(refs.items())},
    }


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.3g} ms"


def judge(
    candidate: str, cand: Speed | None, references: Mapping[str, Speed | None], tolerance: float
) -> tuple[Hold | None, dict[str, Any]]:
    """(the hold, or None when the candidate may be promoted; the figures for the audit).

    ``references``: the variants the candidate claims to improve on (stable and configured
    ancestors) with their figures, None where they have none. Empty: the candidate claims nothing,
    so it is not held.
    """
    if not 0 <= tolerance <= 10:
        raise ValueError(f"tolerance must be within [0, 10], got {tolerance}")
    if not references:
        return None, {}
    factor = 1 + tolerance
    if cand is None:
        figures = _figures(candidate, cand, references, tolerance, "hold")
        return Hold("unmeasured", f"{candidate} is not measured on this hardware yet", figures), figures
    measured = {k: v for k, v in references.items() if v is not None}
    if not measured:
        figures = _figures(candidate, cand, references, tolerance, "hold")
        names = ", ".join(sorted(references))
        reason = f"no variant {candidate} claims to improve on ({names}) is measured on this hardware yet"
        return Hold("unmeasured-reference", reason, figures), figures
    slower: list[str] = []
    words: list[str] = []
    for key, ref in sorted(measured.items()):
        why = []
        if cand.p50_s > factor * ref.p50_s:
            ratio = cand.p50_s / ref.p50_s if ref.p50_s > 0 else float("inf")
            why.append(f"p50 {_ms(cand.p50_s)} vs {_ms(ref.p50_s)} ({ratio:.2f}x)")
        if cand.texts_per_s * factor < ref.texts_per_s:
            why.append(f"throughput {cand.texts_per_s:.4g}/s vs {ref.texts_per_s:.4g}/s")
        if why:
            slower.append(key)
            words.append(f"{key}: {', '.join(why)}")
    if not slower:
        return None, _figures(candidate, cand, references, tolerance, "pass")
    figures = _figures(candidate, cand, references, tolerance, "hold")
    hw = "; ".join(cand.hardware) or "unnamed hardware"
    reason = (
        f"{candidate} claims to be cheaper but measures slower on {hw} "
        f"(beyond tolerance {tolerance:g}): {'; '.join(words)}"
    )
    return Hold("slower:" + ",".join(slower), reason, figures), figures
