"""The demo's gateway config, derived from what the build made deployable: which variant plays which role.

``slimgate demo`` builds a recipe, then serves it; a fixed config would name variants the build may
have rejected. This module owns the rules that turn the registry's evaluation into a config, and the
drill's promotion candidate; each choice comes with a line saying why, with the figures. The rules,
on the latest version of each variant:

* **Candidates**: deployable, device cpu, not a cascade, with accuracy and throughput (texts/s at
  batch 32, one harness for all); every role but stable needs stable's label table.
* **Cheapest** (:func:`_cheapest`): throughputs within ``SAME_SPEED`` of the fastest are one price
  (one timed run does not separate them); of those the smallest artifact, then the most accurate,
  then the simpler build (fewer parents).
* **stable**: the cheapest candidate whose accuracy beats the TF-IDF baseline
  (``<registry>/_reports/evaluation.json``; none recorded: the rule is skipped, and said so). None:
  :class:`NoServableVariant`, whose message lists every variant's figures and gate, and what to do.
* **shadow**: the most accurate other candidate (the reference), a deployment with ``progressive: false``.
* **canary**: the cheapest remaining candidate at least ``CANARY_GAIN`` more accurate than stable
  (one as accurate but dearer has nothing to try out), in the router at the base config's weight.
* **cascade**: a deployable cascade whose stages are configured or can be added (pinned, weight 0),
  served pinned-only; preferred: fewest added stages, not staged on the canary, most accurate.
* **promotion candidate** (the drill's step 2 replaces the canary by it): a remaining candidate
  above the baseline with stable's labels and format that the speed gate
  (:mod:`serving.controller.speed`) will not hold on the offline figures, without its tolerance.
  Preferred: a sibling of stable, then one at least as fast as stable, then the fastest.
* **brownout targets**: what :mod:`serving.brownout_plan` derives from the chosen config, printed.

Any role but stable may be missing. Every ref is pinned (``name@version``). The base config
(``serving/configs/default.yaml``) gives everything else, and each role's deployment settings.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from serving.config import REMOVE, ConfigError, GatewayConfig, load_config
from variants.cli import REPORT_DIR
from variants.registry import Manifest, Registry

Lookup = Callable[[str], Manifest | None]  # a ref -> its manifest, None when not registered
BASELINE_REPORT = Path(REPORT_DIR) / "evaluation.json"  # written by `slimgate variants build`
FALLBACK = {
    "stable": {"placement": "router", "threads": 1},
    "canary": {"placement": "router", "threads": 1},
    "shadow": {"placement": "deployment", "replicas": 1, "threads": 1},
}
# Throughputs this close to the fastest (a share of it) are one price: one timed run of a variant
# moves by 10-20% between runs on a shared 2-core machine.
SAME_SPEED = 0.2
CANARY_GAIN = 0.005  # half a point of test accuracy over stable
# Fields that belong to one artifact, not to a role: never copied from the base config's variant.
ARTIFACT_FIELDS = ("ref", "cascade", "backend", "device", "precision", "faults")


class NoServableVariant(ValueError):
    """No variant may serve as stable; the message lists every variant's figures and what to do."""


@dataclass(frozen=True)
class Selection:
    """The derived config, the manifest chosen for each role (None: no such role) and the reasons."""

    config: GatewayConfig
    stable: Manifest
    canary: Manifest | None
    shadow: Manifest | None
    cascade: Manifest | None
    promotion: Manifest | None
    lines: tuple[str, ...]


def _cheapest(ms: list[Manifest]) -> tuple[Manifest, str]:
    """The cheapest of ``ms`` and, where that took more than throughput, why: those within
    ``SAME_SPEED`` of the fastest are one price, the smallest of them (within as much) the cheaper
    to host, then the most accurate, then the simpler build (fewer parents)."""
    fastest = max(_tput(m) for m in ms)
    quick = [m for m in ms if _tput(m) >= (1 - SAME_SPEED) * fastest]
    least = min(m.size_bytes for m in quick)
    small = [m for m in quick if m.size_bytes <= (1 + SAME_SPEED) * least]
    best = min(small, key=lambda m: (-_acc(m), len(m.parents), -_tput(m), m.name))
    why = f" ({len(quick)} within {SAME_SPEED:.0%} of the fastest: the smallest, then the most accurate)"
    return best, why * (len(quick) > 1)


def _acc(m: Manifest) -> float:
    return float((m.metrics or {})["accuracy"])


def _tput(m: Manifest) -> float:
    return float((m.metrics or {})["throughput_per_s"])


def _figures(m: Manifest) -> str:
    return f"accuracy {_acc(m):.4f}, {_tput(m):.0f} texts/s"


def _has_figures(m: Manifest) -> bool:
    x = m.metrics or {}
    return x.get("accuracy") is not None and x.get("throughput_per_s") is not None


def _servable(m: Manifest) -> bool:
    return m.deployable and m.gate.status == "passed"


def _gate(m: Manifest) -> str:
    return f"gate {m.gate.status}" + (f" ({m.gate.reason})" if m.gate.reason else "")


def _left_out(m: Manifest) -> str:
    """Why a variant is not a candidate, in a few words."""
    if not _servable(m):
        return f"gate {m.gate.status}" if m.gate.status != "passed" else "marked not deployable"
    return f"device {m.device}" if m.device != "cpu" else "no figures"


def read_baseline(root: Path) -> float | None:
    """The TF-IDF baseline's test accuracy recorded by the build, None when absent."""
    try:
        doc = json.loads((root / BASELINE_REPORT).read_text(encoding="utf-8"))
        return float(doc["baseline_tfidf_logreg"]["accuracy"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def candidates(manifests: Iterable[Manifest]) -> list[Manifest]:
    """The variants a role may go to (module docstring), in name order."""
    ok = [m for m in manifests if _servable(m) and m.device == "cpu" and m.backend != "cascade"]
    return sorted((m for m in ok if _has_figures(m)), key=lambda m: m.name)


def _nothing_servable(manifests: list[Manifest], baseline: float | None, root: Path) -> NoServableVariant:
    where = f"the registry at {root}"
    if not manifests:
        return NoServableVariant(
            f"{where} holds no variants: build them first (`slimgate variants build --recipe quick`)"
        )
    bar = (
        "; no TF-IDF baseline is recorded"
        if baseline is None
        else f" whose accuracy beats the TF-IDF baseline (baseline accuracy {baseline:.4f})"
    )
    rows = []
    for m in sorted(manifests, key=lambda m: m.name):
        x = m.metrics or {}
        acc, tput = x.get("accuracy"), x.get("throughput_per_s")
        rows.append(
            f"  {m.ref:28s} {m.device:4s} accuracy {'-' if acc is None else f'{acc:.4f}':6s}  "
            f"{'-' if tput is None else f'{tput:.0f}':>6s} texts/s  deployable={m.deployable}  {_gate(m)}"
        )
    return NoServableVariant(
        f"no variant in {where} can serve as stable: it takes a deployable CPU variant with figures{bar}.\n"
        + "\n".join(rows)
        + "\nWhat to do: build the default recipe, which trains longer than the quick profile "
        "(`slimgate variants build`), or check the recipe's gate (`gate.min_retention`) against the "
        "figures above; `slimgate demo --config FILE` serves a config of your own."
    )


def _role_spec(base: GatewayConfig, key: str | None, role: str, ref: str) -> dict[str, Any]:
    """``ref`` deployed as the base config deploys its variant of this role (placement, threads...)."""
    if key is None or key not in base.variants:
        return {**FALLBACK[role], "ref": ref}
    spec = base.variants[key].model_dump(mode="json", exclude_defaults=True)
    return {**{k: v for k, v in spec.items() if k not in ARTIFACT_FIELDS}, "ref": ref}


def _base_roles(base: GatewayConfig) -> tuple[str | None, str | None, int]:
    """The base config's canary and shadow keys, and its canary's weight."""
    canary = running_canary(base)
    shadow = next((k for k in base.shadow.variants if base.variants[k].cascade is None), None)
    return canary, shadow, base.routing.weights.get(canary, 10) if canary else 10


def choose(
    manifests: list[Manifest], baseline: float | None, base: GatewayConfig, root: Path, lookup: Lookup
) -> Selection:
    """The roles, the config that serves them and one line per choice (pure but for ``lookup``)."""
    lines = []
    pool = candidates(manifests)
    left = sorted(f"{m.ref} ({_left_out(m)})" for m in manifests if m.backend != "cascade" and m not in pool)
    lines.append(
        f"candidates: {', '.join(m.ref for m in pool) or 'none'} (deployable, cpu, with figures)"
        + (f"; left out: {', '.join(left)}" if left else "")
    )
    if baseline is None:
        lines.append(f"baseline: none recorded in {root / BASELINE_REPORT}; the baseline rule is skipped")
        above = pool
    else:
        above = [m for m in pool if _acc(m) > baseline]
        below = [m.ref for m in pool if m not in above]
        lines.append(
            f"baseline: TF-IDF accuracy {baseline:.4f}; "
            + (f"not beaten by {', '.join(below)}" if below else "every candidate beats it")
        )
    if not above:
        raise _nothing_servable(manifests, baseline, root)
    stable, why = _cheapest(above)
    what = "candidate" if baseline is None else "candidate above the baseline"
    lines.append(f"stable: {stable.ref}, the cheapest {what}{why}: {_figures(stable)}")
    others = [m for m in pool if m.name != stable.name and m.labels == stable.labels]
    shadow = min(others, key=lambda m: (-_acc(m), -_tput(m), m.name), default=None)
    lines.append(
        f"shadow: {shadow.ref}, the most accurate other candidate (the reference): {_figures(shadow)}"
        if shadow
        else "shadow: none (no other candidate)"
    )
    better = [m for m in others if m is not shadow and _acc(m) >= _acc(stable) + CANARY_GAIN]
    canary, why = _cheapest(better) if better else (None, "")
    base_canary, base_shadow, weight = _base_roles(base)
    lines.append(
        f"canary: {canary.ref} at {weight}%, the cheapest remaining candidate at least {100 * CANARY_GAIN:g} "
        f"point more accurate than stable{why}: {_figures(canary)}"
        if canary
        else f"canary: none (no remaining candidate is {100 * CANARY_GAIN:g} point more accurate than "
        f"stable's {_acc(stable):.4f}); "
        "the drill will skip"
    )
    variants: dict[str, Any] = {stable.name: _role_spec(base, base.routing.stable, "stable", stable.ref)}
    weights = {stable.name: 100}
    if canary:
        variants[canary.name] = _role_spec(base, base_canary, "canary", canary.ref)
        weights = {stable.name: 100 - weight, canary.name: weight}
    if shadow:
        variants[shadow.name] = {**_role_spec(base, base_shadow, "shadow", shadow.ref), "progressive": False}
    cascade, line = _cascade(manifests, variants, stable, canary, lookup, base)
    lines.append(line)
    if cascade:
        weights[cascade.name] = 0
    changes = {
        "variants": variants,
        "routing.stable": stable.name,
        "routing.weights": weights,
        "shadow.variants": [shadow.name] if shadow else [],
        "registry": str(base.registry or root),
        "slo.brownout_to": {k: v for k, v in base.slo.brownout_to.items() if {k, v} <= variants.keys()},
    }
    cfg = base.with_changes(changes, "the config derived from the registry")
    promotion, why = promotion_candidate(cfg, manifests, lookup, baseline)
    skip = "" if promotion else "; the drill's step 2 will skip"
    lines.append(f"promotion candidate for the drill: {why if promotion else 'none (' + why + ')'}{skip}")
    return Selection(cfg, stable, canary, shadow, cascade, promotion, tuple(lines))


def _cascade(
    manifests: list[Manifest],
    variants: dict[str, Any],
    stable: Manifest,
    canary: Manifest | None,
    lookup: Lookup,
    base: GatewayConfig,
) -> tuple[Manifest | None, str]:
    """The cascade served pinned-only (added to ``variants`` with any stage it needs), and its line."""
    entries = [m for m in manifests if m.backend == "cascade"]
    if not entries:
        return None, "cascade: none in the registry"
    passed = [m for m in entries if _servable(m)]
    if not passed:
        gates = "; ".join(f"{m.ref}: {_gate(m)}" for m in sorted(entries, key=lambda m: m.name))
        return None, f"cascade: none served, no cascade passed its gates ({gates})"
    if base.routing.pin_header is None:
        return None, "cascade: none served (routing.pin_header is off: nothing could reach it)"
    by_ref = {spec["ref"]: key for key, spec in variants.items()}
    options, problems = [], []
    for m in passed:
        added, why = {}, None
        for ref in m.parents[:2]:
            if ref in by_ref:
                continue
            s = lookup(ref)
            if s is None or not _servable(s) or s.device != "cpu" or s.labels != stable.labels:
                why = f"its stage {ref} cannot be served here"
            elif s.name in variants:
                why = f"its stage {ref} is configured at {variants[s.name]['ref']}"
            else:
                added[s.name] = s.ref
        if m.labels != stable.labels or not _has_figures(m):
            why = "its labels differ from stable's" if _has_figures(m) else "it has no figures"
        if why:
            problems.append(f"{m.ref}: {why}")
            continue
        on_canary = canary is not None and canary.ref in m.parents[:2]
        options.append(((len(added), on_canary, -_acc(m), m.name), m, added))
    if not options:
        return None, f"cascade: none served ({'; '.join(problems)})"
    _, m, added = min(options, key=lambda o: o[0])
    for name, ref in added.items():
        variants[name] = {**FALLBACK["stable"], "ref": ref}
    keys = {**by_ref, **{ref: name for name, ref in added.items()}}
    first, then = (keys[r] for r in m.parents[:2])
    variants[m.name] = {"ref": m.ref, "cascade": {"first": first, "then": then}}
    esc = ((m.metrics or {}).get("cascade") or {}).get("escalation_rate")
    at = f" at {esc:.1%} escalation" if esc is not None else ""
    extra = f"; stages added at weight 0: {', '.join(added.values())}" if added else ""
    return m, (
        f"cascade: {m.ref} pinned-only (weight 0; header {base.routing.pin_header}: {m.name}), "
        f"{first} -> {then}: accuracy {_acc(m):.4f}{at}, {_tput(m):.0f} texts/s{extra}"
    )


def swap_changes(cfg: GatewayConfig, canary: str | None, name: str, ref: str, weight: int) -> dict[str, Any]:
    """The drill's step 2 as config changes: ``canary`` (and any cascade staged on it) replaced by
    ``name`` (``ref``) at ``weight``%; other pinned-only variants stay."""
    gone = {canary} if canary else set()
    gone |= {k for k, s in cfg.variants.items() if s.cascade and canary in (s.cascade.first, s.cascade.then)}
    stable = cfg.routing.stable
    weights = {k: 0 for k in cfg.routing.weights if k not in gone}
    changes: dict[str, Any] = {f"variants.{k}": REMOVE for k in sorted(gone)}
    changes[f"variants.{name}"] = {"ref": ref, "threads": 1}
    changes["routing.weights"] = {**weights, stable: 100 - weight, name: weight}
    changes["shadow.variants"] = [k for k in cfg.shadow.variants if k not in gone]
    changes["slo.brownout_to"] = {k: v for k, v in cfg.slo.brownout_to.items() if not {k, v} & gone}
    return changes


def running_canary(cfg: GatewayConfig) -> str | None:
    """The drill's canary: the variant with traffic other than stable."""
    stable = cfg.routing.stable
    return next((k for k, w in sorted(cfg.routing.weights.items()) if k != stable and w > 0), None)


def promotion_candidate(
    cfg: GatewayConfig, manifests: list[Manifest], lookup: Lookup, baseline: float | None
) -> tuple[Manifest | None, str]:
    """The drill's step-2 candidate for ``cfg`` (module docstring), and why it (or nothing) was chosen."""
    from serving.controller.service import descends_from

    def manifest_of(ref: str) -> tuple[str, tuple[str, ...]] | None:
        m = lookup(ref)
        return None if m is None else (m.ref, tuple(m.parents))

    stable_ref = cfg.variants[cfg.routing.stable].ref
    stable_m = lookup(stable_ref)
    if stable_m is None or not _has_figures(stable_m):
        return None, f"stable ({stable_ref}) has no registry figures to compare with"
    configured = {s.name for s in cfg.variants.values()}
    canary = running_canary(cfg)
    first = cfg.rollout.steps[0]
    ranked, held = [], []
    for m in candidates(manifests):
        if m.name in configured or m.labels != stable_m.labels or m.format != stable_m.format:
            continue
        if baseline is not None and _acc(m) <= baseline:
            continue
        try:
            after = cfg.with_changes(swap_changes(cfg, canary, m.name, m.ref, first), "the drill's step 2")
        except ConfigError:
            continue  # the swap would not be a valid config: not a candidate for this drill
        claims = descends_from(after, m.name, manifest_of) if after.rollout.speed_gate.enabled else []
        slower = []
        for k in claims:
            r = lookup(after.variants[k].ref)
            if r is not None and _has_figures(r) and _tput(r) > _tput(m):
                slower.append(f"{k} {_tput(r):.0f}")
        if slower:
            held.append(f"{m.ref} ({_tput(m):.0f} texts/s, slower than {', '.join(slower)})")
            continue
        sibling = bool(set(m.parents) & set(stable_m.parents))
        ranked.append(((not sibling, _tput(m) < _tput(stable_m), -_tput(m), m.name), m, sibling, claims))
    if not ranked:
        why = f"; held by the speed gate: {', '.join(held)}" if held else ""
        above = "" if baseline is None else " above the baseline"
        return None, f"no other deployable {stable_m.format} variant{above} with stable's labels{why}"
    _, m, sibling, claims = min(ranked, key=lambda r: r[0])
    kin = "shares a parent with stable" if sibling else "not a sibling of stable"
    gate = f"as fast as {', '.join(claims)}, which it descends from" if claims else "it claims nothing"
    return m, (
        f"{m.ref} ({_figures(m)}; stable {_tput(stable_m):.0f} texts/s): {m.format} like stable, {kin}; "
        f"the speed gate will not hold it ({gate})"
    )


def select(registry: Registry, base: GatewayConfig | None = None) -> Selection:
    """:func:`choose` on the registry's latest versions and recorded baseline, plus the brownout line."""
    from serving.brownout_plan import brownout_targets, offline_figures

    root = registry.root.resolve()
    found = choose(registry.latest(), read_baseline(root), base or load_config(), root, registry.lookup)
    cfg = found.config
    if cfg.slo.objective_s is None:
        line = "brownout: none (the SLO guard is off: slo.objective_s is null)"
    else:
        targets = brownout_targets(cfg, offline_figures(cfg))
        plan = ", ".join(f"{k} -> {targets.get(k, 'none')}" for k in cfg.traffic_variants())
        slo = f"{cfg.slo.quantile} {cfg.slo.objective_s * 1000:g} ms"
        line = f"brownout targets (serving/brownout_plan.py, SLO {slo}): {plan}"
    return replace(found, lines=(*found.lines, line))


def to_yaml(selection: Selection) -> str:
    """The derived config as YAML for ``slimgate serve``, headed by the lines that chose it."""
    data = selection.config.model_dump(mode="json", exclude_defaults=True, exclude={"admin": {"token"}})
    head = "".join(f"# {line}\n" for line in selection.lines)
    intro = "# Derived from the registry by slimgate (rules: serving/tools/selection.py).\n"
    return intro + head + yaml.safe_dump(data, sort_keys=False)
