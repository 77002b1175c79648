"""The loading API the gateway uses: a registered variant -> ``predict(texts)``.

:func:`load_variant` verifies every checksum before opening anything, then wires the
variant's tokenizer, its backend and its label table together once, so that a prediction
is tokenize -> backend -> softmax with no I/O. A cascade entry opens as a
:class:`CascadePredictor`: its two stages, each verified, and per text the second stage only
where the first is below the cascade's threshold.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from variants.backends import Backend, open_backend
from variants.cascade import Measure, confidence
from variants.registry import ChecksumMismatch, Manifest, Registry, RegistryError
from variants.tokenization import TextEncoder

CASCADE_FILE = "cascade.json"


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


class CascadePredictor:
    """Two verified predictors: the first answers every text, the second those it is unsure of."""

    def __init__(
        self, manifest: Manifest, first: Predictor, then: Predictor, measure: Measure, threshold: float
    ) -> None:
        if first.label_names != then.label_names:
            raise RegistryError(
                f"{manifest.ref}: stages {first.manifest.ref} and {then.manifest.ref} "
                "have different label tables"
            )
        self.manifest = manifest
        self.name, self.version = manifest.name, manifest.version
        self.label_names = first.label_names
        self.device = first.device if first.device == then.device else f"{first.device}+{then.device}"
        self.precision = manifest.precision
        self.first, self.then = first, then
        self.measure, self.threshold = measure, threshold

    def escalated(self, first_probs: np.ndarray) -> np.ndarray:
        """Which texts go to the second stage: those whose first-stage confidence is below the threshold."""
        return confidence(first_probs, self.measure) < self.threshold

    def predict_staged(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities, escalated mask): the second stage sees only the escalated texts."""
        probs = self.first.predict_proba(texts)
        up = self.escalated(probs)
        if up.any():
            probs = probs.copy()
            probs[up] = self.then.predict_proba([t for t, u in zip(texts, up, strict=True) if u])
        return probs, up

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        return self.predict_staged(texts)[0]

    def predict(self, texts: Sequence[str]) -> Predictions:
        probs = self.predict_proba(texts) if len(texts) else np.zeros((0, len(self.label_names)), np.float32)
        return Predictions([self.label_names[i] for i in probs.argmax(axis=-1)], probs, self.label_names)


def read_cascade(reg: Registry, name: str, version: int | None = None) -> tuple[Manifest, dict]:
    """A cascade entry's manifest and ``cascade.json`` (stages, measure, threshold), checksums verified."""
    manifest = reg.verify(name, version)
    if manifest.backend != "cascade":
        raise RegistryError(f"{manifest.ref} is not a cascade entry (it is a {manifest.backend} variant)")
    return manifest, _cascade_spec(reg, manifest)


def _cascade_spec(reg: Registry, manifest: Manifest) -> dict:
    return json.loads((reg.path(manifest.name, manifest.version) / CASCADE_FILE).read_text(encoding="utf-8"))


def _open_cascade(reg: Registry, manifest: Manifest, threads: int) -> CascadePredictor:
    spec = _cascade_spec(reg, manifest)
    stages = []
    for which in ("first", "then"):
        stage = load_variant(spec[which]["ref"], registry=reg, threads=threads)
        recorded = spec[which]["files"]
        actual = {k: f.sha256 for k, f in stage.manifest.files.items()}
        if actual != recorded:
            raise ChecksumMismatch(
                f"{manifest.ref}: its {which} stage {stage.manifest.ref} is not the one it was calibrated on"
            )
        stages.append(stage)
    first, then = stages
    assert isinstance(first, Predictor) and isinstance(then, Predictor)
    return CascadePredictor(manifest, first, then, spec["measure"], float(spec["threshold"]))


def load_variant(
    name: str,
    version: int | None = None,
    *,
    registry: Registry | str | Path | None = None,
    threads: int = 1,
    backend: str | None = None,
    device: str | None = None,
    precision: str | None = None,
) -> Predictor | CascadePredictor:
    """Verify and open a variant. Raises ``ChecksumMismatch`` before touching a tampered file.

    ``backend`` overrides the manifest's backend (e.g. an fp32 ONNX variant under TensorRT);
    ``device`` and ``precision`` override where and in what a torch variant runs (e.g. the fp32
    teacher in bf16 on CPU). A device that is not there raises ``BackendUnavailable``.
    """
    reg = registry if isinstance(registry, Registry) else Registry(registry)
    if version is None and "@" in name:
        from variants.registry import parse_ref

        name, version = parse_ref(name)
    manifest = reg.verify(name, version)
    folder = reg.path(manifest.name, manifest.version)
    if manifest.backend == "cascade":
        if backend or device or precision:
            raise ValueError(
                f"{manifest.ref} is a cascade: backend, device and precision belong to its stages"
            )
        return _open_cascade(reg, manifest, threads)
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
