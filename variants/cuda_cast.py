"""The CUDA variants (``teacher-cuda-fp16``, ``student-cuda-fp16``): an fp16 cast, checked before it is kept.

A cast needs no training: the fp32 parent's weights are written as fp16 safetensors (half the
bytes) and the variant's manifest says ``device: cuda``, ``precision: fp16``. The cast is kept
only if the saved files, opened by the torch backend on CUDA exactly as serving opens them,
predict what the fp32 parent predicts on CPU on ``cuda.verify_examples`` texts of the test split
for at least ``cuda.min_agreement`` of them; fp16's 10-bit mantissa can flip a near-tie, and a
cast that flips more than that is a build failure, not a variant.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from variants.builders import BuildContext
from variants.recipe import Recipe
from variants.tokenization import TOKENIZER_FILE

VERIFY_BATCH = 256


def cuda_unavailable_reason(recipe: Recipe) -> str | None:
    """Why the CUDA variants cannot be built here (None: they can)."""
    if recipe.cuda.enabled == "off":
        return "disabled in the recipe (cuda.enabled: off)"
    from variants.hardware import cuda_unavailable_reason as probe

    reason = probe()
    return f"needs a CUDA device: {reason}" if reason else None


def predicted(backend: Any, encoder: Any, texts: list[str]) -> np.ndarray:
    """Argmax label ids of ``texts``, in batches."""
    out = []
    for i in range(0, len(texts), VERIFY_BATCH):
        ids, mask = encoder(texts[i : i + VERIFY_BATCH])
        out.append(backend.logits(ids, mask).argmax(axis=-1))
    return np.concatenate(out) if out else np.zeros(0, np.int64)


def cuda_cast_builder(parent: str) -> Callable[[BuildContext, Path], dict[str, Any]]:
    def build(ctx: BuildContext, out: Path) -> dict[str, Any]:
        from variants.backends import torch_backend
        from variants.training import save_classifier

        cfg = ctx.recipe.cuda
        src = ctx.folder(parent)
        files = list(ctx.built[parent].files)
        reference = torch_backend.open(src, files, ctx.recipe.evaluation.threads, device="cpu")
        save_classifier(copy.deepcopy(reference.model).half(), src / TOKENIZER_FILE, out)
        cast = torch_backend.open(out, ["model.safetensors"], 1, device="cuda", precision="fp16")
        sample = ctx.dataset.test.subsample(cfg.verify_examples, seed=0)
        encoder = ctx.encoder(src)
        expected = predicted(reference, encoder, sample.texts)
        got = predicted(cast, encoder, sample.texts)
        agreement = float((expected == got).mean()) if len(sample) else 1.0
        verification = {
            "against": f"{ctx.built[parent].ref} fp32 on cpu",
            "split": "test",
            "split_sha256": sample.content_hash,
            "texts": len(sample),
            "agreement": round(agreement, 6),
            "min_agreement": cfg.min_agreement,
        }
        if agreement < cfg.min_agreement:
            raise RuntimeError(
                f"{parent} cast to fp16 agrees with fp32 on {agreement:.4f} of {len(sample)} test texts, "
                f"below cuda.min_agreement {cfg.min_agreement}: not registered"
            )
        return {
            "backend": "torch",
            "format": "safetensors",
            "precision": "fp16",
            "device": "cuda",
            "build": {"cast": "fp32 -> fp16", "verification": verification},
        }

    return build
