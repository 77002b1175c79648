"""The cascade in the gateway: config refusals, exact per-text escalation over real variants, the
latency budget under a fault drill, and what is counted."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
from support import MemorySink

from serving.cascade_client import CascadeClient, read_calibration
from serving.config import ConfigError, VariantSpec, parse_config
from serving.metrics_recording import GatewayMetrics
from serving.variant_clients import InlineVariant
from variants.cascade import confidence
from variants.dataset import load_dataset

CASCADE = "cascade-student-int8-to-teacher"


def _config(**cascade) -> dict:
    return {
        "variants": {
            "small": {"ref": "student-int8"},
            "big": {"ref": "teacher"},
            "both": {"cascade": {"first": "small", "then": "big", **cascade}},
        },
        "routing": {"stable": "small", "weights": {"small": 90, "both": 10}},
    }


def test_a_cascade_serves_the_entry_named_after_its_stages():
    cfg = parse_config(_config())
    assert cfg.variants["both"].ref == CASCADE
    assert cfg.variants["both"].cascade is not None and cfg.variants["both"].cascade.threshold is None


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda c: c["variants"]["both"]["cascade"].update(first="both"), "variants.both.cascade.first"),
        (lambda c: c["variants"]["both"]["cascade"].update(then="nope"), "variants.both.cascade.then"),
        (lambda c: c["variants"]["both"]["cascade"].update(then="small"), "variants.both.cascade.then"),
        (lambda c: c["variants"]["both"]["cascade"].update(threshold=1.5), "threshold"),
        (lambda c: c["variants"]["both"]["cascade"].update(threshold=-0.1), "threshold"),
        (lambda c: c["variants"]["both"].update(backend="torch"), "variants.both.backend"),
        (lambda c: c["variants"]["both"].update(placement="deployment"), "variants.both.placement"),
    ],
    ids=[
        "of-itself",
        "missing-stage",
        "same-stage-twice",
        "threshold-above-1",
        "threshold-below-0",
        "backend",
        "placement",
    ],
)
def test_bad_cascade_configs_are_refused_with_the_field_named(change, field):
    raw = _config()
    change(raw)
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        parse_config(raw)


def _registry_problems(cfg) -> str:
    from serving.config import check_against_registry

    try:
        check_against_registry(cfg)
    except ConfigError as err:
        return str(err)
    return ""


def test_a_cascade_must_match_the_registry(cascade_registry, tmp_path):
    import json
    import shutil

    from variants import Registry

    # (The small registry is not evaluated, so every variant is also "not deployable" here.)
    cfg = parse_config({**_config(), "registry": str(cascade_registry)})
    assert "calibrated on" not in _registry_problems(cfg)  # calibrated on exactly these stages
    assert "cascade entry" not in _registry_problems(cfg)
    # A cascade entry served as a plain variant, and a plain variant served as a cascade.
    plain = cfg.with_changes({"variants.extra": {"ref": CASCADE}})
    assert "variants.extra.ref: cascade-student-int8-to-teacher@1 is a cascade entry" in _registry_problems(
        plain
    )
    wrong = cfg.with_changes({"variants.both.ref": "student-int8"})
    assert "variants.both.ref: student-int8@1 is not a cascade entry" in _registry_problems(wrong)
    # Stages other than those it was calibrated on.
    other = cfg.with_changes({"variants.big.ref": "student"})
    assert "variants.both.ref: cascade-student-int8-to-teacher@1 was calibrated on" in _registry_problems(
        other
    )
    # Stages with different label tables: a copy of the registry whose teacher lists them reversed.
    copy = tmp_path / "reg"
    shutil.copytree(cascade_registry, copy)
    t = Registry(copy).get("teacher")
    path = Registry(copy).path(t.name, t.version) / "manifest.json"
    doc = json.loads(path.read_text())
    doc["labels"] = doc["labels"][::-1]
    path.write_text(json.dumps(doc))
    relabelled = cfg.with_changes({"registry": str(copy)})
    assert "variants.both.cascade: stages student-int8@1 and teacher@1 have different label tables" in (
        _registry_problems(relabelled)
    )


@pytest.fixture(scope="module")
def stages(cascade_registry):
    root = str(cascade_registry)
    first = InlineVariant.load("small", VariantSpec(ref="student-int8"), root)
    then = InlineVariant.load("big", VariantSpec(ref="teacher"), root)
    yield first, then, read_calibration(root, CASCADE)
    first.close()
    then.close()


def _cascade(stages, sink: MemorySink | None = None, **cascade) -> CascadeClient:
    first, then, calibration = stages
    spec = VariantSpec(ref=CASCADE, cascade={"first": "small", "then": "big", **cascade})
    return CascadeClient("both", spec, first, then, calibration, GatewayMetrics(sink) if sink else None)


TEXTS = load_dataset().test.texts[:40]


def test_only_the_unsure_texts_reach_the_second_stage_and_each_answer_names_its_stage(stages):
    first, then, calibration = stages
    assert _cascade(stages).threshold == calibration.threshold  # the registry's, unless configured
    # A few training steps leave the tiny first stage's confidence in a narrow band, where the
    # calibrated threshold may escalate none of 40 texts: this test sets one that splits them.
    alone = asyncio.run(first.predict(list(TEXTS), 10.0)).probabilities
    threshold = float(np.median(confidence(alone, calibration.measure)))
    sink = MemorySink()
    c = _cascade(stages, sink, budget_ms=30_000.0, threshold=threshold)
    seen: list[list[str]] = []
    real = then.predict

    async def recording(texts, timeout_s):
        seen.append(list(texts))
        return await real(texts, timeout_s)

    then.predict = recording  # type: ignore[method-assign]
    try:
        answer = asyncio.run(c.predict(list(TEXTS), 10.0))
    finally:
        del then.predict
    unsure = confidence(alone, calibration.measure) < threshold
    assert 0 < unsure.sum() < len(TEXTS)
    assert seen == [[t for t, u in zip(TEXTS, unsure, strict=True) if u]]  # one call, those texts only
    assert answer.stages == tuple("then" if u else "first" for u in unsure)
    teacher = asyncio.run(then.predict([t for t, u in zip(TEXTS, unsure, strict=True) if u], 10.0))
    np.testing.assert_allclose(answer.probabilities[unsure], teacher.probabilities, atol=1e-5)
    np.testing.assert_allclose(answer.probabilities[~unsure], alone[~unsure], atol=1e-6)
    assert (answer.name, answer.version) == (calibration.name, calibration.version)
    c._metrics.flush()  # type: ignore[union-attr]
    counted = {
        dict(labels)["stage"]: v
        for (name, labels), v in sink.counters.items()
        if name == "slimgate_cascade_texts"
    }
    assert counted == {"first": float((~unsure).sum()), "then": float(unsure.sum())}


def test_thresholds_zero_and_one_escalate_nothing_and_everything(stages):
    nothing = asyncio.run(_cascade(stages, threshold=0.0).predict(list(TEXTS), 10.0))
    assert set(nothing.stages or ()) == {"first"}
    c = _cascade(stages, threshold=0.0)
    # The threshold is live config; a generous budget, so that no answer comes back degraded.
    c.configure(
        VariantSpec(
            ref=CASCADE, cascade={"first": "small", "then": "big", "threshold": 1.0, "budget_ms": 30_000.0}
        )
    )
    everything = asyncio.run(c.predict(list(TEXTS), 10.0))
    assert set(everything.stages or ()) == {"then"}


def test_a_slow_second_stage_gives_degraded_first_stage_answers_within_the_budget(stages):
    first, then, _ = stages
    sink = MemorySink()
    c = _cascade(stages, sink, threshold=1.0, budget_ms=100.0)
    then.configure(VariantSpec(ref="teacher", faults={"delay_ms": 3000.0}))  # the fault drill
    try:
        start = time.perf_counter()
        answer = asyncio.run(c.predict(list(TEXTS[:8]), 10.0))
        took = time.perf_counter() - start
    finally:
        then.configure(VariantSpec(ref="teacher"))
    assert answer.stages == ("degraded",) * 8
    alone = asyncio.run(first.predict(list(TEXTS[:8]), 10.0)).probabilities
    np.testing.assert_allclose(answer.probabilities, alone, atol=1e-6)
    assert took < 1.5  # the budget cut it short: nowhere near the 3 s the second stage takes
    c._metrics.flush()  # type: ignore[union-attr]
    assert sink.counters[("slimgate_cascade_texts", (("stage", "degraded"), ("variant", "both")))] == 8


def test_a_failing_second_stage_never_fails_the_cascade(stages):
    _, then, _ = stages
    c = _cascade(stages, threshold=1.0, budget_ms=30_000.0)
    then.configure(VariantSpec(ref="teacher", faults={"error_rate": 1.0}))
    try:
        answer = asyncio.run(c.predict(list(TEXTS[:5]), 10.0))
    finally:
        then.configure(VariantSpec(ref="teacher"))
    assert answer.stages == ("degraded",) * 5
