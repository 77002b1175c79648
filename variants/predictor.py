"""The loading API the gateway uses: a registered variant -> ``predict(texts)``.

:func:`load_variant` verifies every checksum before opening anything, then wires the
variant's tokenizer, its backend and its label table together once, so that a prediction
is tokenize -> backend -> softmax with no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from variants.backends import Backend, open_backend
from variants.registry import Manifest, Registry
from variants.tokenization import TextEncoder


@dataclass(frozen=True)
class Predictions:
    labels: list[str]
    probabilities: np.ndarray  # float32 [n, len(label_names)]
    label_names: tuple[str, ...]

    def top_k(self, i: int, k: int) -> list[tuple[str, float]]:
        row = self.probabilities[i]
        idx = np.argsort(-row)[:k]
        return [(self.label_names[j], float(row[j])) for j in idx]


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


class Predictor:
    def __init__(
        self,
        manifest: Manifest,
        folder: Path,
        backend: Backend,
        device: str | None = None,
        precision: str | None = None,
    ) -> None:
        self.manifest = manifest
        # What it really runs on and in (an override of the manifest's), for every report of it.
        self.device = device or manifest.device
        self.precision = precision or manifest.precision
        self.name = manifest.name
        self.version = manifest.version
        self.label_names = tuple(manifest.labels)
        self.encoder = TextEncoder.from_folder(folder, manifest.max_length)
        self.backend = backend

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        ids, mask = self.encoder(texts)
        return self.backend.logits(ids, mask)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        return softmax(self.logits(texts))

    def predict(self, texts: Sequence[str]) -> Predictions:
        if isinstance(texts, str):
            raise TypeError("predict() takes a sequence of texts, not a single string")
        if len(texts) == 0:
            return Predictions([], np.zeros((0, len(self.label_names)), np.float32), self.label_names)
        probs = self.predict_proba(texts)
        labels = [self.label_names[i] for i in probs.argmax(axis=-1)]
        return Predictions(labels, probs, self.label_names)


def load_variant(
    name: str,
    version: int | None = None,
    *,
    registry: Registry | str | Path | None = None,
    threads: int = 1,
    backend: str | None = None,
    device: str | None = None,
    precision: str | None = None,
) -> Predictor:
    """Verify and open a variant. Raises ``ChecksumMismatch`` before touching a tampered file.

    ``backend`` overrides the manifest's backend (e.g. an fp32 ONNX variant under TensorRT);
    ``device`` and ``precision`` override where and in what a torch variant runs (e.g. the fp32
    teacher in bf16 on CPU). A device that is not there raises ``BackendUnavailable``.
    """
    reg = registry if isinstance(registry, Registry) else Registry(registry)
    manifest = reg.verify(name, version)
    folder = reg.path(manifest.name, manifest.version)
    kind = backend or manifest.backend
    if precision is not None and kind != "torch":
        raise ValueError(
            f"{manifest.ref}: precision {precision!r} asked of the {kind} backend; only a torch "
            f"variant is cast when opened (an {kind} artifact keeps the precision it was built in)"
        )
    # A torch artifact is opened in the precision it was built for; the others run their own.
    cast = precision or (manifest.precision if kind == "torch" else None)
    where = device or manifest.device
    opened = open_backend(kind, folder, list(manifest.files), threads, device=where, precision=cast)
    return Predictor(manifest, folder, opened, where, precision)
