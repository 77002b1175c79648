"""The quick recipe over several seeds: does the demo's compressed model clear its bars with room?

    python -m benchmarks.quick_seeds [--seeds 0 1 2 3 4] [--out runs/quick-seeds] [--recipe quick]
                                     [--chain-only]

Each seed is a full build of the recipe from an empty registry (``slimgate variants build``, the
same code path as ``slimgate demo``) with every seed of the recipe moved on by it: the data
split's, the teacher's and the students' initialisation, draw of texts and batches, the
calibration sample's (seed 0 is the recipe as it is). For each it
reports the teacher's and ``student-int8``'s test accuracy, the accuracy gate's decision on
``student-int8`` with its retention interval, and ``student-int8``'s lead over the TF-IDF baseline
on the same texts, paired (a 95% interval from the texts where exactly one of them is right).
Then the spread over seeds. Figures are printed with the machine they were measured on and
written to ``<out>/quick-seeds.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml


def seeded_recipe(base: dict[str, Any], seed: int) -> dict[str, Any]:
    """``base`` with every seed it has (its own or the default) moved on by ``seed``: seed 0 is the
    recipe itself, and seeds that differ within it (the student's draw of texts is not the
    teacher's) still differ."""
    from variants.recipe import parse_recipe

    parsed = parse_recipe(base)
    out = json.loads(json.dumps(base))
    for path in (("data",), ("teacher",), ("student",), ("quantization", "qat"), ("quantization", "static")):
        node, section = out, parsed
        for part in path:
            node = node.setdefault(part, {})
            section = getattr(section, part)
        node["seed"] = section.seed + seed
    return out


def paired_lead(a_right: np.ndarray, b_right: np.ndarray, z: float = 1.96) -> tuple[float, float, float]:
    """accuracy(a) - accuracy(b) and its interval, from the paired texts (McNemar's variance)."""
    d = a_right.astype(np.float64) - b_right.astype(np.float64)
    n = len(d)
    se = float(d.std(ddof=1)) / math.sqrt(n)
    return float(d.mean()), float(d.mean()) - z * se, float(d.mean()) + z * se


def chain_only(recipe: dict[str, Any]) -> dict[str, Any]:
    """``recipe`` building only what ``student-int8``'s figures depend on: the teacher, the student
    and its dynamic int8 (and their evaluation). Every step's seed and inputs are the recipe's, so
    their figures are those of the full build; the other variants and the cascades are left out."""
    return {**recipe, "variants": ["student-int8"], "cascade": {**recipe.get("cascade", {}), "pairs": []}}


def one_seed(recipe: dict[str, Any], seed: int, out: Path) -> dict[str, Any]:
    from variants import Registry
    from variants.baseline import tfidf_logreg_baseline
    from variants.dataset import load_dataset
    from variants.recipe import parse_recipe

    root = out / f"seed-{seed}"
    if root.exists():
        raise SystemExit(f"{root} exists: each seed builds from an empty registry (remove it first)")
    root.mkdir(parents=True)
    data = seeded_recipe(recipe, seed)
    path = root / "recipe.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    started = time.perf_counter()
    cmd = [sys.executable, "-m", "serving.cli", "variants", "--registry", str(root / "registry")]
    cmd += ["build", "--recipe", str(path), "--quiet"]
    with open(root / "build.log", "w", encoding="utf-8") as log:
        subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT)
    minutes = (time.perf_counter() - started) / 60
    reg = Registry(root / "registry")
    parsed = parse_recipe(data)
    ds = load_dataset(
        validation_fraction=parsed.data.validation_fraction,
        test_fraction=parsed.data.test_fraction,
        seed=parsed.data.seed,
    )
    test = ds.test.subsample(parsed.evaluation.test_examples, seed=0)
    y = np.asarray(test.label_ids)
    report = json.loads((root / "registry" / "_reports" / "evaluation.json").read_text(encoding="utf-8"))
    baseline = tfidf_logreg_baseline(ds.__class__(ds.train, ds.validation, test), predictions=True)
    teacher, student = reg.get("teacher"), reg.get("student-int8")
    assert teacher.metrics and student.metrics
    right = np.asarray(student.metrics["predictions"]) == y
    lead, lo, hi = paired_lead(right, np.asarray(baseline["predictions"]) == y)
    deployable = sorted(m.name for m in reg.latest() if m.deployable)
    return {
        "seed": seed,
        "build_minutes": round(minutes, 2),
        "test_texts": len(test),
        "teacher_accuracy": teacher.metrics["accuracy"],
        "student_int8_accuracy": student.metrics["accuracy"],
        "baseline_accuracy": report["baseline_tfidf_logreg"]["accuracy"],
        "lead_over_baseline": [lead, lo, hi],
        "retention": student.gate.retention,
        "retention_interval": student.gate.retention_interval,
        "gate": student.gate.status,
        "gate_evidence": student.gate.evidence,
        "deployable": deployable,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--recipe", default="quick", help="recipe path or bundled name (default: quick)")
    p.add_argument("--out", type=Path, default=Path("runs/quick-seeds"))
    p.add_argument(
        "--chain-only",
        action="store_true",
        help="build only teacher -> student -> student-int8 (the same figures for them, in less time)",
    )
    a = p.parse_args(argv)

    from variants.hardware import describe
    from variants.recipe import RECIPES_DIR

    src = Path(a.recipe) if Path(a.recipe).suffix else RECIPES_DIR / f"{a.recipe}.yaml"
    recipe = yaml.safe_load(src.read_text(encoding="utf-8"))
    if a.chain_only:
        recipe = chain_only(recipe)
    machine = describe()
    print(f"quick recipe over seeds {a.seeds} on {machine}")
    rows = []
    for seed in a.seeds:
        r = one_seed(recipe, seed, a.out)
        rows.append(r)
        lead, lo, hi = r["lead_over_baseline"]
        ri = r["retention_interval"]
        print(
            f"seed {seed}: {r['build_minutes']:.1f} min; teacher {r['teacher_accuracy']:.4f}, student-int8 "
            f"{r['student_int8_accuracy']:.4f}, TF-IDF {r['baseline_accuracy']:.4f} (lead {100 * lead:+.2f} "
            f"points, 95% [{100 * lo:+.2f}, {100 * hi:+.2f}]); retention {r['retention']:.4f} "
            f"[{ri[0]}, {ri[1]}] -> {r['gate']} on {r['gate_evidence']}",
            flush=True,
        )
    print("\nover seeds (mean, min, max):")
    for key in (
        "teacher_accuracy",
        "student_int8_accuracy",
        "baseline_accuracy",
        "retention",
        "build_minutes",
    ):
        vals = [r[key] for r in rows]
        print(f"  {key:22s} {statistics.fmean(vals):.4f}  {min(vals):.4f}  {max(vals):.4f}")
    lows = [r["retention_interval"][0] for r in rows]
    print(f"  lowest retention bound  {min(v for v in lows if v is not None):.4f}")
    print(f"  lead over TF-IDF        min {100 * min(r['lead_over_baseline'][0] for r in rows):+.2f} points")
    print(f"  student-int8 passed     {sum(r['gate'] == 'passed' for r in rows)} of {len(rows)}")
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "quick-seeds.json").write_text(
        json.dumps({"machine": machine, "runs": rows}, indent=2), encoding="utf-8"
    )
    print(f"\nwritten: {a.out / 'quick-seeds.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
