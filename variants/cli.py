"""``slimgate variants ...``: init, build, list, show, eval, lineage, deployable, baseline."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path

from variants.hardware import cpu_flags, describe
from variants.registry import Registry, RegistryError, parse_ref

REPORT_DIR = "_reports"


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("variants", help="build and inspect model variants")
    p.add_argument(
        "--registry",
        type=Path,
        default=None,
        help="registry root (default: $SLIMGATE_REGISTRY or ~/.local/share/slimgate/registry)",
    )
    vs = p.add_subparsers(dest="variants_cmd", required=True)

    b = vs.add_parser("build", help="build every variant of a recipe, evaluate them, print the table")
    b.add_argument("--recipe", default="default", help="recipe YAML path or a bundled name (default, quick)")
    b.add_argument("--force", nargs="*", default=[], metavar="NAME", help="rebuild these even if unchanged")
    b.add_argument("--no-eval", action="store_true", help="build only")
    b.add_argument("--no-baseline", action="store_true", help="skip the TF-IDF baseline")
    b.add_argument("--quiet", action="store_true", help="no progress bars")
    b.set_defaults(func=cmd_build)

    i = vs.add_parser("init", help="write a recipe for your own data (and fine-tuned model) to edit")
    i.add_argument(
        "--data", type=Path, required=True, help="CSV, TSV, JSON Lines, Parquet or datasets folder"
    )
    i.add_argument("--text-column", default="text")
    i.add_argument("--label-column", default="label")
    i.add_argument("--group-column", default=None, help="rows sharing it stay in one split")
    i.add_argument("--split-column", default=None, help="each row's split, where the data has its own")
    i.add_argument("--teacher", type=Path, default=None, help="your fine-tuned classifier's folder")
    i.add_argument(
        "--base", default=None, help="a base encoder to fine-tune instead (default: all-MiniLM-L6-v2)"
    )
    i.add_argument(
        "--label-map", nargs="*", default=[], metavar="THEIRS=OURS", help="checkpoint label -> data label"
    )
    i.add_argument(
        "--profile", choices=["default", "quick"], default="default", help="quick: a small first build"
    )
    i.add_argument("--out", type=Path, default=Path("recipe.yaml"), help="the recipe file to write")
    i.add_argument("--force", action="store_true", help="overwrite --out")
    i.set_defaults(func=cmd_init)

    e = vs.add_parser("eval", help="(re-)evaluate the latest version of each variant")
    e.add_argument("--recipe", default="default")
    e.add_argument("--remeasure", action="store_true", help="measure again even if nothing changed")
    e.set_defaults(func=cmd_eval)

    ls = vs.add_parser("list", help="all registered versions")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_list)

    sh = vs.add_parser("show", help="one variant's manifest")
    sh.add_argument("ref", metavar="NAME[@VERSION]")
    sh.set_defaults(func=cmd_show)

    li = vs.add_parser("lineage", help="the lineage graph")
    li.add_argument("--image", type=Path, default=None, help="also write the graph as a PNG here")
    li.add_argument("--all-versions", action="store_true")
    li.set_defaults(func=cmd_lineage)

    d = vs.add_parser("deployable", help="mark a variant (not) deployable; refused when its gate failed")
    d.add_argument("ref", metavar="NAME[@VERSION]")
    d.add_argument("--off", action="store_true")
    d.set_defaults(func=cmd_deployable)


def _registry(args: argparse.Namespace) -> Registry:
    return Registry(args.registry)


def _report(reg: Registry, manifests, skipped, baseline, recipe_name: str) -> None:
    from variants import report

    out = reg.root / REPORT_DIR
    out.mkdir(parents=True, exist_ok=True)
    machine = describe()
    extra = {
        "recipe": recipe_name,
        "baseline_tfidf_logreg": baseline,
        "cpu_flags": cpu_flags(),
        "machine": machine,
    }
    (out / "evaluation.json").write_text(report.as_json(manifests, extra), encoding="utf-8")
    # Speed figures hold for the machine they were measured on, so the table names it.
    md = f"Measured on {machine}.\n\n" + report.markdown(manifests, skipped)
    if baseline:
        md += (
            f"\n\nBaseline (TF-IDF + logistic regression, same splits): accuracy {baseline['accuracy']:.4f}, "
            f"macro-F1 {baseline['macro_f1']:.4f}"
        )
    (out / "evaluation.md").write_text(md + "\n", encoding="utf-8")
    report.frontier_plot(manifests, out / "frontier.png")
    curves = report.cascade_curves_plot(manifests, out / "cascade-curves.png")
    print(md)
    print(
        f"\nreport: {out / 'evaluation.md'}, {out / 'evaluation.json'}, {out / 'frontier.png'}"
        + (f", {curves}" if curves else "")
    )


def _log_to_stderr(quiet: bool) -> None:
    logger = logging.getLogger("slimgate")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(logging.WARNING if quiet else logging.INFO)


def cmd_build(args: argparse.Namespace) -> int:
    from variants.assessment import assess
    from variants.data_sources import summary
    from variants.pipeline import build
    from variants.recipe import load_recipe

    recipe = load_recipe(args.recipe)
    reg = _registry(args)
    _log_to_stderr(args.quiet)
    ctx, outcomes = build(recipe, reg, progress=not args.quiet, force=frozenset(args.force))
    print("\ndata:")
    for line in summary(ctx.dataset):
        print(f"  {line}")
    print("\nbuild:")
    for o in outcomes:
        detail = o.ref or ""
        if o.reason:
            detail += f" ({o.reason})"
        print(
            f"  {o.name:22s} {o.status:8s} {detail}  {o.seconds:.0f}s"
            if o.status == "built"
            else f"  {o.name:22s} {o.status:8s} {detail}"
        )
    if args.no_eval:
        return 0
    manifests = assess(
        reg,
        list(ctx.built.values()),
        ctx.dataset,
        recipe,
        on_variant=lambda n: print(f"  evaluating {n} ...", file=sys.stderr),
    )
    baseline = None
    if not args.no_baseline:
        from variants.baseline import tfidf_logreg_baseline

        # On the very texts the variants were evaluated on, so that the two compare.
        test = ctx.dataset.test.subsample(recipe.evaluation.test_examples, seed=0)
        baseline = tfidf_logreg_baseline(dataclasses.replace(ctx.dataset, test=test))
    skipped = [(o.name, o.reason or "") for o in outcomes if o.status == "skipped"]
    print()
    _report(reg, manifests, skipped, baseline, str(args.recipe))
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    from variants.data_sources import load_data, summary
    from variants.recipe_init import make_recipe, render

    if args.out.exists() and not args.force:
        raise ValueError(f"{args.out} exists; choose another --out, or --force to replace it")
    pairs = [item.partition("=") for item in args.label_map]
    bad = [theirs for theirs, eq, ours in pairs if not eq or not theirs or not ours]
    if bad:
        raise ValueError(f"--label-map takes THEIRS=OURS pairs, got {bad}")
    recipe = make_recipe(
        args.data,
        text_column=args.text_column,
        label_column=args.label_column,
        group_column=args.group_column,
        split_column=args.split_column,
        teacher=args.teacher,
        base=args.base,
        label_map={theirs: ours for theirs, _, ours in pairs} or None,
        profile=args.profile,
        out_dir=args.out.parent,
    )
    header = (
        f"A slimgate recipe for {args.data.name}, written by `slimgate variants init` from the bundled "
        f"'{args.profile}' recipe.\nEdit any field; each is described above it. Build with:\n"
        f"  slimgate variants build --recipe {args.out}"
    )
    args.out.write_text(render(recipe, header), encoding="utf-8")
    print(f"wrote {args.out}")
    for line in summary(load_data(recipe)):
        print(f"  {line}")
    print(f"next: slimgate variants --registry REGISTRY build --recipe {args.out}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from variants.assessment import assess
    from variants.data_sources import load_data
    from variants.recipe import load_recipe

    recipe = load_recipe(args.recipe)
    reg = _registry(args)
    ds = load_data(recipe)
    manifests = assess(
        reg,
        reg.latest(),
        ds,
        recipe,
        remeasure=args.remeasure,
        on_variant=lambda n: print(f"  evaluating {n} ...", file=sys.stderr),
    )
    _report(reg, manifests, [], None, str(args.recipe))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    reg = _registry(args)
    items = [reg.get(n, v) for n in reg.names() for v in reg.versions(n)]
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "ref": m.ref,
                        "backend": m.backend,
                        "precision": m.precision,
                        "gate": m.gate.status,
                        "deployable": m.deployable,
                    }
                    for m in items
                ],
                indent=2,
            )
        )
        return 0
    if not items:
        print(f"no variants in {reg.root}")
        return 0
    print(
        f"{'variant':28s} {'backend/precision':28s} {'size MB':>8s} {'accuracy':>9s} {'gate':9s} "
        f"{'deployable':10s} created"
    )
    for m in items:
        acc = f"{m.metrics['accuracy']:.4f}" if m.metrics else "-"
        print(
            f"{m.ref:28s} {m.backend + '/' + m.precision:28s} {m.size_bytes / 2**20:8.1f} {acc:>9s} "
            f"{m.gate.status:9s} {str(m.deployable):10s} {m.created_at}"
        )
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    reg = _registry(args)
    m = reg.resolve(args.ref)
    doc = m.model_dump(mode="json")
    if doc.get("metrics"):
        doc["metrics"].pop("predictions", None)
        doc["metrics"].pop("full_test", None)
    doc["path"] = str(reg.path(m.name, m.version))
    print(json.dumps(doc, indent=2))
    return 0


def cmd_lineage(args: argparse.Namespace) -> int:
    from variants import lineage

    reg = _registry(args)
    if args.all_versions:
        manifests = [reg.get(n, v) for n in reg.names() for v in reg.versions(n)]
    else:
        manifests = reg.latest()
    if not manifests:
        print(f"no variants in {reg.root}")
        return 0
    print(lineage.text(manifests))
    if args.image:
        print(f"\nimage: {lineage.image(manifests, args.image)}")
    return 0


def cmd_deployable(args: argparse.Namespace) -> int:
    reg = _registry(args)
    name, version = parse_ref(args.ref)
    m = reg.set_deployable(name, version, not args.off)
    print(f"{m.ref}: deployable={m.deployable}")
    return 0


__all__ = ["add_commands", "RegistryError"]
