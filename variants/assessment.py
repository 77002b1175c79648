"""Evaluate registered variants against the teacher, apply the gates, record the results.

Measurements come from :mod:`variants.evaluation` (one isolated process per variant); this
module adds what needs two variants at once (agreement with the teacher, retention, a cascade's
speed against its second stage), runs the accuracy gate's looks (:mod:`variants.gate`: the test
subset, then the full split for what the subset left undecided), and writes metrics, gate
status, its evidence and deployability into each manifest. A variant whose evaluation inputs
(test split, evaluation settings, teacher version) are unchanged keeps its recorded metrics
unless asked to re-measure; its gate is decided again, so a changed bar needs no re-measuring.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from variants.cascade import target_met
from variants.dataset import Dataset, Split
from variants.evaluation import run_isolated
from variants.gate import retention_evidence, z_per_look
from variants.recipe import Recipe
from variants.registry import Gate, Manifest, Registry, sha256_json


def _eval_key(recipe: Recipe, test_hash: str, teacher_ref: str) -> str:
    return sha256_json(
        {"evaluation": recipe.evaluation.model_dump(mode="json"), "test": test_hash, "teacher": teacher_ref}
    )


def cascade_target_met(m: Manifest, metrics: dict) -> tuple[bool, str]:
    """Whether a cascade's test figures meet the target it was calibrated for, in words."""
    target = (m.calibration or {})["target"]
    c = metrics["cascade"]
    return target_met(
        target["kind"],
        float(target["value"]),
        accuracy=metrics["accuracy"],
        agreement=metrics["agreement"],
        escalation=c["escalation_rate"],
        then_accuracy=c["second_stage_accuracy"],
    )


def assess(
    registry: Registry,
    manifests: list[Manifest],
    dataset: Dataset,
    recipe: Recipe,
    *,
    remeasure: bool = False,
    on_variant: Callable[[str], None] | None = None,
) -> list[Manifest]:
    """Measure each variant (teacher first), gate it and save. Returns the updated manifests."""
    by_name = {m.name: m for m in manifests}
    if "teacher" not in by_name:
        raise ValueError("evaluation needs the teacher variant: agreement and retention are relative to it")
    cfg = recipe.evaluation
    test = dataset.test.subsample(cfg.test_examples, seed=0)
    texts, y = test.texts, test.label_ids
    teacher = by_name["teacher"]
    key = _eval_key(recipe, test.content_hash, teacher.ref)
    looks = _Looks(registry, recipe, dataset.test, test, remeasure, on_variant)
    # The teacher first (everything is relative to it), cascades last (their target is relative to
    # their second stage's test accuracy, their speed to its throughput).
    cascades = [n for n in by_name if by_name[n].backend == "cascade"]
    order = ["teacher"] + [n for n in by_name if n != "teacher" and n not in cascades] + cascades
    teacher_pred: np.ndarray | None = None
    out: list[Manifest] = []
    for name in order:
        m = by_name[name]
        cached = m.metrics if (m.metrics and m.metrics.get("eval_key") == key and not remeasure) else None
        if cached is None:
            if on_variant:
                on_variant(name)
            reference = None if teacher_pred is None else teacher_pred.tolist()
            metrics = run_isolated(registry.root, m.ref, texts, y, cfg, reference)
            metrics["eval_key"] = key
            metrics["test_hash"] = test.content_hash
        else:
            metrics = dict(cached)
        pred = np.asarray(metrics["predictions"])
        if name == "teacher":
            teacher_pred = pred
            teacher_acc = metrics["accuracy"]
        assert teacher_pred is not None
        metrics["agreement"] = float((pred == teacher_pred).mean())
        metrics["retention"] = metrics["accuracy"] / teacher_acc if teacher_acc else float("nan")
        m.metrics = metrics
        m.gate = looks.decide(m, teacher, pred == np.asarray(y), teacher_pred == np.asarray(y))
        if m.backend == "cascade":
            m.gate = _cascade_gate(m, metrics, recipe, by_name, registry)
        # A rejected variant can never stay deployable; a passing one becomes deployable.
        m.deployable = m.gate.status == "passed"
        registry.save(m)
        out.append(m)
    return out


class _Looks:
    """The accuracy gate's looks at the data: the evaluated test texts, then, for a variant they
    leave undecided, every text of the test split (answers only, no timing; kept in the metrics
    so that a rerun decides again without predicting again)."""

    def __init__(
        self,
        registry: Registry,
        recipe: Recipe,
        full: Split,
        evaluated: Split,
        remeasure: bool,
        on_variant: Callable[[str], None] | None,
    ) -> None:
        self.registry, self.recipe, self.full, self.evaluated = registry, recipe, full, evaluated
        self.remeasure, self.on_variant = remeasure, on_variant
        self.count = 2 if len(evaluated) < len(full) else 1
        self.z = z_per_look(recipe.gate.confidence, self.count)
        self.y_full = np.asarray(full.label_ids)

    def decide(self, m: Manifest, teacher: Manifest, right: np.ndarray, teacher_right: np.ndarray) -> Gate:
        bar, conf = self.recipe.gate.min_retention, self.recipe.gate.confidence
        ev = retention_evidence(right, teacher_right, bar, self.z)
        where = f"the {ev.n}-text test subset" if self.count == 2 else f"all {ev.n} texts of the test split"
        if ev.verdict == "inconclusive" and self.count == 2:
            first = where
            ev = retention_evidence(
                self.full_answers(m) == self.y_full, self.full_answers(teacher) == self.y_full, bar, self.z
            )
            where = f"all {ev.n} texts of the test split ({first} was inconclusive)"
        passed = ev.verdict == "above"
        said = {
            "above": f"above {bar:g}",
            "below": f"below {bar:g}",
            "inconclusive": f"not shown above {bar:g}",
        }[ev.verdict]
        interval = f"[{_bound(ev.low)}, {_bound(ev.high)}]"
        reason = (
            f"retention {ev.retention:.4f} {said} with {conf:.0%} confidence "
            f"(interval {interval}, paired with the teacher on {where})"
        )
        return Gate(
            status="passed" if passed else "rejected",
            min_retention=bar,
            retention=ev.retention,
            reason=reason,
            confidence=conf,
            retention_interval=[_finite(ev.low), _finite(ev.high)],
            test_texts=ev.n,
            evidence=where,
            resolution=round(ev.resolution, 6),
        )

    def full_answers(self, m: Manifest) -> np.ndarray:
        """``m``'s answers on every test text: recorded ones for this split, else predicted now."""
        metrics = m.metrics or {}
        kept = metrics.get("full_test") or {}
        if kept.get("test_hash") == self.full.content_hash and not self.remeasure:
            return np.asarray(kept["predictions"])
        if self.on_variant:
            self.on_variant(f"{m.name} (the gate's second look: all {len(self.full)} test texts)")
        got = run_isolated(
            self.registry.root,
            m.ref,
            list(self.full.texts),
            list(self.full.label_ids),
            self.recipe.evaluation,
            quality_only=True,
        )
        metrics["full_test"] = {"test_hash": self.full.content_hash, "predictions": got["predictions"]}
        m.metrics = metrics
        if m.name == "teacher":
            self.registry.save(m)  # the teacher was saved before this look asked for its answers
        return np.asarray(got["predictions"])


def _bound(x: float) -> str:
    return f"{x:.4f}" if np.isfinite(x) else "unbounded"


def _finite(x: float) -> float | None:
    return round(float(x), 6) if np.isfinite(x) else None


def _cascade_gate(
    m: Manifest, metrics: dict, recipe: Recipe, by_name: dict[str, Manifest], registry: Registry
) -> Gate:
    """A cascade must also meet its target on test and be cheaper than its second stage alone."""
    gate = m.gate
    problems = []
    met, said = cascade_target_met(m, metrics)
    metrics["cascade"]["target_met"] = met
    metrics["cascade"]["target"] = said
    if not met:
        problems.append(f"cascade target missed on test: {said}")
    then_ref = m.parents[1]
    then_m = by_name.get(then_ref.partition("@")[0])
    if then_m is None or then_m.ref != then_ref:
        then_m = registry.lookup(then_ref)
    then_speed = ((then_m.metrics or {}) if then_m else {}).get("throughput_per_s")
    speed = metrics.get("throughput_per_s")
    need = recipe.cascade.min_speedup
    if then_speed and speed:
        ratio = speed / then_speed
        metrics["cascade"]["speedup_over_second_stage"] = ratio
        verdict = ">=" if ratio >= need else "<"
        text = (
            f"throughput {speed:.0f} texts/s = {ratio:.2f}x its second stage {then_ref} ({then_speed:.0f}), "
            f"{verdict} {need:g}x"
        )
        metrics["cascade"]["cost"] = text
        if need and ratio < need:
            problems.append(f"not cheaper than its second stage: {text}")
    elif need:
        problems.append(f"no throughput measured for it or its second stage {then_ref} to weigh its cost")
    if not problems:
        cost = metrics["cascade"].get("cost")
        return gate.model_copy(update={"reason": "; ".join(filter(None, [gate.reason, said, cost]))})
    reasons = problems + ([gate.reason] if gate.reason else [])
    return gate.model_copy(update={"status": "rejected", "reason": "; ".join(reasons)})
