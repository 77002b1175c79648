"""serving.tools.selection: the demo's gateway config derived from what the build made deployable.

The rules are checked on hand-made manifests (figures chosen so that each rule decides), then on
a tiny registry built and gated by the real factory, whose gate is made to reject the variant the
rules chose as stable.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from serving.config import canonical_dict, check_against_registry, load_config
from serving.tools.selection import (
    NoServableVariant,
    candidates,
    choose,
    promotion_candidate,
    select,
    swap_changes,
    to_yaml,
)
from variants.assessment import assess
from variants.dataset import load_dataset
from variants.recipe import Recipe, parse_recipe
from variants.registry import MANIFEST, Gate, Manifest, Registry

LABELS = ["noun.animal", "noun.plant"]
BASELINE = 0.82


def manifest(name, accuracy, throughput, parents=(), *, backend="onnxruntime", passed=True, reason=None):
    fmt = {"onnxruntime": "onnx", "torch": "safetensors", "cascade": "cascade"}[backend]
    metrics = {"accuracy": accuracy, "throughput_per_s": throughput}
    if backend == "cascade":
        metrics["cascade"] = {"escalation_rate": 0.15}
    return Manifest(
        name=name,
        version=1,
        task="t",
        labels=LABELS,
        backend=backend,
        format=fmt,
        precision="fp32",
        max_length=32,
        files={},
        parents=list(parents),
        inputs_key=name,
        code_version="test",
        created_at="2025-01-01T00:00:00+00:00",
        metrics=metrics,
        gate=Gate(status="passed" if passed else "rejected", reason=reason),
        deployable=passed,
    )


def family(*added: Manifest, drop: tuple[str, ...] = ()) -> list[Manifest]:
    """A build like the reference one, less the names in ``drop``, plus ``added``."""
    figures = {
        "teacher": (0.884, 167, (), "torch"),
        "teacher-onnx": (0.884, 184, ["teacher@1"], "onnxruntime"),
        "teacher-int8": (0.882, 305, ["teacher-onnx@1"], "onnxruntime"),
        "student": (0.870, 200, ["teacher@1"], "torch"),
        "student-int8": (0.874, 999, ["student@1"], "onnxruntime"),
        "student-int8-static": (0.873, 958, ["student@1"], "onnxruntime"),
        # Fast but below the baseline: never stable, however cheap.
        "tiny": (0.80, 5000, ["teacher@1"], "onnxruntime"),
    }
    out = [manifest(n, a, t, p, backend=b) for n, (a, t, p, b) in figures.items() if n not in drop]
    return out + list(added)


def pick(ms, baseline=BASELINE, root=Path("/registry")):
    by_ref = {m.ref: m for m in ms}
    return choose(ms, baseline, load_config(), root, by_ref.get)


def test_the_cheapest_variant_above_the_baseline_serves_and_every_role_follows_its_rule():
    sel = pick(family())
    assert (sel.stable.name, sel.shadow.name, sel.canary.name) == (
        "student-int8",
        "teacher-onnx",
        "teacher-int8",
    )
    cfg = sel.config
    assert cfg.routing.stable == "student-int8"
    assert cfg.routing.weights == {"student-int8": 90, "teacher-int8": 10}
    assert cfg.shadow.variants == ["teacher-onnx"] and cfg.shadow.fraction == load_config().shadow.fraction
    shadow = cfg.variants["teacher-onnx"]
    assert shadow.placement == "deployment" and shadow.progressive is False
    assert {k: v.ref for k, v in cfg.variants.items()} == {
        "student-int8": "student-int8@1",
        "teacher-int8": "teacher-int8@1",
        "teacher-onnx": "teacher-onnx@1",
    }
    assert str(cfg.registry) == "/registry"
    lines = "\n".join(sel.lines)
    assert (
        "stable: student-int8@1, the cheapest candidate above the baseline (2 within 20% of the fastest: the "
        "smallest, then the most accurate): accuracy 0.8740, 999 texts/s" in lines
    )
    assert "not beaten by tiny@1" in lines and "0.8200" in lines
    gpu = manifest("student-cuda-fp16", 0.874, 9000, ["student@1"], backend="torch").model_copy(
        update={"device": "cuda"}
    )
    rejected = manifest("student-nokd", 0.5, 400, ["teacher@1"], backend="torch", passed=False)
    sel = pick(family(gpu, rejected))
    assert sel.stable.name == "student-int8"  # the GPU variant is faster, but not served on CPU
    assert "left out: student-cuda-fp16@1 (device cuda), student-nokd@1 (gate rejected)" in sel.lines[0]


def test_speeds_one_run_cannot_separate_go_to_the_more_accurate_and_a_canary_must_gain():
    # 10% slower than the fastest, 0.2 point more accurate: the same price, the better answer.
    sel = pick(family(manifest("student-int8-qat", 0.876, 900, ["student@1", "teacher@1"])))
    assert sel.stable.name == "student-int8-qat"
    # 30% slower: dearer, whatever it gains.
    sel = pick(family(manifest("student-int8-qat", 0.876, 700, ["student@1", "teacher@1"])))
    assert sel.stable.name == "student-int8"
    # 0.3 point above stable and cheaper than teacher-int8: too little to be worth a canary.
    sel = pick(family(manifest("student-big", 0.877, 600, ["teacher@1"])))
    assert sel.canary.name == "teacher-int8"
    sel = pick(family(manifest("student-big", 0.880, 600, ["teacher@1"])))
    assert sel.canary.name == "student-big"


def test_without_a_recorded_baseline_the_rule_is_skipped_and_the_printout_says_so():
    sel = pick(family(), baseline=None)
    assert sel.stable.name == "tiny"  # the cheapest of all, nothing to beat
    assert any("baseline: none recorded" in line and "skipped" in line for line in sel.lines)


def test_a_missing_role_is_left_out():
    # No candidate more accurate than stable but the shadow: no canary; the drill says it skips.
    sel = pick([manifest("a", 0.9, 100), manifest("b", 0.95, 50, ["a@1"])])
    assert sel.canary is None and sel.config.routing.weights == {"a": 100}
    assert sel.shadow.name == "b"
    assert any(line.startswith("canary: none") and "drill will skip" in line for line in sel.lines)


def test_nothing_above_the_baseline_stops_with_every_variant_and_what_to_do():
    ms = [
        manifest("student-int8", 0.81, 999, ["student@1"]),
        manifest("teacher", 0.815, 167, backend="torch"),
        manifest(
            "student", 0.70, 400, ["teacher@1"], backend="torch", passed=False, reason="retention 0.86 < 0.97"
        ),
    ]
    with pytest.raises(NoServableVariant) as err:
        pick(ms)
    msg = str(err.value)
    assert isinstance(err.value, ValueError)  # main() prints it as `slimgate: error: ...` and returns 2
    for ref, acc, tput, gate in [
        ("student-int8@1", "0.8100", "999", "gate passed"),
        ("teacher@1", "0.8150", "167", "gate passed"),
        ("student@1", "0.7000", "400", "gate rejected (retention 0.86 < 0.97)"),
    ]:
        row = next(line for line in msg.splitlines() if line.strip().startswith(ref))
        assert acc in row and f"{tput} texts/s" in row and gate in row
    assert "baseline accuracy 0.8200" in msg and "slimgate variants build" in msg


def shadow_cascade() -> Manifest:
    """A deployable cascade of stable into the shadow (both configured by the rules)."""
    return manifest(
        "cascade-student-int8-to-teacher-onnx",
        0.88,
        600,
        ["student-int8@1", "teacher-onnx@1"],
        backend="cascade",
    )


def canary_cascade() -> Manifest:
    """A deployable cascade of stable into the canary (the drill removes it with the canary)."""
    return manifest(
        "cascade-student-int8-to-teacher-int8",
        0.883,
        700,
        ["student-int8@1", "teacher-int8@1"],
        backend="cascade",
    )


def test_a_cascade_on_served_stages_is_pinned_only_and_a_rejected_one_is_reported():
    cascade = shadow_cascade()
    on_canary = canary_cascade()
    sel = pick(family(cascade, on_canary))
    # Both need no stage added; the one staged on the canary would vanish with it in the drill.
    assert sel.cascade.name == cascade.name
    spec = sel.config.variants[cascade.name]
    assert spec.cascade.first == "student-int8" and spec.cascade.then == "teacher-onnx"
    assert sel.config.routing.weights[cascade.name] == 0
    rejected = manifest(
        cascade.name,
        0.85,
        200,
        cascade.parents,
        backend="cascade",
        passed=False,
        reason="target missed on test",
    )
    sel = pick(family(rejected))
    assert sel.cascade is None and cascade.name not in sel.config.variants
    assert any(
        "no cascade passed its gates" in line and "target missed on test" in line for line in sel.lines
    )


def test_the_promotion_candidate_is_one_the_speed_gate_will_not_hold_a_sibling_of_stable_first():
    # Stable is student-int8 (999 texts/s): pruned from it and slower, the speed gate would hold
    # "pruned" (it claims to be cheaper than what it descends from); "other" descends from the
    # shadow teacher-onnx (184 texts/s) and is faster than it; "static" is stable's sibling.
    pruned = manifest("pruned", 0.874, 500, ["student-int8@1"])
    other = manifest("other", 0.874, 400, ["teacher-onnx@1"])
    static = manifest("student-int8-static", 0.873, 300, ["student@1"])

    def promotion(*added):
        ms = family(*added, drop=("student-int8-static",))
        by_ref = {m.ref: m for m in ms}
        sel = pick(ms)
        assert (
            sel.stable.name == "student-int8"
            and sel.promotion is promotion_candidate(sel.config, ms, by_ref.get, BASELINE)[0]
        )
        return promotion_candidate(sel.config, ms, by_ref.get, BASELINE)

    found, why = promotion(pruned, other, static)
    assert found is static and "shares a parent with stable" in why and "it claims nothing" in why
    found, why = promotion(pruned, other)
    assert found is other and "as fast as teacher-onnx, which it descends from" in why
    found, why = promotion(pruned)
    assert (
        found is None
        and "held by the speed gate: pruned@1 (500 texts/s, slower than student-int8 999)" in why
    )


def test_the_drills_swap_removes_the_canary_and_the_cascades_staged_on_it():
    on_canary = canary_cascade()
    cfg = pick(family(on_canary)).config
    assert on_canary.name in cfg.variants  # the only cascade: served though staged on the canary
    after = cfg.with_changes(
        swap_changes(cfg, "teacher-int8", "student-int8-static", "student-int8-static@1", 5)
    )
    assert set(after.variants) == {"student-int8", "teacher-onnx", "student-int8-static"}
    assert after.routing.weights == {"student-int8": 95, "student-int8-static": 5}


# -- on registries -------------------------------------------------------------------------------
def _save(root: Path, ms: list[Manifest], baseline: float | None) -> Registry:
    """Hand-made manifests written in the registry's layout, and the build's report of the baseline."""
    for m in ms:
        folder = root / m.name / f"v{m.version}"
        folder.mkdir(parents=True)
        (folder / MANIFEST).write_text(m.model_dump_json(), encoding="utf-8")
    (root / "_reports").mkdir()
    report = {"baseline_tfidf_logreg": None if baseline is None else {"accuracy": baseline}}
    (root / "_reports" / "evaluation.json").write_text(json.dumps(report), encoding="utf-8")
    return Registry(root)


def _round_trip(sel, tmp_path: Path):
    path = tmp_path / "gateway.yaml"
    path.write_text(to_yaml(sel), encoding="utf-8")
    assert canonical_dict(load_config(path)) == canonical_dict(sel.config)


def test_the_derived_config_passes_the_gateways_registry_check_and_reads_back(tmp_path):
    cascade = shadow_cascade()
    reg = _save(tmp_path / "registry", family(cascade), BASELINE)
    sel = select(reg)
    check_against_registry(sel.config, reg)  # what `slimgate serve` refuses a config for
    assert sel.cascade.name == cascade.name and sel.stable.name == "student-int8"
    assert "TF-IDF accuracy 0.8200" in sel.lines[1]
    # The SLO guard of default.yaml: the canary browns out to stable (cheaper, deployable).
    assert "brownout targets" in sel.lines[-1] and "teacher-int8 -> student-int8" in sel.lines[-1]
    _round_trip(sel, tmp_path)


def test_the_demo_prints_each_choice_and_writes_a_config_slimgate_serve_accepts(tmp_path, capsys):
    from serving.cli import main
    from serving.tools.demo import derive_config

    reg = _save(tmp_path / "registry", family(), BASELINE)
    cfg, path = derive_config(reg, tmp_path / "demo")
    out = capsys.readouterr().out
    assert path == str(tmp_path / "demo" / "gateway.yaml")
    for line in select(reg).lines:
        assert f"  {line}\n" in out
    assert f"slimgate serve {path}" in out
    assert main(["config", "validate", path]) == 0  # loaded and checked against the registry it names
    assert canonical_dict(load_config(path)) == canonical_dict(cfg)


def test_config_init_writes_the_same_config_for_any_registry_and_never_overwrites(tmp_path, capsys):
    from serving.cli import main

    reg = _save(tmp_path / "registry", family(), BASELINE)
    out = tmp_path / "gateway.yaml"
    assert main(["config", "init", "--registry", str(reg.root), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert all(line in printed for line in select(reg).lines) and f"slimgate serve {out}" in printed
    assert canonical_dict(load_config(out)) == canonical_dict(select(reg).config)
    assert main(["config", "validate", str(out)]) == 0
    assert main(["config", "init", "--registry", str(reg.root), "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err
    assert (
        main(["config", "init", "--registry", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x.yaml")])
        == 2
    )
    assert "no such folder" in capsys.readouterr().err


# -- on a tiny build gated by the real factory ---------------------------------------------------
def tiny_recipe(min_retention: float) -> Recipe:
    """The recipe the shared tiny build (``small_registry``) was made with, gated at this bar."""
    from conftest import SERVING_RECIPE

    return parse_recipe(
        {**SERVING_RECIPE, "variants": ["student-int8"], "gate": {"min_retention": min_retention}}
    )


@pytest.fixture(scope="module")
def assessed(small_registry, tmp_path_factory) -> Path:
    """The shared tiny build (teacher, student, student-int8), evaluated and gated (any retention)."""
    root = tmp_path_factory.mktemp("selection-registry")
    shutil.copytree(small_registry, root, dirs_exist_ok=True)
    reg = Registry(root)
    assess(reg, reg.latest(), load_dataset(), tiny_recipe(min_retention=0.0))
    return root


def _regate(src: Path, dst: Path, names: list[str], min_retention: float) -> Registry:
    """A copy of ``src`` whose ``names`` (and the teacher) the real gate decides again at this bar."""
    shutil.copytree(src, dst)
    reg = Registry(dst)
    recipe = tiny_recipe(min_retention)
    assess(reg, [reg.get(n) for n in dict.fromkeys(["teacher", *names])], load_dataset(), recipe)
    return reg


def test_the_tiny_build_is_served_as_derived(assessed, tmp_path):
    sel = select(Registry(assessed))
    check_against_registry(sel.config, Registry(assessed))
    assert all("@" in spec.ref for spec in sel.config.variants.values())
    fastest = max(_tput(m) for m in candidates(Registry(assessed).latest()))
    assert _tput(sel.stable) == fastest
    assert any("the baseline rule is skipped" in line for line in sel.lines)  # assess alone records none
    _round_trip(sel, tmp_path)


def _tput(m: Manifest) -> float:
    return float((m.metrics or {})["throughput_per_s"])


def test_when_the_gate_rejects_the_usual_stable_another_serves_or_the_demo_stops(assessed, tmp_path):
    usual = select(Registry(assessed)).stable
    reg = _regate(assessed, tmp_path / "registry", [usual.name], min_retention=1.5)
    again = reg.get(usual.name)
    assert not again.deployable and again.gate.status == "rejected"  # the gate did reject it
    left = candidates(reg.latest())
    if left:
        sel = select(reg)
        assert sel.stable.name != usual.name and sel.stable.deployable
        assert _tput(sel.stable) == max(_tput(m) for m in left)
        assert usual.name not in {spec.name for spec in sel.config.variants.values()}
        check_against_registry(sel.config, reg)
    else:
        with pytest.raises(NoServableVariant) as err:
            select(reg)
        assert again.ref in str(err.value) and (again.gate.reason or "") in str(err.value)


def test_when_the_gate_rejects_everything_the_demo_stops_naming_the_figures(assessed, tmp_path):
    names = [m.name for m in Registry(assessed).latest()]
    reg = _regate(assessed, tmp_path / "registry", names, min_retention=1.5)
    if candidates(reg.latest()):  # a gate that passes some variant at this bar: it serves
        assert select(reg).stable.deployable
        return
    with pytest.raises(NoServableVariant) as err:
        select(reg)
    msg = str(err.value)
    for m in reg.latest():
        row = next(line for line in msg.splitlines() if line.strip().startswith(m.ref))
        acc = (m.metrics or {})["accuracy"]
        assert f"accuracy {acc:.4f}" in row and f"{_tput(m):.0f} texts/s" in row
        assert f"gate {m.gate.status}" in row and (m.gate.reason or "") in row
    assert "no TF-IDF baseline is recorded" in msg and "gate.min_retention" in msg


def test_on_the_readmes_default_build_figures_the_rules_choose_the_bundled_config():
    readme = {  # accuracy, texts/s, parents: the README's table of the full default build
        "teacher": (0.8843, 167, ()),
        "teacher-onnx": (0.8843, 184, ["teacher@1"]),
        "teacher-int8": (0.8824, 305, ["teacher-onnx@1"]),
        "student": (0.8746, 394, ["teacher@1"]),
        "student-nokd": (0.8694, 413, ["teacher@1"]),
        "student-int8": (0.8742, 999, ["student@1"]),
        "student-int8-static": (0.8734, 958, ["student@1"]),
        "student-int8-qat": (0.8742, 1179, ["student@1", "teacher@1"]),
    }
    ms = [manifest(n, a, t, p) for n, (a, t, p) in readme.items()]
    sel = pick(ms, baseline=0.8195)
    bundled = load_config()
    assert sel.config.routing.stable == bundled.routing.stable == "student-int8"
    assert sel.config.routing.weights == bundled.routing.weights
    assert sel.config.shadow.variants == bundled.shadow.variants == ["teacher-onnx"]


def test_where_int8_buys_little_speed_the_smaller_of_the_equally_fast_serves():
    from variants.registry import FileEntry

    quick = {  # accuracy, texts/s, MB, parents: the quick build on a CPU without VNNI (README)
        "teacher": (0.8493, 79, 86.6, ()),
        "teacher-onnx": (0.8493, 83, 86.7, ["teacher@1"]),
        "teacher-int8": (0.8450, 78, 22.3, ["teacher-onnx@1"]),
        "student": (0.8340, 207, 59.5, ["teacher@1"]),
        "student-int8": (0.8297, 236, 15.3, ["student@1"]),
        "student-int8-static": (0.8303, 222, 49.5, ["student@1"]),
        "student-int8-qat": (0.8327, 240, 15.3, ["student@1", "teacher@1"]),
    }
    ms = [
        manifest(n, a, t, p).model_copy(
            update={"files": {"model": FileEntry(sha256="0", bytes=int(mb * 2**20))}}
        )
        for n, (a, t, mb, p) in quick.items()
    ]
    sel = pick(ms, baseline=0.8090)
    # All four students are one price by speed; the fp32 one is four times the size.
    assert sel.stable.name == "student-int8-qat"
    assert "4 within 20% of the fastest: the smallest, then the most accurate" in "\n".join(sel.lines)
    # The fp32 teacher is as fast as its int8 twin here, and four times the size.
    assert sel.canary.name == "teacher-int8" and sel.shadow.name == "teacher-onnx"
    assert sel.promotion is not None and sel.promotion.name == "student-int8"
