"""The confidence cascade offline: measures, the threshold curve, the choice on validation, the
registry entry with its lineage, per-text escalation, and the recipe's refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest

from variants.cascade import confidence, curve, select, separation, target_met
from variants.recipe import RecipeError, parse_recipe


def _probs(rows: list[list[float]]) -> np.ndarray:
    return np.asarray(rows, dtype=np.float32)


def test_the_two_confidence_measures():
    p = _probs([[0.7, 0.2, 0.1], [0.4, 0.35, 0.25]])
    assert confidence(p, "max_probability") == pytest.approx([0.7, 0.4])
    assert confidence(p, "margin") == pytest.approx([0.5, 0.05])
    with pytest.raises(ValueError, match="unknown confidence measure"):
        confidence(p, "entropy")  # type: ignore[arg-type]


def test_the_curve_swaps_the_least_confident_answers_first():
    # Four texts, label 0 each. The first stage is right on the two confident ones; the second
    # stage is right on texts 1 and 3 only.
    first = _probs([[0.9, 0.1], [0.3, 0.7], [0.8, 0.2], [0.45, 0.55]])
    then = np.array([1, 0, 1, 0])
    y = np.zeros(4, dtype=int)
    c = curve(first, then, y, "max_probability")
    # Least confident first: text 3 (0.55), text 1 (0.7), text 2 (0.8), text 0 (0.9).
    assert list(c.accuracy) == pytest.approx([0.5, 0.75, 1.0, 0.75, 0.5])
    # Each threshold escalates exactly k texts.
    conf = confidence(first, "max_probability")
    for k, t in enumerate(c.thresholds):
        assert int((conf < t).sum()) == k
    assert c.sampled(5)["escalation"] == [0.0, 0.25, 0.5, 0.75, 1.0]


def test_threshold_selection_meets_each_kind_of_target_with_the_least_escalation():
    first = _probs([[0.9, 0.1], [0.3, 0.7], [0.8, 0.2], [0.45, 0.55]])
    then, y = np.array([1, 0, 1, 0]), np.zeros(4, dtype=int)
    c = curve(first, then, y, "max_probability")
    pick = select(c, "accuracy_margin", 0.0, then_accuracy=0.75)
    assert (pick.escalation, pick.accuracy, pick.met) == (0.25, 0.75, True)
    pick = select(c, "max_escalation", 0.6, then_accuracy=0.5)
    assert (pick.escalation, pick.accuracy) == (0.5, 1.0)
    pick = select(c, "min_agreement", 1.0, then_accuracy=0.5)  # agreement with then itself
    assert pick.escalation == 1.0 and pick.met
    missed = select(c, "accuracy_margin", 0.0, then_accuracy=1.01)
    assert not missed.met and missed.accuracy == 1.0  # the best the curve offers, flagged


def test_with_a_confidence_the_target_must_hold_beyond_the_samples_noise():
    from statistics import NormalDist

    rng = np.random.default_rng(3)
    n = 4000
    y = rng.integers(0, 4, size=n)
    conf = rng.random(n)
    # The first stage is right more often where it is confident; the second stage at 85% everywhere.
    first_right = rng.random(n) < 0.55 + 0.45 * conf
    first_pred = np.where(first_right, y, (y + 1) % 4)
    first = np.full((n, 4), 0.0)
    first[np.arange(n), first_pred] = 0.25 + 0.75 * conf
    first[np.arange(n), (first_pred + 2) % 4] = 0.2 * (1 - conf)
    then = np.where(rng.random(n) < 0.85, y, (y + 3) % 4)
    c = curve(first, then, y, "max_probability")
    assert c.discordant[0] == int(((first_pred == y) != (then == y)).sum()) and c.discordant[-1] == 0
    then_acc = float((then == y).mean())
    plain = select(c, "accuracy_margin", 0.001, then_acc)
    sure = select(c, "accuracy_margin", 0.001, then_acc, confidence=0.9)
    assert plain.met and sure.met and sure.escalation > plain.escalation
    k, z, bar = round(sure.escalation * n), NormalDist().inv_cdf(0.9), then_acc - 0.001
    assert c.accuracy[k] - z * np.sqrt(c.discordant[k]) / n >= bar - 1e-12
    assert all(c.accuracy[j] - z * np.sqrt(c.discordant[j]) / n < bar for j in range(k))  # the least such
    assert select(c, "max_escalation", 0.3, then_acc, confidence=0.9) == select(
        c, "max_escalation", 0.3, then_acc
    )
    agree = select(c, "min_agreement", 0.9, then_acc, confidence=0.9)
    assert agree.agreement - z * np.sqrt(agree.agreement * (1 - agree.agreement) / n) >= 0.9 - 1e-12


def test_threshold_selection_is_reproducible():
    rng = np.random.default_rng(7)
    first = rng.dirichlet(np.ones(5), size=500).astype(np.float32)
    y = rng.integers(0, 5, size=500)
    then = np.where(rng.random(500) < 0.8, y, (y + 1) % 5)
    picks = {select(curve(first, then, y, "margin"), "accuracy_margin", 0.01, 0.8) for _ in range(3)}
    assert len(picks) == 1


def test_separation_is_the_auroc_of_right_against_wrong():
    right = _probs([[0.9, 0.1], [0.8, 0.2]])
    wrong = _probs([[0.4, 0.6], [0.45, 0.55]])
    y = np.array([0, 0, 0, 0])
    assert separation(np.concatenate([right, wrong]), y, "max_probability") == pytest.approx(1.0)
    # Right answers at 0.9 and 0.55, wrong ones at 0.6 and 0.55: of the four pairs, two are
    # ordered, one reversed and one tied (half): 2.5 / 4.
    mixed = _probs([[0.9, 0.1], [0.55, 0.45], [0.4, 0.6], [0.45, 0.55]])
    assert separation(mixed, y, "max_probability") == pytest.approx(0.625)


def test_target_met_names_the_figures():
    ok, said = target_met(
        "accuracy_margin", 0.001, accuracy=0.867, agreement=0.9, escalation=0.2, then_accuracy=0.868
    )
    assert ok and "0.8670 >= second stage 0.8680" in said
    ok, said = target_met(
        "max_escalation", 0.25, accuracy=0.8, agreement=0.9, escalation=0.3, then_accuracy=0.8
    )
    assert not ok and "0.3000 > 0.25" in said


@pytest.mark.parametrize(
    ("pair", "field"),
    [
        ({"first": "student-int8", "then": "student-int8"}, "into itself"),
        ({"first": "student-int8", "then": "nonesuch"}, "then: unknown variant"),
        ({"first": "student-int8", "then": "teacher", "target": {}}, "exactly one"),
        (
            {
                "first": "student-int8",
                "then": "teacher",
                "target": {"accuracy_margin": 0.1, "max_escalation": 0.2},
            },
            "exactly one",
        ),
        ({"first": "student-int8", "then": "teacher", "target": {"max_escalation": 1.5}}, "max_escalation"),
        ({"first": "student-int8", "then": "teacher", "measure": "entropy"}, "measure"),
    ],
)
def test_bad_cascade_recipes_are_refused_with_the_field_named(pair, field):
    with pytest.raises(RecipeError, match=field):
        parse_recipe({"cascade": {"pairs": [pair]}})


@pytest.mark.parametrize("confidence", [1.0, -0.1, "high"])
def test_a_bad_calibration_confidence_is_refused_with_the_field_named(confidence):
    with pytest.raises(RecipeError, match="confidence"):
        parse_recipe({"cascade": {"confidence": confidence, "pairs": []}})


# -- the registry entry, on the small real registry ---------------------------------------------
@pytest.fixture(scope="module")
def cascade_build(cascade_registry, tmp_path_factory):
    """The session's cascade registry, copied (these tests add versions), and its recipe."""
    import shutil

    from conftest import CASCADE_RECIPE

    from variants import Registry
    from variants.dataset import load_dataset
    from variants.pipeline import build

    root = tmp_path_factory.mktemp("cascade-build")
    shutil.copytree(cascade_registry, root, dirs_exist_ok=True)
    recipe = parse_recipe(CASCADE_RECIPE)
    reg, ds = Registry(root), load_dataset()
    ctx, outcomes = build(recipe, reg, dataset=ds, progress=False)
    return reg, recipe, ds, ctx, {o.name: o for o in outcomes}


def test_a_cascade_is_a_registry_entry_with_its_lineage(cascade_build):
    reg, _recipe, ds, ctx, outcomes = cascade_build
    name = "cascade-student-int8-to-teacher"
    assert outcomes[name].status == "reused"  # built by the session fixture, from the same inputs
    m = reg.verify(name)
    first, then = ctx.built["student-int8"], ctx.built["teacher"]
    assert m.backend == "cascade" and m.parents == [first.ref, then.ref]
    spec = json.loads((reg.path(m.name, m.version) / "cascade.json").read_text())
    assert spec["first"] == {"ref": first.ref, "files": {k: f.sha256 for k, f in first.files.items()}}
    assert spec["then"]["ref"] == then.ref
    cal = m.calibration
    assert cal is not None
    assert cal["split"] == "validation" and cal["hash"] == ds.validation.subsample(96, seed=0).content_hash
    assert cal["examples"] == 96 and cal["measure"] in ("max_probability", "margin")
    assert cal["threshold"] == spec["threshold"] and 0 <= cal["threshold"] <= 1.0 + 1e-6
    assert 0 <= cal["expected_escalation"] <= 0.3 and cal["met_on_validation"]
    assert set(cal["measures"]) == {"max_probability", "margin"}
    for fig in cal["measures"].values():
        assert 0 <= fig["separation_auroc"] <= 1 and len(fig["curve"]["accuracy"]) == 97


def test_a_forced_rebuild_of_a_cascade_chooses_the_same_threshold(cascade_build):
    from variants.pipeline import build

    reg, recipe, ds, _ctx, _ = cascade_build
    name = "cascade-student-int8-to-teacher"
    _, forced = build(recipe, reg, dataset=ds, progress=False, force=frozenset({name}))
    assert {o.name: o.status for o in forced}[name] == "built"
    versions = reg.versions(name)
    a, b = (reg.get(name, v).calibration for v in versions[-2:])
    assert a is not None and b is not None and a["threshold"] == b["threshold"]


def test_only_texts_below_the_threshold_reach_the_second_stage(cascade_build):
    from variants.predictor import CascadePredictor, load_variant

    reg, _recipe, ds, _ctx, _ = cascade_build
    cascade = load_variant("cascade-student-int8-to-teacher", registry=reg)
    assert isinstance(cascade, CascadePredictor)
    seen: list[str] = []
    real = cascade.then.predict_proba

    def recording(texts):
        seen.extend(texts)
        return real(texts)

    cascade.then.predict_proba = recording  # type: ignore[method-assign]
    texts = list(ds.test.texts[:80])
    probs, escalated = cascade.predict_staged(texts)
    first = cascade.first.predict_proba(texts)
    conf = confidence(first, cascade.measure)
    assert seen == [t for t, c in zip(texts, conf, strict=True) if c < cascade.threshold]
    assert list(escalated) == [c < cascade.threshold for c in conf]
    # Escalated texts carry the second stage's answer, the others the first stage's.
    teacher = real(texts)
    np.testing.assert_allclose(probs[escalated], teacher[escalated], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(probs[~escalated], first[~escalated], rtol=1e-5, atol=1e-6)


def test_a_cascade_whose_stage_changed_is_refused(cascade_build, tmp_path):
    import shutil

    from variants import Registry
    from variants.predictor import load_variant
    from variants.registry import ChecksumMismatch

    reg, *_ = cascade_build
    copy = tmp_path / "reg"
    shutil.copytree(reg.root, copy)
    m = Registry(copy).get("cascade-student-int8-to-teacher")
    path = Registry(copy).path(m.name, m.version) / "cascade.json"
    spec = json.loads(path.read_text())
    spec["threshold"] = 0.99  # an edited cascade file no longer matches its manifest
    path.write_text(json.dumps(spec))
    with pytest.raises(ChecksumMismatch, match="cascade.json"):
        load_variant(m.name, registry=copy)


def test_two_pairs_built_into_one_entry_are_refused_and_a_name_tells_them_apart():
    pair = {"first": "student-int8", "then": "teacher"}
    with pytest.raises(RecipeError, match="same entry: cascade-student-int8-to-teacher"):
        parse_recipe({"cascade": {"pairs": [pair, {**pair, "target": {"max_escalation": 0.3}}]}})
    named = {**pair, "name": "cascade-capped", "target": {"max_escalation": 0.3}}
    recipe = parse_recipe({"cascade": {"pairs": [pair, named]}})
    assert [p.entry for p in recipe.cascade.pairs] == ["cascade-student-int8-to-teacher", "cascade-capped"]


def test_a_cascade_no_cheaper_than_its_second_stage_is_rejected_with_both_figures(cascade_build):
    from variants.assessment import assess

    reg, recipe, ds, ctx, _ = cascade_build
    name = "cascade-student-int8-to-teacher"
    picked = [ctx.built[n] for n in ("teacher", "student-int8", name)]

    def with_speedup(x: float):
        return recipe.model_copy(update={"cascade": recipe.cascade.model_copy(update={"min_speedup": x})})

    out = {m.name: m for m in assess(reg, picked, ds, with_speedup(1000.0))}
    cascade, teacher = out[name], out["teacher"]
    c = cascade.metrics["cascade"]
    ratio = cascade.metrics["throughput_per_s"] / teacher.metrics["throughput_per_s"]
    assert c["speedup_over_second_stage"] == pytest.approx(ratio)
    assert cascade.gate.status == "rejected" and not cascade.deployable
    assert (
        f"not cheaper than its second stage: throughput {cascade.metrics['throughput_per_s']:.0f} texts/s"
        in (cascade.gate.reason)
    )
    assert (
        f"{ratio:.2f}x its second stage {teacher.ref} ({teacher.metrics['throughput_per_s']:.0f}), < 1000x"
        in (cascade.gate.reason)
    )
    # The same figures (nothing measured again) under a bar they clear: deployable, the cost said.
    fine = {m.name: m for m in assess(reg, picked, ds, with_speedup(ratio / 2))}[name]
    assert fine.gate.status == "passed" and fine.deployable and "not cheaper" not in fine.gate.reason
    assert f"{ratio:.2f}x its second stage" in fine.gate.reason
    assert fine.metrics["throughput_per_s"] == cascade.metrics["throughput_per_s"]


def test_cascades_over_the_same_stages_predict_each_stage_once_per_build(
    cascade_registry, tmp_path, monkeypatch
):
    """The quick recipe's two cascades share their stages: the second calibrates on the answers
    the first one's build already has (the same validation texts), with the same thresholds."""
    import shutil

    from conftest import CASCADE_RECIPE

    from variants import Registry, cascade_step
    from variants.dataset import load_dataset
    from variants.pipeline import build

    shutil.copytree(cascade_registry, tmp_path, dirs_exist_ok=True)
    pair = CASCADE_RECIPE["cascade"]["pairs"][0]
    capped = {**pair, "name": "cascade-capped", "target": {"max_escalation": 0.2}}
    recipe = parse_recipe(
        {**CASCADE_RECIPE, "cascade": {**CASCADE_RECIPE["cascade"], "pairs": [pair, capped]}}
    )
    calls: list[int] = []
    real = cascade_step._probs
    monkeypatch.setattr(
        cascade_step, "_probs", lambda p, texts, batch=64: calls.append(len(texts)) or real(p, texts, batch)
    )
    reg = Registry(tmp_path)
    _, outcomes = build(
        recipe, reg, dataset=load_dataset(), progress=False, force=frozenset({"cascade-capped"})
    )
    status = {o.name: o.status for o in outcomes}
    assert status["cascade-capped"] == "built" and status["cascade-student-int8-to-teacher"] == "reused"
    assert calls == [96, 96]  # student-int8 and the teacher, once each, for the rebuilt cascade
    _, again = build(
        recipe,
        reg,
        dataset=load_dataset(),
        progress=False,
        force=frozenset({"cascade-capped", "cascade-student-int8-to-teacher"}),
    )
    assert calls == [96, 96, 96, 96]  # a new build: asked again, once per stage for both cascades
    first, second = (reg.get("cascade-capped", v).calibration for v in reg.versions("cascade-capped")[-2:])
    assert first is not None and second is not None and first["threshold"] == second["threshold"]
