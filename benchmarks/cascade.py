"""Cascade benchmark: what a confidence cascade buys offline, through the gateway, and how fast its
escalation rate tells a shift in the traffic.

    python -m benchmarks.cascade [--registry R] [--then teacher-int8] [--seconds 20]
                                 [--intervals 100] [--interval-s 10] [--window-s 20] [--rate 20]

1. offline (no compute: read from the registry's evaluation): every cascade entry's test accuracy
   and escalation against both its stages, the escalation rate at which its curve first matches
   the second stage, and whether it stays above the first stage at every point;
2. gateway throughput: one gateway serving ``student-int8``, the second stage and the cascade of
   the two side by side; ``wrk`` (compiled, Debian package) posts one random test text per request
   at concurrency 32 to each in turn, pinned by header, so the cascade escalates the texts it
   would in production rather than one fixed text;
3. drift: steady traffic to the cascade (a Python client at ``--rate`` req/s: pacing, not
   throughput, is what matters here); every ``--interval-s`` the controller's own escalation-rate
   rule (the lineage default: calibrated escalation + 0.05, 99.9% binomial test) is evaluated
   over a real Prometheus. ``--intervals`` intervals of test-split texts count false alarms; then
   30% of the texts are WordNet verb glosses and the intervals until the rule fails are counted.

Figures are printed with the CPU they were measured on and written to reports/cascade.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import secrets
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.gateway_harness import gateway_config, say, serving

METRICS_PORT = 18180
PROMETHEUS_PORT = 19291
PIN = "x-slimgate-variant"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--registry", default=None)
    p.add_argument("--first", default="student-int8")
    p.add_argument("--then", default="teacher-int8")
    p.add_argument("--ref", default=None, help="the cascade entry; default cascade-<first>-to-<then>")
    p.add_argument("--seconds", type=float, default=20.0, help="wrk run per variant")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--intervals", type=int, default=100, help="in-distribution intervals judged")
    p.add_argument("--interval-s", type=float, default=10.0)
    p.add_argument("--window-s", type=float, default=20.0)
    p.add_argument("--rate", type=float, default=20.0, help="drift phase client requests per second")
    p.add_argument("--verb-share", type=float, default=0.3)
    p.add_argument("--also", default=None, help="one more variant measured beside them (e.g. teacher-onnx)")
    p.add_argument("--no-drift", action="store_true", help="skip the drift phase")
    p.add_argument("--out", type=Path, default=Path("reports/cascade.json"))
    a = p.parse_args(argv)
    if a.registry:
        os.environ["SLIMGATE_REGISTRY"] = a.registry
    os.environ.setdefault("SLIMGATE_ADMIN_TOKEN", secrets.token_urlsafe(16))
    from variants.hardware import describe

    out: dict[str, Any] = {"machine": describe()}
    say(f"machine: {out['machine']}")
    out["offline"] = offline(a.registry)
    cascade = a.ref or f"cascade-{a.first}-to-{a.then}"
    cfg = gateway_config(
        a.registry,
        {
            "both": {"ref": cascade, "cascade": {"first": "small", "then": "big"}},
            "small": {"ref": a.first, "batching": {"max_batch_size": 32}},
            "big": {"ref": a.then, "batching": {"max_batch_size": 32}},
            **({"also": {"ref": a.also, "batching": {"max_batch_size": 32}}} if a.also else {}),
        },
        **{"routing.stable": "both", "routing.weights": {"both": 100}},
    )
    with serving(cfg) as url:
        out["throughput"] = throughput(url, a)
        if not a.no_drift:
            out["drift"] = drift(url, cfg, a)
    out["cascade"] = cascade
    _print(out)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(out, indent=2))
    say(f"\nwritten to {a.out}")
    return 0


# -- 1. offline -------------------------------------------------------------------------------------
def offline(registry: str | None) -> list[dict[str, Any]]:
    from variants import Registry

    reg = Registry(registry)
    found = []
    for m in reg.latest():
        x = m.metrics or {}
        if m.backend != "cascade" or "cascade" not in x:
            continue
        c = x["cascade"]
        curves = c["curves"]
        row: dict[str, Any] = {
            "ref": m.ref,
            "stages": m.parents[:2],
            "accuracy": x["accuracy"],
            "escalation": c["escalation_rate"],
            "first_stage_accuracy": c["first_stage_accuracy"],
            "second_stage_accuracy": c["second_stage_accuracy"],
            "measure": c["measure"],
            "threshold": c["threshold"],
            "target": c.get("target"),
            "deployable": m.deployable,
            "expected_escalation": (m.calibration or {}).get("expected_escalation"),
        }
        for measure, pts in curves.items():
            match = next(
                (
                    e
                    for e, acc in zip(pts["escalation"], pts["accuracy"], strict=True)
                    if acc >= c["second_stage_accuracy"] - 1e-6  # stored to 6 decimals: a tie matches
                ),
                None,
            )
            bar = c["second_stage_accuracy"] - 0.001
            row[f"{measure}: matches second stage at escalation"] = match
            row[f"{measure}: within 0.1 point of it from escalation"] = next(
                (e for e, acc in zip(pts["escalation"], pts["accuracy"], strict=True) if acc >= bar - 1e-9),
                None,
            )
            row[f"{measure}: above first stage everywhere"] = all(
                acc >= c["first_stage_accuracy"] for acc in pts["accuracy"][1:]
            )
            row[f"{measure}: accuracy at 10/20/25/40%"] = [
                _at(pts, share) for share in (0.10, 0.20, 0.25, 0.40)
            ]
        found.append(row)
    return found


def _at(pts: dict[str, list[float]], share: float) -> float:
    i = min(range(len(pts["escalation"])), key=lambda j: abs(pts["escalation"][j] - share))
    return pts["accuracy"][i]


# -- 2. throughput ----------------------------------------------------------------------------------
def _wrk_script(texts: list[str], pin: str, path: Path) -> Path:
    bodies = ",\n".join(json.dumps(json.dumps({"inputs": [t]})) for t in texts)
    path.write_text(
        f"local bodies = {{\n{bodies}\n}}\n"
        "math.randomseed(os.time())\n"
        "request = function()\n"
        '  return wrk.format("POST", "/v1/predict", '
        f'{{["content-type"] = "application/json", ["{PIN}"] = "{pin}"}}, bodies[math.random(#bodies)])\n'
        "end\n"
    )
    return path


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def wrk(url: str, script: Path, seconds: float, concurrency: int) -> dict[str, Any]:
    args = ["wrk", "-t2", f"-c{concurrency}", f"-d{seconds:g}s", "--latency", "-s", str(script), url]
    text = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    lat = {}
    for q in ("50", "99"):
        m = re.search(rf"\s{q}(?:\.000)?%\s+([\d.]+)(us|ms|s)\b", text)
        lat[f"p{q}_ms"] = float(m.group(1)) * _UNITS[m.group(2)] if m else None
    return {"rps": rps, "non_2xx": int(errors.group(1)) if errors else 0, **lat}


def throughput(url: str, a: argparse.Namespace) -> dict[str, Any]:
    from variants.dataset import load_dataset

    texts = random.Random(0).sample(load_dataset().test.texts, 500)
    work = Path(tempfile.mkdtemp(prefix="slimgate-cascade-"))
    out: dict[str, Any] = {}
    for key in ("small", "big", "both", *(["also"] if a.also else [])):
        script = _wrk_script(texts, key, work / f"{key}.lua")
        wrk(url, script, 5, a.concurrency)  # warm-up
        out[key] = wrk(url, script, a.seconds, a.concurrency)
        say(f"  {key:6s} {out[key]}")
    out["cascade_over_teacher"] = out["both"]["rps"] / out["big"]["rps"]
    out["cascade_over_first"] = out["both"]["rps"] / out["small"]["rps"]
    if a.also:
        out["cascade_over_also"] = out["both"]["rps"] / out["also"]["rps"]
    return out


# -- 3. drift ---------------------------------------------------------------------------------------
def drift(url: str, raw: dict[str, Any], a: argparse.Namespace) -> dict[str, Any]:
    from serving.config import parse_config, pin_refs
    from serving.controller.rules import Outcome, evaluate
    from serving.controller.service import lineage_rules
    from serving.controller.sources import PrometheusSource
    from serving.ops.local_prometheus import LocalPrometheus
    from serving.tools.drill import SteadyLoad
    from variants.dataset import load_dataset, load_verb_glosses

    cfg = pin_refs(parse_config(raw, "benchmark"))
    rule = next(r for r in lineage_rules(cfg, "both") if r.signal == "escalation_rate")
    say(
        f"drift: rule {rule.name} (confidence {rule.confidence}), "
        f"window {a.window_s:g} s, every {a.interval_s:g} s"
    )
    base = random.Random(1).sample(load_dataset().test.texts, 3000)
    verbs = load_verb_glosses()
    n_verbs = round(len(base) * a.verb_share / (1 - a.verb_share))
    mixed = base + random.Random(2).sample(verbs, n_verbs)
    work = Path(tempfile.mkdtemp(prefix="slimgate-drift-"))
    prom = LocalPrometheus(work / "prom", PROMETHEUS_PORT, [f"127.0.0.1:{METRICS_PORT}"], scrape_s=2.0)
    src = PrometheusSource(prom.url)

    def judge() -> tuple[str, float | None, int]:
        m = src.measure("both", ["escalation_rate"], a.window_s, None)["escalation_rate"]
        return evaluate(rule, m).value, m.value, m.samples

    out: dict[str, Any] = {"rule": rule.name}
    try:
        with SteadyLoad(url, base, rate=a.rate):
            time.sleep(a.window_s + 5)  # a full window of in-distribution traffic
            outcomes = []
            for _ in range(a.intervals):
                time.sleep(a.interval_s)
                outcomes.append(judge())
        fails = sum(1 for o, _, _ in outcomes if o == Outcome.FAIL)
        rates = [v for _, v, _ in outcomes if v is not None]
        out["in_distribution"] = {
            "intervals": len(outcomes),
            "false_alarms": fails,
            "escalation_min_max": [min(rates), max(rates)] if rates else None,
        }
        say(f"  in-distribution: {out['in_distribution']}")
        with SteadyLoad(url, mixed, rate=a.rate):
            shifted = []
            for _ in range(10):
                time.sleep(a.interval_s)
                shifted.append(judge())
                if shifted[-1][0] == Outcome.FAIL:
                    break
        first = next((i for i, (o, _, _) in enumerate(shifted, 1) if o == Outcome.FAIL), None)
        out["verb_mix"] = {
            "verb_share": a.verb_share,
            "intervals_to_alarm": first,
            "escalation_at_alarm": shifted[-1][1],
            "samples": shifted[-1][2],
        }
        say(f"  {a.verb_share:.0%} verb glosses: {out['verb_mix']}")
    finally:
        prom.stop()
    return out


def _print(out: dict[str, Any]) -> None:
    say(f"\n== cascade benchmark ({out['machine']}) ==")
    for row in out["offline"]:
        say(
            f"{row['ref']}: accuracy {row['accuracy']:.4f} escalating {row['escalation']:.1%} "
            f"(first stage {row['first_stage_accuracy']:.4f}, second {row['second_stage_accuracy']:.4f}; "
            f"{row['measure']} < {row['threshold']:.4f}; deployable {row['deployable']})"
        )
        for k, v in row.items():
            if ":" in k:
                say(f"    {k}: {v}")
    t = out["throughput"]
    say(
        f"through the gateway (wrk, one random test text per request): first {t['small']['rps']:.0f}, "
        f"second {t['big']['rps']:.0f}, cascade {t['both']['rps']:.0f} req/s: "
        f"{t['cascade_over_teacher']:.2f}x the second stage (target >= 2.5x), "
        f"{t['cascade_over_first']:.2f}x the first (target >= 0.5x)"
    )
    if "cascade_over_also" in t:
        say(f"  beside {t['also']['rps']:.0f} req/s of the extra variant: {t['cascade_over_also']:.2f}x")
    if "drift" not in out:
        return
    d = out["drift"]
    say(
        f"drift ({d['rule']}): {d['in_distribution']['false_alarms']} false alarms over "
        f"{d['in_distribution']['intervals']} intervals (target 0); "
        f"{d['verb_mix']['verb_share']:.0%} verb glosses raise it after "
        f"{d['verb_mix']['intervals_to_alarm']} intervals (target <= 3)"
    )


if __name__ == "__main__":
    raise SystemExit(main())
