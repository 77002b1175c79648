"""What a registered variant was built by: the code revision, the library versions, the teacher's weights.

Every manifest carries these, and the teacher's fingerprint is part of the teacher step's inputs
key, so a different base model rebuilds the whole chain.
"""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path

from variants.recipe import Recipe
from variants.registry import sha256_file


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


def teacher_identity(recipe: Recipe) -> dict[str, str]:
    """What the teacher step starts from: the fine-tuned checkpoint's files, or the base model's."""
    from variants.checkpoints import checkpoint_dir, fingerprint

    folder = checkpoint_dir(recipe)
    if folder is not None:
        return {"checkpoint": str(folder), "sha256": fingerprint(folder)}
    return teacher_fingerprint(recipe.teacher.model)


def teacher_fingerprint(model: str) -> dict[str, str]:
    from variants.training import resolve_base_model

    src = Path(resolve_base_model(model))
    weights = src / "model.safetensors"
    if weights.is_file():
        return {"model": model, "sha256": sha256_file(weights)}
    return {"model": model, "sha256": "hub:" + model}
