"""One evaluation harness for every variant: quality, agreement, speed, size and memory.

Each variant is measured in a fresh subprocess (``python -m variants.evaluation``) so that
peak memory belongs to that variant alone and no backend's thread pool or allocator state
leaks into the next one's timings. Every variant goes through the same tokenizer, the same
thread count and the same test texts; only the backend differs.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from variants.recipe import EvaluationConfig


# -- metrics (pure functions) -----------------------------------------------------------
def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float((y_true == y_pred).mean()) if len(y_true) else float("nan")


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, n_labels: int) -> float:
    f1s = []
    for c in range(n_labels):
        tp = int(((y_pred == c) & (y_true == c)).sum())
        fp = int(((y_pred == c) & (y_true != c)).sum())
        fn = int(((y_pred != c) & (y_true == c)).sum())
        if tp + fp + fn == 0:
            continue  # class absent from both truth and predictions: no information
        f1s.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(f1s)) if f1s else float("nan")


def expected_calibration_error(probs: np.ndarray, y_true: np.ndarray, bins: int) -> float:
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y_true
    edges = np.linspace(0.0, 1.0, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        sel = (conf > lo) & (conf <= hi)
        if sel.any():
            ece += sel.mean() * abs(correct[sel].mean() - conf[sel].mean())
    return float(ece)


def label_distribution(pred: np.ndarray, labels: list[str]) -> dict[str, float]:
    counts = Counter(int(p) for p in pred)
    n = max(1, len(pred))
    return {label: counts.get(i, 0) / n for i, label in enumerate(labels)}


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


# -- the worker: runs in its own process -------------------------------------------------
def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _peak_rss_mb() -> float:
    """This process's high-water mark. Unlike ru_maxrss, VmHWM is not inherited across exec."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _parts(predictor: Any) -> list[Any]:
    return [predictor.first, predictor.then] if hasattr(predictor, "then") else [predictor]


def cascade_figures(
    predictor: Any,
    texts: list[str],
    y: np.ndarray,
    reference: np.ndarray | None,
    escalated: np.ndarray,
    bs: int,
) -> dict[str, Any]:
    """A cascade's own figures on the test texts: escalation, each stage alone, and the whole
    threshold curve of both confidence measures (every stage run on every text for the curve)."""
    from variants.cascade import MEASURES, curve

    first = np.concatenate(
        [predictor.first.predict_proba(texts[i : i + bs]) for i in range(0, len(texts), bs)]
    )
    then = np.concatenate([predictor.then.predict_proba(texts[i : i + bs]) for i in range(0, len(texts), bs)])
    then_pred = then.argmax(axis=1)
    return {
        "escalation_rate": float(escalated.mean()) if len(escalated) else float("nan"),
        "measure": predictor.measure,
        "threshold": predictor.threshold,
        "first_stage_accuracy": accuracy(y, first.argmax(axis=1)),
        "second_stage_accuracy": accuracy(y, then_pred),
        "curves": {m: curve(first, then_pred, y, m, reference).sampled() for m in MEASURES},
    }


def measure(
    registry: str,
    ref: str,
    texts: list[str],
    y_true: list[int],
    cfg: EvaluationConfig,
    reference: list[int] | None = None,
    quality_only: bool = False,
) -> dict[str, Any]:
    """Every figure of one variant on the test texts; ``reference`` = the teacher's answers there,
    which a cascade's agreement curve is drawn against. ``quality_only``: the answers alone (what
    the gate's second look needs), no timing."""
    from variants.predictor import CascadePredictor, load_variant
    from variants.registry import parse_ref

    name, version = parse_ref(ref)
    base_rss = _rss_mb()
    t0 = time.perf_counter()
    predictor = load_variant(name, version, registry=registry, threads=cfg.threads)
    load_s = time.perf_counter() - t0

    # Quality pass: the whole test set in batches of the throughput size.
    bs = cfg.throughput_batch_size
    y = np.asarray(y_true)
    extra: dict[str, Any] = {}
    if quality_only:
        probs = np.concatenate([predictor.predict_proba(texts[i : i + bs]) for i in range(0, len(texts), bs)])
        return {"n_test": len(texts), "predictions": probs.argmax(axis=1).tolist()}
    if isinstance(predictor, CascadePredictor):
        staged = [predictor.predict_staged(texts[i : i + bs]) for i in range(0, len(texts), bs)]
        probs = np.concatenate([p for p, _ in staged])
        escalated = np.concatenate([e for _, e in staged])
        ref_pred = None if reference is None else np.asarray(reference)
        extra["cascade"] = cascade_figures(predictor, texts, y, ref_pred, escalated, bs)
    else:
        probs = np.concatenate([predictor.predict_proba(texts[i : i + bs]) for i in range(0, len(texts), bs)])
    pred = probs.argmax(axis=1)
    labels = list(predictor.label_names)

    # Latency: one text per call, as an interactive client sends them.
    lat_texts = [texts[i % len(texts)] for i in range(cfg.latency_samples + cfg.warmup)]
    latencies = []
    for i, t in enumerate(lat_texts):
        s = time.perf_counter()
        predictor.predict_proba([t])
        if i >= cfg.warmup:
            latencies.append((time.perf_counter() - s) * 1000)

    # Throughput: full batches, tokenization included (it is part of serving cost).
    batches = [
        [texts[(b * bs + j) % len(texts)] for j in range(bs)]
        for b in range(cfg.throughput_batches + cfg.warmup)
    ]
    for b in batches[: cfg.warmup]:
        predictor.predict_proba(b)
    s = time.perf_counter()
    for b in batches[cfg.warmup :]:
        predictor.predict_proba(b)
    elapsed = time.perf_counter() - s
    peak_mb = _peak_rss_mb()

    return {
        "n_test": len(texts),
        "accuracy": accuracy(y, pred),
        "macro_f1": macro_f1(y, pred, len(labels)),
        "ece": expected_calibration_error(probs, y, cfg.ece_bins),
        "label_distribution": label_distribution(pred, labels),
        "latency_ms_p50": percentile(latencies, 50),
        "latency_ms_p99": percentile(latencies, 99),
        "latency_ms_mean": statistics.fmean(latencies),
        "throughput_per_s": cfg.throughput_batches * bs / elapsed,
        "throughput_batch_size": bs,
        "threads": cfg.threads,
        "load_s": load_s,
        # A cascade's artifacts are its stages'.
        "size_mb": sum(p.manifest.size_bytes for p in _parts(predictor)) / 2**20,
        "peak_rss_mb": peak_mb,
        "model_memory_mb": max(0.0, peak_mb - base_rss),
        "predictions": pred.tolist(),
        **extra,
    }


def _worker_main() -> None:
    ap = argparse.ArgumentParser(description="measure one variant (internal)")
    ap.add_argument("--registry", required=True)
    ap.add_argument("--ref", required=True)
    ap.add_argument("--job", required=True, help="JSON file: texts, labels, config")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    job = json.loads(Path(a.job).read_text(encoding="utf-8"))
    cfg = EvaluationConfig.model_validate(job["config"])
    result = measure(
        a.registry,
        a.ref,
        job["texts"],
        job["labels"],
        cfg,
        job.get("reference"),
        job.get("quality_only", False),
    )
    Path(a.out).write_text(json.dumps(result), encoding="utf-8")


def run_isolated(
    registry: Path,
    ref: str,
    texts: list[str],
    labels: list[int],
    cfg: EvaluationConfig,
    reference: list[int] | None = None,
    quality_only: bool = False,
) -> dict:
    """Measure ``ref`` in a fresh interpreter with the configured thread count (see :func:`measure`)."""
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(cfg.threads)
    with tempfile.TemporaryDirectory(prefix="slimgate-eval-") as tmp:
        job, out = Path(tmp) / "job.json", Path(tmp) / "out.json"
        job.write_text(
            json.dumps(
                {
                    "texts": texts,
                    "labels": labels,
                    "config": cfg.model_dump(),
                    "reference": reference,
                    "quality_only": quality_only,
                }
            ),
            encoding="utf-8",
        )
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "variants.evaluation",
                "--registry",
                str(registry),
                "--ref",
                ref,
                "--job",
                str(job),
                "--out",
                str(out),
            ],
            env=env,
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"evaluating {ref} failed:\n{proc.stderr[-3000:]}")
        return json.loads(out.read_text(encoding="utf-8"))


if __name__ == "__main__":
    _worker_main()
