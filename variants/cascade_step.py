"""The cascade build step: calibrate a threshold for a pair of built stages on the validation split.

For each pair of the recipe's ``cascade`` section whose two stages were built, this step runs
both stages over the validation split (the teacher too when the target is agreement with it),
draws the threshold curve for each confidence measure, picks the measure and threshold that meet
the target with the fewest escalations, and registers the cascade: a ``cascade.json`` naming both
stages with the checksums of their files, and a manifest whose ``calibration`` records the
validation hash, the measure, the threshold, the expected escalation rate and accuracy, how well
each measure separates the first stage's right answers from its wrong ones, and the curve. The
test-split figures and the deployability gate come later, from the evaluation harness
(:mod:`variants.assessment`), the same as for every variant.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from variants.builders import BuildContext
from variants.cascade import MEASURES, better, curve, select, separation
from variants.predictor import CASCADE_FILE, Predictor, load_variant
from variants.recipe import CascadePair, section_dict
from variants.registry import Manifest, sha256_json


def cascade_inputs(pair: CascadePair, ctx: BuildContext) -> dict[str, Any]:
    """What the step reads: the pair, the stages' files, the validation split (hashed into its key)."""
    stages = {s: {k: f.sha256 for k, f in ctx.built[s].files.items()} for s in _stages(pair)}
    return {
        "step": pair.entry,
        "recipe": {
            "pair": section_dict(pair),
            "validation_examples": ctx.recipe.cascade.validation_examples,
            "confidence": ctx.recipe.cascade.confidence,
        },
        "parents": stages,
        "validation": ctx.dataset.hashes()["validation"],
    }


def cascade_key(pair: CascadePair, ctx: BuildContext) -> str:
    return sha256_json(cascade_inputs(pair, ctx))


def _stages(pair: CascadePair) -> tuple[str, ...]:
    return (
        (pair.first, pair.then) if pair.target.kind != "min_agreement" else (pair.first, pair.then, "teacher")
    )


def parents_of(pair: CascadePair) -> tuple[str, ...]:
    """The variants a cascade needs built: its stages, and the teacher for an agreement target."""
    return tuple(dict.fromkeys(_stages(pair)))


def _probs(p: Predictor, texts: list[str], batch: int = 64) -> np.ndarray:
    return np.concatenate([p.predict_proba(texts[i : i + batch]) for i in range(0, len(texts), batch)])


def _answers(ctx: BuildContext, name: str, texts: list[str], asked: str) -> np.ndarray:
    """``name``'s probabilities on ``texts``, predicted once per build (see ``BuildContext.answers``)."""
    key = (ctx.built[name].ref, asked)
    if key not in ctx.answers:
        threads = ctx.recipe.evaluation.threads
        p = load_variant(name, ctx.built[name].version, registry=ctx.registry, threads=threads)
        assert isinstance(p, Predictor)
        ctx.answers[key] = _probs(p, texts)
    return np.asarray(ctx.answers[key])


def build_cascade(pair: CascadePair, ctx: BuildContext, out: Path) -> dict[str, Any]:
    """Choose the threshold on validation, write ``cascade.json``; the manifest fields it knows."""
    first_m, then_m = ctx.built[pair.first], ctx.built[pair.then]
    if first_m.labels != then_m.labels:
        raise ValueError(f"{pair.entry}: {first_m.ref} and {then_m.ref} have different label tables")
    cfg = ctx.recipe.cascade
    val = ctx.dataset.validation.subsample(cfg.validation_examples, seed=0)
    texts, y = list(val.texts), np.asarray(val.label_ids)
    asked = f"validation {val.content_hash}"
    first_probs = _answers(ctx, pair.first, texts, asked)
    then_pred = _answers(ctx, pair.then, texts, asked).argmax(axis=1)
    has_teacher = "teacher" in parents_of(pair)
    reference = _answers(ctx, "teacher", texts, asked).argmax(axis=1) if has_teacher else then_pred
    then_accuracy = float((then_pred == y).mean())
    kind, value = pair.target.kind, pair.target.value
    measures = MEASURES if pair.measure == "auto" else (pair.measure,)
    per_measure: dict[str, Any] = {}
    choice = None
    for measure in measures:
        c = curve(first_probs, then_pred, y, measure, reference)
        pick = select(c, kind, value, then_accuracy, cfg.confidence)  # type: ignore[arg-type]
        per_measure[measure] = {
            "separation_auroc": round(separation(first_probs, y, measure), 6),
            "threshold": pick.threshold,
            "escalation": round(pick.escalation, 6),
            "accuracy": round(pick.accuracy, 6),
            "met": pick.met,
            "curve": c.sampled(),
        }
        choice = pick if choice is None else better(choice, pick, kind)  # type: ignore[arg-type]
    assert choice is not None
    out.mkdir(parents=True, exist_ok=True)
    spec = {
        "first": _stage(first_m),
        "then": _stage(then_m),
        "measure": choice.measure,
        "threshold": choice.threshold,
    }
    (out / CASCADE_FILE).write_text(json.dumps(spec, indent=2, sort_keys=True), encoding="utf-8")
    return {
        "backend": "cascade",
        "format": "cascade",
        "precision": f"{first_m.precision}+{then_m.precision}",
        "device": "cuda" if "cuda" in (first_m.device, then_m.device) else "cpu",
        "calibration": {
            "split": "validation",
            "hash": val.content_hash,
            "examples": len(val),
            "target": {"kind": kind, "value": value},
            "confidence": cfg.confidence,
            "measure": choice.measure,
            "threshold": choice.threshold,
            "met_on_validation": choice.met,
            "expected_escalation": round(choice.escalation, 6),
            "expected_accuracy": round(choice.accuracy, 6),
            "expected_agreement": round(choice.agreement, 6),
            "second_stage_accuracy": round(then_accuracy, 6),
            "first_stage_accuracy": round(float((first_probs.argmax(axis=1) == y).mean()), 6),
            "measures": per_measure,
        },
    }


def _stage(m: Manifest) -> dict[str, Any]:
    return {"ref": m.ref, "files": {k: f.sha256 for k, f in m.files.items()}}
