"""The evaluation report: a Markdown table, a JSON document, the accuracy-throughput frontier plot and
every cascade's threshold curve (accuracy against escalation rate on the test split)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from variants.registry import Manifest

COLUMNS = [
    ("variant", "{}"),
    ("precision", "{}"),
    ("accuracy", "{:.4f}"),
    ("macro-F1", "{:.4f}"),
    ("agreement", "{:.4f}"),
    ("retention", "{:.4f}"),
    ("ECE", "{:.4f}"),
    ("p50 ms (b1)", "{:.2f}"),
    ("p99 ms (b1)", "{:.2f}"),
    ("throughput/s (b32)", "{:.0f}"),
    ("speed-up", "{:.2f}x"),
    ("escalated", "{:.1%}"),
    ("size MB", "{:.1f}"),
    ("mem MB", "{:.0f}"),
    ("gate", "{}"),
]


def rows(manifests: list[Manifest]) -> list[dict[str, Any]]:
    teacher = next((m for m in manifests if m.name == "teacher"), None)
    base = teacher.metrics["throughput_per_s"] if teacher and teacher.metrics else None
    out = []
    for m in manifests:
        x = m.metrics or {}
        if not x:
            continue
        out.append(
            {
                "variant": m.ref,
                # The device only when it is not the CPU every other row was measured on.
                "precision": f"{m.backend}/{m.precision}" + (f" on {m.device}" if m.device != "cpu" else ""),
                "accuracy": x["accuracy"],
                "macro-F1": x["macro_f1"],
                "agreement": x["agreement"],
                "retention": x["retention"],
                "ECE": x["ece"],
                "p50 ms (b1)": x["latency_ms_p50"],
                "p99 ms (b1)": x["latency_ms_p99"],
                "throughput/s (b32)": x["throughput_per_s"],
                "speed-up": x["throughput_per_s"] / base if base else float("nan"),
                # Only a cascade sends texts on; for every other variant the column is empty.
                "escalated": x["cascade"]["escalation_rate"] if "cascade" in x else None,
                "size MB": x["size_mb"],
                "mem MB": x["model_memory_mb"],
                "gate": m.gate.status + (" (deployable)" if m.deployable else ""),
            }
        )
    return out


def markdown(manifests: list[Manifest], skipped: list[tuple[str, str]] = ()) -> str:
    head = "| " + " | ".join(c for c, _ in COLUMNS) + " |"
    sep = "|" + "|".join("---" for _ in COLUMNS) + "|"
    lines = [head, sep]
    for r in rows(manifests):
        lines.append("| " + " | ".join("" if r[c] is None else fmt.format(r[c]) for c, fmt in COLUMNS) + " |")
    for name, reason in skipped:
        lines.append(f"| {name} | skipped: {reason} |" + " |" * (len(COLUMNS) - 2))
    decided = [m for m in manifests if m.gate.reason]
    if decided:
        lines += ["", "Gate decisions:"]
        lines += [f"- {m.ref}: {m.gate.status}, {m.gate.reason}" for m in decided]
    return "\n".join(lines)


def as_json(manifests: list[Manifest], extra: dict[str, Any]) -> str:
    doc = {
        **extra,
        "variants": [
            {
                "ref": m.ref,
                "name": m.name,
                "version": m.version,
                "backend": m.backend,
                "precision": m.precision,
                "device": m.device,
                "parents": m.parents,
                "calibration": m.calibration,
                "gate": m.gate.model_dump(),
                "deployable": m.deployable,
                "metrics": {
                    k: v for k, v in (m.metrics or {}).items() if k not in ("predictions", "full_test")
                },
            }
            for m in manifests
        ],
    }
    return json.dumps(doc, indent=2)


def frontier_plot(manifests: list[Manifest], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [
        (m.name, m.metrics["throughput_per_s"], m.metrics["accuracy"], m.gate.status)
        for m in manifests
        if m.metrics
    ]
    fig, ax = plt.subplots(figsize=(8, 5))
    cascades = {m.name for m in manifests if m.backend == "cascade"}
    for name, thr, acc, gate in pts:
        color = "tab:green" if gate == "passed" else "tab:red"
        ax.scatter(thr, acc, s=60, color=color, marker="D" if name in cascades else "o", zorder=3)
        ax.annotate(name, (thr, acc), textcoords="offset points", xytext=(5, 4), fontsize=8)
    # The Pareto frontier: no other variant is both faster and more accurate.
    front = sorted(pts, key=lambda p: -p[1])
    best, line = -1.0, []
    for p in front:
        if p[2] > best:
            line.append(p)
            best = p[2]
    ax.plot([p[1] for p in line], [p[2] for p in line], "--", color="grey", zorder=2, label="Pareto frontier")
    ax.set_xscale("log")
    ax.set_xlabel("throughput, texts/s at batch 32 (log scale)")
    ax.set_ylabel("test accuracy")
    ax.set_title("slimgate variants: accuracy vs throughput (green = passed gate, diamond = cascade)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def cascade_curves_plot(manifests: list[Manifest], path: Path) -> Path | None:
    """One panel per cascade: test accuracy against escalation rate for both confidence measures,
    the stages alone as horizontal lines and the calibrated point; None without a cascade."""
    found = [m for m in manifests if m.backend == "cascade" and m.metrics and "cascade" in m.metrics]
    if not found:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(found), figsize=(6.5 * len(found), 4.8), squeeze=False)
    for ax, m in zip(axes[0], found, strict=True):
        c = m.metrics["cascade"]  # type: ignore[index]
        for measure, pts in c["curves"].items():
            ax.plot([e * 100 for e in pts["escalation"]], pts["accuracy"], label=f"confidence: {measure}")
        ax.axhline(c["first_stage_accuracy"], color="grey", ls=":", label="first stage alone")
        ax.axhline(c["second_stage_accuracy"], color="black", ls="--", label="second stage alone")
        ax.scatter(
            [c["escalation_rate"] * 100],
            [m.metrics["accuracy"]],
            color="tab:red",
            zorder=3,  # type: ignore[index]
            label=f"calibrated on validation ({c['measure']} < {c['threshold']:.3f})",
        )
        ax.set_xlabel("texts escalated to the second stage, % (test split)")
        ax.set_ylabel("test accuracy")
        ax.set_title(f"{m.ref}: {' -> '.join(p.split('@')[0] for p in m.parents[:2])}", fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
