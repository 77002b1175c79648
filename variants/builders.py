"""How each variant step makes its files: train, export, quantize or compile into a staging folder.

A builder gets the :class:`BuildContext` (the recipe, the dataset and the manifests of the steps
built so far) and an empty output folder, writes the variant's files there and returns the
manifest fields it alone knows (backend, format, precision, training and calibration details).
Which builder runs when, and whether it runs at all, is :mod:`variants.pipeline`'s business.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from variants.dataset import Dataset
from variants.recipe import Recipe
from variants.registry import Manifest, Registry
from variants.tokenization import TOKENIZER_FILE, TextEncoder


@dataclass
class BuildContext:
    recipe: Recipe
    registry: Registry
    dataset: Dataset
    progress: bool = True
    built: dict[str, Manifest] = field(default_factory=dict)
    # Answers of built variants, kept for the rest of this build: (variant ref, what was asked) ->
    # probabilities. Two cascades over the same stages calibrate on the same validation texts.
    answers: dict[tuple[str, str], Any] = field(default_factory=dict)

    @property
    def labels(self) -> list[str]:
        return list(self.dataset.labels)

    def encoder(self, folder: Path) -> TextEncoder:
        return TextEncoder.from_folder(folder, self.recipe.data.max_length)

    def folder(self, name: str) -> Path:
        m = self.built[name]
        return self.registry.path(m.name, m.version)


def _train_split(ctx: BuildContext, n: int | None, seed: int):
    return ctx.dataset.train.subsample(n, seed)


def build_teacher(ctx: BuildContext, out: Path) -> dict[str, Any]:
    from variants.checkpoints import checkpoint_dir, load_checkpoint
    from variants.training import base_tokenizer_file, load_base_classifier, save_classifier, train

    cfg = ctx.recipe.teacher
    folder = checkpoint_dir(ctx.recipe)
    if folder is not None:  # the user's fine-tuned classifier, as it is
        model = load_checkpoint(folder, tuple(ctx.labels))
        save_classifier(model, base_tokenizer_file(str(folder)), out)
        return {
            "backend": "torch",
            "format": "safetensors",
            "precision": "fp32",
            "build": {"checkpoint": str(folder), "architecture": type(model).__name__, "trained": False},
        }
    tok_file = base_tokenizer_file(cfg.model)
    model = load_base_classifier(cfg.model, ctx.labels, cfg.seed)
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


def student_builder(distil: bool) -> Callable[[BuildContext, Path], dict[str, Any]]:
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


def build_teacher_onnx(ctx: BuildContext, out: Path) -> dict[str, Any]:
    from variants.onnx_export import export_onnx
    from variants.training import load_classifier

    src = ctx.folder("teacher")
    export_onnx(load_classifier(src), out / "model.onnx", ctx.recipe.data.max_length)
    _copy_tokenizer(src, out)
    return {"backend": "onnxruntime", "format": "onnx", "precision": "fp32"}


def dynamic_int8_builder(parent: str, parent_is_onnx: bool) -> Callable[[BuildContext, Path], dict[str, Any]]:
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


def build_static_int8(ctx: BuildContext, out: Path) -> dict[str, Any]:
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


def build_qat(ctx: BuildContext, out: Path) -> dict[str, Any]:
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


def tensorrt_unavailable_reason(recipe: Recipe) -> str | None:
    if recipe.tensorrt.enabled == "off":
        return "disabled in the recipe (tensorrt.enabled: off)"
    from variants.backends.tensorrt_backend import availability

    return availability()


def tensorrt_builder(int8: bool) -> Callable[[BuildContext, Path], dict[str, Any]]:
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
