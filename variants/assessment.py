"""Evaluate registered variants against the teacher, apply the accuracy gate, record the results.

Measurements come from :mod:`variants.evaluation` (one isolated process per variant); this
module adds what needs two variants at once (agreement with the teacher, retention),
decides the gate, and writes metrics, gate status and deployability into each manifest.
A variant whose evaluation inputs (test split, evaluation settings, teacher version) are
unchanged keeps its recorded metrics unless asked to re-measure.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from variants.cascade import target_met
from variants.dataset import Dataset
from variants.evaluation import run_isolated
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
    # The teacher first (everything is relative to it), cascades last (their target is relative to
    # their second stage's test accuracy).
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
        passed = metrics["retention"] >= recipe.gate.min_retention
        reason = (
            None
            if passed
            else (
                f"retention {metrics['retention']:.4f} < {recipe.gate.min_retention} "
                f"(accuracy {metrics['accuracy']:.4f} vs teacher {teacher_acc:.4f})"
            )
        )
        if m.backend == "cascade":
            met, said = cascade_target_met(m, metrics)
            metrics["cascade"]["target_met"] = met
            metrics["cascade"]["target"] = said
            if not met:
                passed, reason = (
                    False,
                    f"cascade target missed on test: {said}" + (f"; {reason}" if reason else ""),
                )
        m.gate = Gate(
            status="passed" if passed else "rejected",
            min_retention=recipe.gate.min_retention,
            retention=metrics["retention"],
            reason=reason,
        )
        # A rejected variant can never stay deployable; a passing one becomes deployable.
        m.deployable = passed
        registry.save(m)
        out.append(m)
    return out
