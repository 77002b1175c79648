"""Distillation study: why the distilled student does not beat the one trained on labels, measured.

    python -m benchmarks.distillation [--registry R] [--runs nokd,kd,...] [--steps 1250] [--seeds 0 1]

Trains 2-layer students (the recipe's architecture, initialised from the registry's teacher) with
one loss or data change at a time, every run with the same optimiser, batch and step budget, and
scores each on the validation and test splits (accuracy, agreement with the teacher). Runs:

* ``nokd``: cross-entropy on labels, on the 40,000 training texts the teacher was fine-tuned on;
* ``kd``: the recipe's distillation (T = 2, KL 0.8 + CE 0.2) on those same texts;
* ``kd-t4``: temperature 4; ``kd-soft``: KL only (1.0 + 0); ``kd-hidden``: plus hidden-state MSE;
* ``kd-transfer``: the same distillation, but on a transfer set that starts with the 25,597
  training texts the teacher never saw (then the seen ones, up to the same 40,000): on its own
  training texts a fine-tuned teacher's soft targets are nearly one-hot, which leaves the KL
  little to teach beyond the labels;
* ``nokd-transfer``: labels only on that transfer set (is it the data, or the soft targets?);
* ``kd-long``: twice the steps.

Seed-to-seed noise comes from ``--seeds`` (initialisation order and batches; the texts are fixed by
the run). Figures are printed with the machine and written to reports/distillation.json.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path
from typing import Any

RUNS = ("nokd", "kd", "kd-t4", "kd-soft", "kd-hidden", "kd-transfer", "nokd-transfer", "kd-long")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--registry", default=None)
    p.add_argument("--runs", default=",".join(RUNS), help=f"comma-separated, of {', '.join(RUNS)}")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--seeded-runs", default="nokd,kd,kd-transfer", help="runs repeated for every seed")
    p.add_argument("--steps", type=int, default=1250, help="optimiser steps of a run (the recipe: 1250)")
    p.add_argument("--out", type=Path, default=Path("reports/distillation.json"))
    a = p.parse_args(argv)

    import torch

    from variants import Registry
    from variants.dataset import Split, load_dataset
    from variants.hardware import describe
    from variants.recipe import DistillationConfig, load_recipe
    from variants.tokenization import TextEncoder
    from variants.training import load_classifier, make_student, train

    torch.set_num_threads(2)
    recipe = load_recipe("default")
    reg = Registry(a.registry)
    teacher_m = reg.get("teacher")
    folder = reg.path(teacher_m.name, teacher_m.version)
    teacher = load_classifier(folder)
    enc = TextEncoder.from_folder(folder, recipe.data.max_length)
    ds = load_dataset()
    seen = ds.train.subsample(recipe.teacher.train_examples, recipe.teacher.seed)
    seen_texts = set(seen.texts)
    unseen = [e for e in ds.train.examples if e.text not in seen_texts]
    n = recipe.student.train_examples or len(seen)
    transfer = Split("transfer", tuple(unseen + list(seen.examples)[: max(0, n - len(unseen))]))
    data = {
        "seen": (list(seen.texts), list(seen.label_ids)),
        "transfer": (list(transfer.texts), list(transfer.label_ids)),
    }
    base = recipe.student.distillation
    losses = {
        "nokd": None,
        "kd": base,
        "kd-t4": base.model_copy(update={"temperature": 4.0}),
        "kd-soft": DistillationConfig(temperature=base.temperature, kd_weight=1.0, ce_weight=0.0),
        "kd-hidden": base.model_copy(update={"hidden_weight": 1.0}),
        "kd-transfer": base,
        "nokd-transfer": None,
        "kd-long": base,
    }
    val, test = ds.validation, ds.test
    t_val, t_test = _predict(teacher, enc, val.texts), _predict(teacher, enc, test.texts)
    out: dict[str, Any] = {
        "machine": describe(),
        "teacher": teacher_m.ref,
        "steps": a.steps,
        "transfer": {"unseen_by_teacher": len(unseen), "total": len(transfer)},
        "teacher_accuracy": {"validation": _acc(t_val, val.label_ids), "test": _acc(t_test, test.label_ids)},
        "runs": [],
    }
    print(f"machine: {out['machine']}; teacher {teacher_m.ref}: {out['teacher_accuracy']}", flush=True)
    seeded = set(a.seeded_runs.split(","))
    for run in a.runs.split(","):
        if run not in RUNS:
            raise SystemExit(f"unknown run {run!r} (known: {', '.join(RUNS)})")
        for seed in a.seeds if run in seeded else a.seeds[:1]:
            texts, labels = data["transfer" if run.endswith("transfer") else "seen"]
            steps = a.steps * (2 if run == "kd-long" else 1)
            cfg = recipe.student.model_copy(update={"seed": seed, "max_steps": steps, "epochs": 100.0})
            student = make_student(teacher, recipe.student.layers)
            distill = losses[run]
            start = time.perf_counter()
            train(
                student,
                enc,
                texts,
                labels,
                cfg,
                teacher=teacher if distill is not None else None,
                distill=distill,
                layer_map=recipe.student.layers,
                desc=run,
                progress=False,
            )
            pv, pt = _predict(student, enc, val.texts), _predict(student, enc, test.texts)
            row = {
                "run": run,
                "seed": seed,
                "steps": steps,
                "minutes": round((time.perf_counter() - start) / 60, 1),
                "val_accuracy": _acc(pv, val.label_ids),
                "test_accuracy": _acc(pt, test.label_ids),
                "test_agreement": _acc(pt, t_test),
            }
            out["runs"].append(row)
            print(f"  {row}", flush=True)
            a.out.parent.mkdir(parents=True, exist_ok=True)
            a.out.write_text(json.dumps(out, indent=2))
    _print(out)
    return 0


def _predict(model: Any, enc: Any, texts: list[str], batch: int = 128) -> list[int]:
    import torch

    preds: list[int] = []
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    by_index: dict[int, int] = {}
    with torch.inference_mode():
        for s in range(0, len(order), batch):
            idx = order[s : s + batch]
            ids, mask = enc([texts[i] for i in idx])
            logits = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).logits
            for i, p in zip(idx, logits.argmax(-1).tolist(), strict=True):
                by_index[i] = p
    preds = [by_index[i] for i in range(len(texts))]
    return preds


def _acc(pred: list[int], truth: list[int]) -> float:
    return round(sum(int(p == t) for p, t in zip(pred, truth, strict=True)) / max(1, len(truth)), 5)


def _print(out: dict[str, Any]) -> None:
    print(
        f"\n== distillation study ({out['machine']}; {out['steps']} steps a run; teacher {out['teacher']}) =="
    )
    by_run: dict[str, list[dict[str, Any]]] = {}
    for r in out["runs"]:
        by_run.setdefault(r["run"], []).append(r)
    for run, rows in by_run.items():
        accs = [r["test_accuracy"] for r in rows]
        spread = f" ± {statistics.stdev(accs):.4f} sd over {len(accs)} seeds" if len(accs) > 1 else ""
        agree = statistics.fmean(r["test_agreement"] for r in rows)
        print(f"  {run:14s} test {statistics.fmean(accs):.4f}{spread}   agreement {agree:.4f}")


if __name__ == "__main__":
    random.seed(0)
    raise SystemExit(main())
