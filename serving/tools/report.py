"""``slimgate report``: the last minutes of the gateway as one PNG, for people without Grafana at hand.

The plots are the Grafana dashboard's own panels (traffic weights, latency, shadow agreement,
the SLO guard's brownouts),
run over a time range against Prometheus, with the dashboard's rollback and promotion
annotations drawn as vertical marks. The PromQL comes from the dashboard file, so the report
and the dashboard cannot disagree about what a chart means.
"""

from __future__ import annotations

import argparse
import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from serving.ops.assets import load_dashboard, substitute

# Dashboard panels in the report, top to bottom, and the y-axis label of each.
PANELS = (
    ("Traffic weights", "weight (%)"),
    ("Latency p50 / p99", "seconds"),
    ("Shadow agreement", "agreement"),
    ("SLO guard: traffic browned out", "share"),
)
MARKS = (("Rollbacks", "tab:red"), ("Promotions", "tab:green"))
MARK_GAP_S = 30.0
_LEGEND = re.compile(r"\{\{\s*(\w+)\s*\}\}")


class ReportError(RuntimeError):
    """Prometheus could not be asked, or refused a query."""


@dataclass
class Series:
    name: str
    times: list[float]
    values: list[float]


def query_range(base_url: str, expr: str, start: float, end: float, step_s: float) -> list[dict[str, Any]]:
    """Prometheus' ``/api/v1/query_range`` result (a matrix) for ``expr``."""
    form = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step_s}).encode()
    req = urllib.request.Request(f"{base_url.rstrip('/')}/api/v1/query_range", data=form)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            body = json.loads(resp.read())
    except urllib.error.HTTPError as err:
        with err:
            detail = err.read().decode(errors="replace")[:300]
        raise ReportError(f"prometheus {base_url}: HTTP {err.code}: {detail}") from None
    except (OSError, ValueError) as err:
        raise ReportError(f"prometheus {base_url} unreachable: {err}") from None
    if body.get("status") != "success":
        raise ReportError(f"prometheus {base_url}: {body.get('error', body)}")
    return body["data"]["result"]


def legend(fmt: str | None, labels: dict[str, str]) -> str:
    if not fmt:
        return ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or "value"
    return _LEGEND.sub(lambda m: labels.get(m.group(1), ""), fmt)


def panel_series(
    base_url: str, panel: dict[str, Any], start: float, end: float, step_s: float
) -> list[Series]:
    out = []
    for target in panel.get("targets", []):
        for r in query_range(base_url, substitute(target["expr"]), start, end, step_s):
            pts = [(float(t), float(v)) for t, v in r["values"] if v not in ("NaN", "+Inf", "-Inf")]
            if pts:
                name = legend(target.get("legendFormat"), r["metric"])
                out.append(Series(name, [t for t, _ in pts], [v for _, v in pts]))
    return out


def marks(
    base_url: str, annotation: dict[str, Any], start: float, end: float, step_s: float
) -> list[tuple[float, str]]:
    """(time, text) of each annotation event: the first step of each run where the expression holds."""
    out = []
    for r in query_range(base_url, substitute(annotation["expr"]), start, end, step_s):
        previous = None
        for t, _v in r["values"]:
            t = float(t)
            # A missed scrape breaks a run for a step or two; one event's run lasts the annotation's
            # own window (a minute), so gaps shorter than half of it are the same event.
            if previous is None or t - previous > max(step_s * 1.5, MARK_GAP_S):
                out.append((t, legend(annotation.get("titleFormat"), r["metric"])))
            previous = t
    return sorted(out)


def render(
    base_url: str, out: Path, minutes: float = 15.0, step_s: float = 5.0, now: float | None = None
) -> dict:
    """Write the report PNG to ``out``; return what it holds (series and marks per panel)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    end = time.time() if now is None else now
    start = end - minutes * 60
    dashboard = load_dashboard()
    panels = {p.get("title"): p for p in dashboard.get("panels", [])}
    annotations = {a.get("name"): a for a in dashboard.get("annotations", {}).get("list", [])}
    events = {name: marks(base_url, annotations[name], start, end, step_s) for name, _c in MARKS}
    fig, axes = plt.subplots(len(PANELS), 1, figsize=(11, 3.2 * len(PANELS)), sharex=True)
    summary: dict[str, Any] = {"marks": {k: len(v) for k, v in events.items()}, "panels": {}}
    for ax, (title, unit) in zip(axes, PANELS, strict=True):
        series = panel_series(base_url, panels[title], start, end, step_s)
        summary["panels"][title] = len(series)
        for s in series:
            ax.plot([(t - end) / 60 for t in s.times], s.values, label=s.name, linewidth=1.4)
        for name, colour in MARKS:
            for t, text in events[name]:
                ax.axvline((t - end) / 60, color=colour, linestyle="--", linewidth=1, alpha=0.8)
                if ax is axes[0]:
                    ax.annotate(
                        text,
                        ((t - end) / 60, 1),
                        xycoords=("data", "axes fraction"),
                        fontsize=7,
                        color=colour,
                        rotation=90,
                        va="top",
                        ha="right",
                    )
        ax.set_title(title, fontsize=10, loc="left")
        ax.set_ylabel(unit)
        ax.grid(alpha=0.3)
        if series:
            ax.legend(fontsize=7, loc="upper left", ncol=3)
        else:
            ax.text(0.5, 0.5, "no data in this range", transform=ax.transAxes, ha="center", color="grey")
    axes[-1].set_xlim(-minutes, 0)
    axes[-1].set_xlabel(f"minutes before {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(end))}")
    fig.suptitle(
        f"slimgate, last {minutes:g} min ({base_url}); dashed: rollbacks (red), promotions (green)",
        fontsize=10,
    )
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return summary


def add_commands(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser("report", help="PNG of the last minutes from Prometheus (weights, latency, agreement)")
    r.add_argument("--prometheus", default="http://127.0.0.1:9090", help="Prometheus base URL")
    r.add_argument("--minutes", type=float, default=15.0, help="how far back to plot")
    r.add_argument("--step", type=float, default=5.0, help="seconds between points")
    r.add_argument("--out", type=Path, default=Path("reports/slimgate-report.png"), help="PNG to write")
    r.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    if not 0 < args.minutes <= 24 * 60:
        raise ValueError(f"--minutes must be within (0, 1440], got {args.minutes:g}")
    if not 0 < args.step <= args.minutes * 60:
        raise ValueError(f"--step must be positive and within the range, got {args.step:g}")
    summary = render(args.prometheus, args.out, args.minutes, args.step)
    panels = ", ".join(f"{k}: {v} series" for k, v in summary["panels"].items())
    marks_ = ", ".join(f"{k.lower()}: {v}" for k, v in summary["marks"].items())
    print(f"wrote {args.out} ({panels}; {marks_})")
    return 0
