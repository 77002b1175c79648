"""The variant factory: recipe + data -> registered variants, each step skipped when its inputs hold.

Each step names its parents and the recipe sections it reads. Its inputs key hashes those
sections, the dataset split hashes, the base model's checksum and the parents' file
checksums; a step whose key matches a registered, verifying version is reused, anything
else is rebuilt into a new version. Changing the test data therefore re-evaluates but
rebuilds nothing that did not train on it, while changing the train split rebuilds all.
"""

from __future__ import annotations

import logging
import platform
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from variants.dataset import LABELS, Dataset, load_dataset
from variants.recipe import Recipe, section_dict
from variants.registry import Manifest, Registry, sha256_file, sha256_json
from variants.tokenization import TOKENIZER_FILE, TextEncoder

log = logging.getLogger("slimgate.variants")


@dataclass
class StepOutcome:
    name: str
    status: str  # built | reused | skipped
    ref: str | None = None
    reason: str | None = None
    seconds: float = 0.0


@dataclass
class BuildContext:
    recipe: Recipe
    registry: Registry
    dataset: Dataset
    progress: bool = True
    built: dict[str, Manifest] = field(default_factory=dict)

    @property
    def labels(self) -> list[str]:
        return list(LABELS)

    def encoder(self, folder: Path) -> TextEncoder:
        return TextEncoder.from_folder(folder, self.recipe.data.max_length)

    def folder(self, name: str) -> Path:
        m = self.built[name]
        return self.registry.path(m.name, m.version)


@dataclass(frozen=True)
class Step:
    name: str
    parents: tuple[str, ...]
    sections: Callable[[Recipe], dict[str, Any]]
    build: Callable[[BuildContext, Path], dict[str, Any]]
    uses_train_data: bool = False
    available: Callable[[Recipe], str | None] = lambda _r: None


# -- provenance ---------------------------------------------------------------------------
def code_version() -> str:
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, check=True
        )
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=here, capture_output=True, text=True)
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return f"slimgate-{metadata.version('slimgate')}" if _installed("slimgate") else "unknown"


def _installed(dist: str) -> bool:
    try:
        metadata.version(dist)
        return True
    except metadata.PackageNotFoundError:
        return False


def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("torch", "transformers", "tokenizers", "onnx", "onnxruntime", "safetensors", "tensorrt"):
        if _installed(dist):
            out[dist] = metadata.version(dist)
    return out


def teacher_fingerprint(model: str) -> dict[str, str]:
    from variants.training import resolve_base_model

    src = Path(resolve_base_model(model))
    weights = src / "model.safetensors"
    if weights.is_file():
        return {"model": model, "sha256": sha256_file(weights)}
    return {"model": model, "sha256": "hub:" + model}


# -- steps ---------------------------------------------------------------------------------
def _train_split(ctx: BuildContext, n: int | None, seed: int):
    return ctx.dataset.train.subsample(n, seed)


def _build_teacher(ctx: BuildContext, out: Path) -> dict[str, Any]:
    from variants.training import base_tokenizer_file, load_base_classifier, save_classifier, train

    cfg = ctx.recipe.teacher
    tok_file = base_tokenizer_file(cfg.model)
    model = load_base_classifier(cfg.model, ctx.labels)
    split = _train_split(ctx, cfg.train_examples, cfg.seed)
    enc = TextEncoder(tok_file, ctx.recipe.data.max_length)
    res = train(model, enc, split.texts, split.label_ids, cfg, desc="teacher", progress=ctx.progress)
    save_classifier(model, tok_file, out)
    return {
        "backend": "torch",
        "format": "safetensors",
        "precision": "fp32",
        "build": {"train": res.__dict__, "train_examples": len(split)},
    }


def _build_student(distil: bool) -> Callable[[BuildContext, Path], dict[str, Any]]:
    def build(ctx: BuildContext, out: Path) -> dict[str, Any]:
        from variants.training import load_classifier, make_student, save_classifier, train

        cfg = ctx.recipe.student
        teacher_dir = ctx.folder("teacher")
        teacher = load_classifier(teacher_dir)
        student = make_student(teacher, cfg.layers)
        split = _train_split(ctx, cfg.train_examples, cfg.seed)
        res = train(
            student,
            ctx.encoder(teacher_dir),
            split.texts,
            split.label_ids,
            cfg,
            teacher=teacher if distil else None,
            distill=cfg.distillation if distil else None,
            layer_map=cfg.layers,
            desc="student" if distil else "student-nokd",
            progress=ctx.progress,
        )
        save_classifier(student, teacher_dir / TOKENIZER_FILE, out)
        return {
            "backend": "torch",
            "format": "safetensors",
            "precision": "fp32",
            "build": {"train": res.__dict__, "train_examples": len(split), "distilled": distil},
        }

    return build


def _copy_tokenizer(src: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / TOKENIZER_FILE).write_bytes((src / TOKENIZER_FILE).read_bytes())


def _build_teacher_onnx(ctx: BuildContext, out: Path) -> dict[str, Any]:
    from variants.onnx_export import export_onnx
    from variants.training import load_classifier

    src = ctx.folder("teacher")
    export_onnx(load_classifier(src), out / "model.onnx", ctx.recipe.data.max_length)
    _copy_tokenizer(src, out)
    return {"backend": "onnxruntime", "format": "onnx", "precision": "fp32"}


def _dynamic_from(parent: str, parent_is_onnx: bool) -> Callable[[BuildContext, Path], dict[str, Any]]:
    def build(ctx: BuildContext, out: Path) -> dict[str, Any]:
        from variants.quantization import dynamic_int8

        src = ctx.folder(parent)
        with tempfile.TemporaryDirectory() as tmp:
            fp32 = src / "model.onnx" if parent_is_onnx else _export_tmp(ctx, src, Path(tmp))
            out.mkdir(parents=True, exist_ok=True)
            dynamic_int8(fp32, out / "model.onnx", per_channel=ctx.recipe.quantization.dynamic.per_channel)
        _copy_tokenizer(src, out)
        return {"backend": "onnxruntime", "format": "onnx", "precision": "int8-dynamic"}

    return build


def _export_tmp(ctx: BuildContext, torch_dir: Path, tmp: Path) -> Path:
    from variants.onnx_export import export_onnx
    from variants.training import load_classifier

    return export_onnx(load_classifier(torch_dir), tmp / "fp32.onnx", ctx.recipe.data.max_length)


def calibration_sample(ctx: BuildContext) -> tuple[list[str], str]:
    cfg = ctx.recipe.quantization.static
    sample = ctx.dataset.train.subsample(cfg.calibration_examples, cfg.seed)
    return sample.texts, sample.content_hash


def _build_static(ctx: BuildContext, out: Path) -> dict[str, Any]:
    from variants.quantization import static_int8

    cfg = ctx.recipe.quantization.static
    src = ctx.folder("student")
    texts, digest = calibration_sample(ctx)
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = _export_tmp(ctx, src, Path(tmp))
        out.mkdir(parents=True, exist_ok=True)
        static_int8(
            fp32, out / "model.onnx", ctx.encoder(src), texts, method=cfg.method, per_channel=cfg.per_channel
        )
    _copy_tokenizer(src, out)
    return {
        "backend": "onnxruntime",
        "format": "onnx",
        "precision": "int8-static",
        "calibration": {
            "examples": len(texts),
            "sha256": digest,
            "method": cfg.method,
            "split": "train",
            "seed": cfg.seed,
        },
    }


def _build_qat(ctx: BuildContext, out: Path) -> dict[str, Any]:
    from variants.onnx_export import export_onnx
    from variants.quantization import dynamic_int8
    from variants.training import fake_quantized, load_classifier, train

    cfg = ctx.recipe.quantization.qat
    src = ctx.folder("student")
    student = load_classifier(src)
    teacher = load_classifier(ctx.folder("teacher"))
    split = _train_split(ctx, cfg.train_examples, cfg.seed)
    with fake_quantized(student):
        res = train(
            student,
            ctx.encoder(src),
            split.texts,
            split.label_ids,
            cfg,
            teacher=teacher,
            distill=ctx.recipe.student.distillation,
            layer_map=ctx.recipe.student.layers,
            desc="student-qat",
            progress=ctx.progress,
        )
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export_onnx(student, Path(tmp) / "fp32.onnx", ctx.recipe.data.max_length)
        out.mkdir(parents=True, exist_ok=True)
        dynamic_int8(fp32, out / "model.onnx", per_channel=False)
    _copy_tokenizer(src, out)
    return {
        "backend": "onnxruntime",
        "format": "onnx",
        "precision": "int8-qat",
        "build": {"train": res.__dict__, "train_examples": len(split)},
    }


def _tensorrt_available(recipe: Recipe) -> str | None:
    if recipe.tensorrt.enabled == "off":
        return "disabled in the recipe (tensorrt.enabled: off)"
    from variants.backends.tensorrt_backend import availability

    return availability()


def _build_trt(int8: bool) -> Callable[[BuildContext, Path], dict[str, Any]]:
    def build(ctx: BuildContext, out: Path) -> dict[str, Any]:
        import json

        from variants.backends.tensorrt_backend import build_engine
        from variants.quantization import static_int8

        cfg = ctx.recipe.tensorrt
        src = ctx.folder("student")
        out.mkdir(parents=True, exist_ok=True)
        extra: dict[str, Any] = {}
        with tempfile.TemporaryDirectory() as tmp:
            fp32 = _export_tmp(ctx, src, Path(tmp))
            if int8:
                texts, digest = calibration_sample(ctx)
                sc = ctx.recipe.quantization.static
                static_int8(
                    fp32,
                    out / "model.onnx",
                    ctx.encoder(src),
                    texts,
                    method=sc.method,
                    per_channel=True,
                    symmetric_activations=True,
                )
                extra["calibration"] = {
                    "examples": len(texts),
                    "sha256": digest,
                    "method": sc.method,
                    "split": "train",
                    "seed": sc.seed,
                }
            else:
                (out / "model.onnx").write_bytes(fp32.read_bytes())
        settings = {
            "fp16": True,
            "int8": int8,
            "max_batch_size": cfg.max_batch_size,
            "max_length": ctx.recipe.data.max_length,
        }
        (out / "tensorrt.json").write_text(json.dumps(settings), encoding="utf-8")
        # Build once now so that a recipe the engine builder rejects fails the build, not serving.
        build_engine(
            out / "model.onnx",
            fp16=True,
            int8=int8,
            max_batch=cfg.max_batch_size,
            max_len=ctx.recipe.data.max_length,
        )
        _copy_tokenizer(src, out)
        return {"backend": "tensorrt", "format": "onnx", "precision": "int8" if int8 else "fp16", **extra}

    return build


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
        Step("teacher", (), _sections("task", "data", "teacher"), _build_teacher, uses_train_data=True),
        Step("teacher-onnx", ("teacher",), _sections("data.max_length"), _build_teacher_onnx),
        Step(
            "teacher-int8",
            ("teacher-onnx",),
            _sections("quantization.dynamic"),
            _dynamic_from("teacher-onnx", True),
        ),
        Step(
            "student", ("teacher",), _sections("data", "student"), _build_student(True), uses_train_data=True
        ),
        Step(
            "student-nokd",
            ("teacher",),
            lambda r: {
                "data": section_dict(r.data),
                "student": section_dict(r.student.model_copy(update={"distillation": None})),
            },
            _build_student(False),
            uses_train_data=True,
        ),
        Step(
            "student-int8", ("student",), _sections("quantization.dynamic"), _dynamic_from("student", False)
        ),
        Step(
            "student-int8-static",
            ("student",),
            _sections("quantization.static"),
            _build_static,
            uses_train_data=True,
        ),
        Step(
            "student-int8-qat",
            ("student", "teacher"),
            _sections("quantization.qat", "student.distillation"),
            _build_qat,
            uses_train_data=True,
        ),
        Step(
            "student-trt-fp16",
            ("student",),
            _sections("tensorrt"),
            _build_trt(False),
            available=_tensorrt_available,
        ),
        Step(
            "student-trt-int8",
            ("student",),
            _sections("tensorrt", "quantization.static"),
            _build_trt(True),
            uses_train_data=True,
            available=_tensorrt_available,
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
            "teacher": teacher_fingerprint(ctx.recipe.teacher.model)["sha256"]
            if step.name == "teacher"
            else None,
        }
    )


def build(
    recipe: Recipe,
    registry: Registry,
    *,
    dataset: Dataset | None = None,
    progress: bool = True,
    force: frozenset[str] = frozenset(),
) -> tuple[BuildContext, list[StepOutcome]]:
    """Build (or reuse) every variant the recipe asks for; returns what happened to each."""
    ds = dataset or load_dataset(
        validation_fraction=recipe.data.validation_fraction,
        test_fraction=recipe.data.test_fraction,
        seed=recipe.data.seed,
    )
    ctx = BuildContext(recipe=recipe, registry=registry, dataset=ds, progress=progress)
    outcomes: list[StepOutcome] = []
    teacher_fp = teacher_fingerprint(recipe.teacher.model)
    code, libs = code_version(), library_versions()
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
        existing = None if name in force else registry.find_by_inputs(name, key)
        if existing:
            ctx.built[name] = existing
            outcomes.append(StepOutcome(name, "reused", existing.ref))
            continue
        start = time.perf_counter()
        log.info("build %s", name)
        with tempfile.TemporaryDirectory(prefix=f"slimgate-{name}-") as tmp:
            staging = Path(tmp) / "out"
            fields = step.build(ctx, staging)
            fields.setdefault("build", {})["seconds"] = round(time.perf_counter() - start, 2)
            manifest = registry.register(
                staging,
                name=name,
                task=recipe.task,
                labels=ctx.labels,
                max_length=recipe.data.max_length,
                parents=[ctx.built[p].ref for p in step.parents],
                teacher=teacher_fp,
                data=ds.hashes(),
                recipe=step.sections(recipe),
                inputs_key=key,
                code_version=code,
                library_versions=libs,
                **fields,
            )
        ctx.built[name] = manifest
        outcomes.append(StepOutcome(name, "built", manifest.ref, seconds=time.perf_counter() - start))
    return ctx, outcomes
