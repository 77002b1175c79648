"""The user's own labelled texts as a :class:`~variants.dataset.Dataset`: label table and splits.

A source is one file or folder holding every row, or one file per split (read by
:mod:`variants.data_readers`). The recipe's column mapping says which column holds the text, the
label, and optionally a group key (rows sharing it stay in one split) and the split. The label
table comes from the data (sorted) unless the recipe lists it; from 2 labels upwards.

Splits are the user's own when the data carries them (a split column, one file per split, a
``DatasetDict``); otherwise they are drawn here: grouped (by the group key, else by the text, so
copies of a text never straddle splits), deterministic in the seed, and stratified so that every
label reaches every split. Texts of validation or test that an earlier split already holds are
leakage: they are dropped there, and the counts reported in the build output and the manifests.
Every problem is a :class:`DataError` raised before anything is built.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from variants.data_readers import SPLITS, DataError, Row, read_rows
from variants.dataset import Dataset, Example, Split, bucket, load_dataset
from variants.recipe import DataConfig, DataSource, Recipe

__all__ = ["DataError", "load_data", "load_source", "summary"]


def _label_table(rows: list[Row], source: DataSource, origin: str) -> tuple[str, ...]:
    counts = Counter(r.label for r in rows)
    if source.labels is None:
        labels = tuple(sorted(counts))
    else:
        labels = tuple(source.labels)
        listed = set(labels)
        for r in rows:
            if r.label not in listed:
                raise DataError(f"{r.where}: label {r.label!r} is not in data.source.labels {list(labels)}")
        absent = [label for label in labels if label not in counts]
        if absent:
            raise DataError(f"{origin}: data.source.labels lists {absent}, which no row carries")
    if len(labels) < 2:
        raise DataError(f"{origin}: a classifier needs at least 2 labels; the data has {list(labels)}")
    return labels


def _draw_splits(rows: list[Row], data: DataConfig, origin: str) -> dict[str, list[Row]]:
    """Grouped, stratified, seed-stable: every label's groups are ordered by a hash of (seed,
    group), and its first share goes to test, the next to validation, the rest to train."""
    members: dict[str, list[Row]] = defaultdict(list)
    for r in rows:
        members[r.group if r.group is not None else r.text].append(r)
    by_label: dict[str, list[str]] = defaultdict(list)
    for group, its in members.items():
        counts = Counter(r.label for r in its)
        top = max(counts.values())
        by_label[min(label for label, c in counts.items() if c == top)].append(group)
    wanted = {"test": data.test_fraction, "validation": data.validation_fraction}
    needed = 1 + sum(1 for f in wanted.values() if f > 0)
    assigned: dict[str, str] = {}
    for label, groups in sorted(by_label.items()):
        if len(groups) < needed:
            n_rows = sum(len(members[g]) for g in groups)
            unit = "groups" if data.source and data.source.group_column else "distinct texts"
            raise DataError(
                f"{origin}: label {label!r} has {len(groups)} {unit} ({n_rows} rows); it needs at "
                f"least {needed} to reach {' and '.join(['train', *[s for s, f in wanted.items() if f > 0]])}"
            )
        groups.sort(key=lambda g: bucket(data.seed, g))
        n = len(groups)
        n_test = max(1, round(wanted["test"] * n)) if wanted["test"] > 0 else 0
        n_val = max(1, round(wanted["validation"] * n)) if wanted["validation"] > 0 else 0
        while n_test + n_val > n - 1:  # train keeps at least one group
            if n_test >= n_val and n_test > 1:
                n_test -= 1
            else:
                n_val -= 1
        for i, g in enumerate(groups):
            assigned[g] = "test" if i < n_test else "validation" if i < n_test + n_val else "train"
    parts: dict[str, list[Row]] = {name: [] for name in SPLITS}
    for r in rows:
        parts[assigned[r.group if r.group is not None else r.text]].append(r)
    return parts


def _drop_leaks(parts: dict[str, list[Row]]) -> dict[str, int]:
    """Drop texts of validation and test already seen in an earlier split; counts per split."""
    seen = {r.text for r in parts["train"]}
    dropped = {}
    for name in ("validation", "test"):
        kept = [r for r in parts[name] if r.text not in seen]
        dropped[name] = len(parts[name]) - len(kept)
        seen.update(r.text for r in kept)
        parts[name] = kept
    return dropped


def _describe(source: DataSource) -> dict[str, Any]:
    return {k: v for k, v in source.model_dump(mode="json").items() if v is not None}


def load_source(data: DataConfig, base: Path | None = None) -> Dataset:
    """The recipe's data source as a :class:`Dataset`; relative paths are from ``base``."""
    source = data.source
    if source is None:
        raise ValueError("load_source needs data.source; the bundled WordNet task is variants.dataset")
    base = base or Path.cwd()
    origin = str(base / source.path) if source.path is not None else str(base / str(source.train))
    rows = list(read_rows(source, base))
    if not rows:
        raise DataError(f"{origin}: no rows")
    declared = [r.split is not None for r in rows]
    if any(declared) and not all(declared):
        first = rows[declared.index(False)]
        raise DataError(f"{first.where}: no split, though other rows carry one")
    labels = _label_table(rows, source, origin)
    if all(declared):
        parts: dict[str, list[Row]] = {name: [r for r in rows if r.split == name] for name in SPLITS}
        rule = "the data's own"
    else:
        parts = _draw_splits(rows, data, origin)
        rule = f"grouped by {source.group_column or 'text'}, stratified by label, seed {data.seed}"
    dropped = _drop_leaks(parts)
    for name in SPLITS:
        present = Counter(r.label for r in parts[name])
        missing = [label for label in labels if label not in present]
        if missing:
            raise DataError(
                f"{origin}: the {name} split has no rows of label(s) {missing}"
                + (" after dropping texts already in an earlier split" if dropped.get(name) else "")
            )
    splits = {
        name: Split(
            name,
            tuple(
                Example(r.text, r.label, r.group if r.group is not None else r.text, f"{i:09d}")
                for i, r in enumerate(parts[name])
            ),
            labels,
        )
        for name in SPLITS
    }
    info = {
        "source": _describe(source),
        "splits": rule,
        "rows": {name: len(parts[name]) for name in SPLITS},
        "cross_split_duplicates_dropped": dropped,
    }
    return Dataset(splits["train"], splits["validation"], splits["test"], info=info)


def summary(ds: Dataset) -> list[str]:
    """The build output's lines about the data: source, split sizes, labels, leakage dropped."""
    source = ds.info.get("source") or "data"
    named = source if isinstance(source, str) else source.get("path") or source.get("train")
    lines = [
        f"{named}: train {len(ds.train)}, validation {len(ds.validation)}, test {len(ds.test)} texts; "
        f"{len(ds.labels)} labels; splits {ds.info.get('splits')}"
    ]
    dropped = ds.info.get("cross_split_duplicates_dropped") or {}
    if any(dropped.values()):
        parts = ", ".join(f"{n} from {name}" for name, n in dropped.items() if n)
        lines.append(f"dropped texts an earlier split already holds (leakage): {parts}")
    return lines


def load_data(recipe: Recipe) -> Dataset:
    """The data a recipe builds from: its source, or the bundled WordNet task when it names none;
    with a fine-tuned teacher, its label table is in the teacher's class order."""
    if recipe.data.source is None:
        ds = load_dataset(
            validation_fraction=recipe.data.validation_fraction,
            test_fraction=recipe.data.test_fraction,
            seed=recipe.data.seed,
        )
    else:
        ds = load_source(recipe.data, recipe.base_dir)
    if recipe.teacher.checkpoint is not None:
        from variants.checkpoints import label_table

        ds = ds.relabelled(label_table(recipe, ds.labels))
    return ds
