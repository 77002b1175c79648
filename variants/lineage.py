"""The lineage graph of registered variants, as indented text or as a PNG image."""

from __future__ import annotations

from pathlib import Path

from variants.registry import Manifest


def _children(manifests: list[Manifest]) -> dict[str, list[Manifest]]:
    kids: dict[str, list[Manifest]] = {}
    for m in manifests:
        # A variant hangs under its first parent; further parents are shown as "+ also from".
        key = m.parents[0] if m.parents else ""
        kids.setdefault(key, []).append(m)
    return kids


def text(manifests: list[Manifest]) -> str:
    kids = _children(manifests)
    lines: list[str] = []

    def walk(m: Manifest, prefix: str, last: bool, root: bool) -> None:
        tag = f"{m.ref}  [{m.backend}/{m.precision}, gate {m.gate.status}]"
        if len(m.parents) > 1:
            tag += "  + also from " + ", ".join(m.parents[1:])
        lines.append(tag if root else f"{prefix}{'└── ' if last else '├── '}{tag}")
        sub = kids.get(m.ref, [])
        for i, c in enumerate(sub):
            walk(c, prefix if root else prefix + ("    " if last else "│   "), i == len(sub) - 1, False)

    refs = {m.ref for m in manifests}
    roots = [m for m in manifests if not m.parents or m.parents[0] not in refs]
    for r in roots:
        walk(r, "", True, True)
    return "\n".join(lines)


def image(manifests: list[Manifest], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kids = _children(manifests)
    refs = {m.ref for m in manifests}
    pos: dict[str, tuple[float, float]] = {}
    depth_rows: dict[int, int] = {}

    def place(m: Manifest, depth: int) -> None:
        row = depth_rows.get(depth, 0)
        depth_rows[depth] = row + 1
        pos[m.ref] = (depth, -row)
        for c in kids.get(m.ref, []):
            place(c, depth + 1)

    for r in [m for m in manifests if not m.parents or m.parents[0] not in refs]:
        place(r, 0)
    fig, ax = plt.subplots(figsize=(3 + 3 * len(depth_rows), 1.5 + 0.9 * max(depth_rows.values(), default=1)))
    for m in manifests:
        for p in m.parents:
            if p in pos and m.ref in pos:
                (x0, y0), (x1, y1) = pos[p], pos[m.ref]
                ax.annotate(
                    "",
                    xy=(x1 - 0.05, y1),
                    xytext=(x0 + 0.05, y0),
                    arrowprops={"arrowstyle": "->", "color": "grey"},
                )
    for m in manifests:
        x, y = pos[m.ref]
        color = {"passed": "#d4f4dd", "rejected": "#f8d7da"}.get(m.gate.status, "#eeeeee")
        ax.text(
            x,
            y,
            f"{m.ref}\n{m.backend}/{m.precision}",
            ha="center",
            va="center",
            fontsize=8,
            bbox={"boxstyle": "round", "facecolor": color, "edgecolor": "grey"},
        )
    ax.set_xlim(-0.6, len(depth_rows) - 0.4)
    ax.set_ylim(-max(depth_rows.values(), default=1), 1)
    ax.axis("off")
    ax.set_title("variant lineage (green: passed gate, red: rejected)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
