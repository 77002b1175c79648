"""The variant factory: recipe + data -> registered variants, each step skipped when its inputs hold.

Each step names its parents and the recipe sections it reads. Its inputs key hashes those
sections, the dataset split hashes, the base model's checksum and the parents' file
checksums; a step whose key matches a registered, verifying version is reused, anything
else is rebuilt into a new version. Changing the test data therefore re-evaluates but
rebuilds nothing that did not train on it, while changing the train split rebuilds all.

This module owns the step graph and the reuse decision; what each step writes is in
:mod:`variants.builders`, what every manifest records of its making in :mod:`variants.provenance`.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from variants.builders import (
    BuildContext,
    build_qat,
    build_static_int8,
    build_teacher,
    build_teacher_onnx,
    dynamic_int8_builder,
    student_builder,
    tensorrt_builder,
    tensorrt_unavailable_reason,
)
from variants.cascade_step import build_cascade, cascade_inputs, cascade_key, parents_of
from variants.cuda_cast import cuda_cast_builder, cuda_unavailable_reason
from variants.data_sources import load_data
from variants.dataset import Dataset
from variants.provenance import code_version, library_versions, teacher_identity
from variants.recipe import Recipe, section_dict
from variants.registry import Registry, sha256_json

log = logging.getLogger("slimgate.variants")


@dataclass
class StepOutcome:
    name: str
    status: str  # built | reused | skipped
    ref: str | None = None
    reason: str | None = None
    seconds: float = 0.0


@dataclass(frozen=True)
class Step:
    name: str
    parents: tuple[str, ...]
    sections: Callable[[Recipe], dict[str, Any]]
    build: Callable[[BuildContext, Path], dict[str, Any]]
    uses_train_data: bool = False
    available: Callable[[Recipe], str | None] = lambda _r: None


def _sections(*paths: str) -> Callable[[Recipe], dict[str, Any]]:
    def pick(recipe: Recipe) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for path in paths:
            obj: Any = recipe
            for part in path.split("."):
                obj = getattr(obj, part)
            out[path] = section_dict(obj) if hasattr(obj, "model_dump") else obj
        return out

    return pick


STEPS: dict[str, Step] = {
    s.name: s
    for s in [
        Step("teacher", (), _sections("task", "data", "teacher"), build_teacher, uses_train_data=True),
        Step("teacher-onnx", ("teacher",), _sections("data.max_length"), build_teacher_onnx),
        Step(
            "teacher-int8",
            ("teacher-onnx",),
            _sections("quantization.dynamic"),
            dynamic_int8_builder("teacher-onnx", True),
        ),
        Step(
            "student", ("teacher",), _sections("data", "student"), student_builder(True), uses_train_data=True
        ),
        Step(
            "student-nokd",
            ("teacher",),
            lambda r: {
                "data": section_dict(r.data),
                "student": section_dict(r.student.model_copy(update={"distillation": None})),
            },
            student_builder(False),
            uses_train_data=True,
        ),
        Step(
            "student-int8",
            ("student",),
            _sections("quantization.dynamic"),
            dynamic_int8_builder("student", False),
        ),
        Step(
            "student-int8-static",
            ("student",),
            _sections("quantization.static"),
            build_static_int8,
            uses_train_data=True,
        ),
        Step(
            "student-int8-qat",
            ("student", "teacher"),
            _sections("quantization.qat", "student.distillation"),
            build_qat,
            uses_train_data=True,
        ),
        Step(
            "student-trt-fp16",
            ("student",),
            _sections("tensorrt"),
            tensorrt_builder(False),
            available=tensorrt_unavailable_reason,
        ),
        Step(
            "student-trt-int8",
            ("student",),
            _sections("tensorrt", "quantization.static"),
            tensorrt_builder(True),
            uses_train_data=True,
            available=tensorrt_unavailable_reason,
        ),
        Step(
            "teacher-cuda-fp16",
            ("teacher",),
            _sections("cuda"),
            cuda_cast_builder("teacher"),
            available=cuda_unavailable_reason,
        ),
        Step(
            "student-cuda-fp16",
            ("student",),
            _sections("cuda"),
            cuda_cast_builder("student"),
            available=cuda_unavailable_reason,
        ),
    ]
}


def plan(wanted: list[str]) -> list[str]:
    """``wanted`` plus every ancestor, in dependency order."""
    order: list[str] = []

    def visit(name: str) -> None:
        for p in STEPS[name].parents:
            visit(p)
        if name not in order:
            order.append(name)

    for n in wanted:
        visit(n)
    return order


def inputs_key(step: Step, ctx: BuildContext) -> str:
    parents = {p: {k: f.sha256 for k, f in ctx.built[p].files.items()} for p in step.parents}
    return sha256_json(
        {
            "step": step.name,
            "recipe": step.sections(ctx.recipe),
            "parents": parents,
            "labels": ctx.labels,
            "train": ctx.dataset.hashes()["train"] if step.uses_train_data else None,
            "teacher": teacher_identity(ctx.recipe)["sha256"] if step.name == "teacher" else None,
        }
    )


def _build_or_reuse(
    ctx: BuildContext,
    name: str,
    parents: list[str],
    sections: dict[str, Any],
    key: str,
    make: Callable[[Path], dict[str, Any]],
    force: frozenset[str],
    common: dict[str, Any],
) -> StepOutcome:
    """Reuse the registered version built from ``key``, or build one into a staging folder."""
    existing = None if name in force else ctx.registry.find_by_inputs(name, key)
    if existing:
        ctx.built[name] = existing
        return StepOutcome(name, "reused", existing.ref)
    start = time.perf_counter()
    log.info("build %s", name)
    with tempfile.TemporaryDirectory(prefix=f"slimgate-{name}-") as tmp:
        staging = Path(tmp) / "out"
        fields = make(staging)
        fields.setdefault("build", {})["seconds"] = round(time.perf_counter() - start, 2)
        manifest = ctx.registry.register(
            staging,
            name=name,
            task=ctx.recipe.task,
            labels=ctx.labels,
            max_length=ctx.recipe.data.max_length,
            parents=[ctx.built[p].ref for p in parents],
            data=ctx.dataset.hashes(),
            data_source=ctx.dataset.info,
            recipe=sections,
            inputs_key=key,
            **common,
            **fields,
        )
    ctx.built[name] = manifest
    return StepOutcome(name, "built", manifest.ref, seconds=time.perf_counter() - start)


def build(
    recipe: Recipe,
    registry: Registry,
    *,
    dataset: Dataset | None = None,
    progress: bool = True,
    force: frozenset[str] = frozenset(),
) -> tuple[BuildContext, list[StepOutcome]]:
    """Build (or reuse) every variant the recipe asks for; returns what happened to each."""
    ds = dataset or load_data(recipe)
    ctx = BuildContext(recipe=recipe, registry=registry, dataset=ds, progress=progress)
    outcomes: list[StepOutcome] = []
    common = {
        "teacher": teacher_identity(recipe),
        "code_version": code_version(),
        "library_versions": library_versions(),
    }
    for name in plan(list(recipe.variants)):
        step = STEPS[name]
        missing = [p for p in step.parents if p not in ctx.built]
        if missing:
            outcomes.append(StepOutcome(name, "skipped", reason=f"parent {missing[0]} was not built"))
            continue
        reason = step.available(recipe)
        if reason:
            outcomes.append(StepOutcome(name, "skipped", reason=reason))
            log.info("skip %s: %s", name, reason)
            continue
        key = inputs_key(step, ctx)
        outcomes.append(
            _build_or_reuse(
                ctx,
                name,
                list(step.parents),
                step.sections(recipe),
                key,
                lambda staging, step=step: step.build(ctx, staging),
                force,
                common,
            )
        )
    for pair in recipe.cascade.pairs:
        missing = [p for p in parents_of(pair) if p not in ctx.built]
        if missing:
            outcomes.append(StepOutcome(pair.entry, "skipped", reason=f"stage {missing[0]} was not built"))
            continue
        outcomes.append(
            _build_or_reuse(
                ctx,
                pair.entry,
                list(parents_of(pair)),
                cascade_inputs(pair, ctx)["recipe"],
                cascade_key(pair, ctx),
                lambda staging, pair=pair: build_cascade(pair, ctx, staging),
                force,
                common,
            )
        )
    return ctx, outcomes
