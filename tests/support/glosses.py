"""Real labelled texts laid out as a user's own file would be: WordNet glosses of a few
lexicographer classes, under the column names and short label names a test chooses."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

from variants.dataset import load_snapshot


def glosses(kinds: tuple[str, ...], per_kind: int, text: str = "text", label: str = "label") -> list[dict]:
    """The first ``per_kind`` glosses of each class in ``kinds`` (short names: "animal" for
    noun.animal), in the snapshot's order."""
    per: Counter = Counter()
    rows = []
    for record in load_snapshot():
        kind = record["label"].removeprefix("noun.")
        if kind in kinds and per[kind] < per_kind:
            per[kind] += 1
            rows.append({text: record["text"], label: kind})
    return rows


def write_csv(path: Path, rows: list[dict], delimiter: str = ",") -> Path:
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]), delimiter=delimiter)
        writer.writeheader()
        writer.writerows(rows)
    return path
