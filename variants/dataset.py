"""The labelled examples every build reads, and the bundled reference task: WordNet nouns.

Owns :class:`Dataset` (three splits and their label table, whatever the source) and the
reference data set: the shipped WordNet noun snapshot, its label table (``LABELS``), its record
validation and its headword-grouped, seed-stable split. The user's own data sources are read and
split by :mod:`variants.data_sources` into the same :class:`Dataset`.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import random
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

# WordNet 3.0 noun lexicographer files 03..28; plain sorted() order ("noun.Tops" first).
LABELS: tuple[str, ...] = tuple(
    sorted(
        [
            "noun.Tops",
            "noun.act",
            "noun.animal",
            "noun.artifact",
            "noun.attribute",
            "noun.body",
            "noun.cognition",
            "noun.communication",
            "noun.event",
            "noun.feeling",
            "noun.food",
            "noun.group",
            "noun.location",
            "noun.motive",
            "noun.object",
            "noun.person",
            "noun.phenomenon",
            "noun.plant",
            "noun.possession",
            "noun.process",
            "noun.quantity",
            "noun.relation",
            "noun.shape",
            "noun.state",
            "noun.substance",
            "noun.time",
        ]
    )
)
SNAPSHOT_PATH: Path = Path(__file__).resolve().parent / "data" / "wordnet_nouns.jsonl.gz"
# WordNet's verb glosses: text of another distribution (no labels of this task), for shift drills.
VERB_GLOSSES_PATH: Path = Path(__file__).resolve().parent / "data" / "wordnet_verb_glosses.jsonl.gz"

_LABEL_INDEX = {label: i for i, label in enumerate(LABELS)}
WORDNET_SOURCE = {"source": "bundled WordNet 3.0 noun snapshot", "splits": "grouped by headword"}
_REQUIRED_KEYS = ("offset", "label", "words", "text")


@dataclass(frozen=True)
class Example:
    """One labelled text. Examples sharing a ``group`` stay in one split (WordNet: the lower-cased
    first lemma); ``id`` orders a split and names the example (WordNet: the synset's offset)."""

    text: str
    label: str
    group: str
    id: str


@dataclass(frozen=True)
class Split:
    name: str
    examples: tuple[Example, ...]
    label_names: tuple[str, ...] = LABELS

    def __len__(self) -> int:
        return len(self.examples)

    @property
    def texts(self) -> list[str]:
        return [e.text for e in self.examples]

    @property
    def labels(self) -> list[str]:
        return [e.label for e in self.examples]

    @property
    def label_ids(self) -> list[int]:
        index = {label: i for i, label in enumerate(self.label_names)}
        return [index[e.label] for e in self.examples]

    @cached_property
    def content_hash(self) -> str:
        """sha256 of one compact JSON array per example, in order; the split name is excluded."""
        digest = hashlib.sha256()
        for e in self.examples:
            row = [e.id, e.label, e.group, e.text]
            digest.update(json.dumps(row, ensure_ascii=False, separators=(",", ":")).encode())
            digest.update(b"\n")
        return digest.hexdigest()

    def subsample(self, n: int | None, seed: int) -> Split:
        """Deterministic random subset of ``n`` examples, kept in their original order."""
        if n is None or n >= len(self.examples):
            return self
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        keep = sorted(random.Random(seed).sample(range(len(self.examples)), n))
        return Split(self.name, tuple(self.examples[i] for i in keep), self.label_names)


@dataclass(frozen=True)
class Dataset:
    train: Split
    validation: Split
    test: Split
    # Where the data came from and how it was split, for manifests and the build output.
    info: dict[str, Any] = field(default_factory=lambda: dict(WORDNET_SOURCE), compare=False)

    @property
    def labels(self) -> tuple[str, ...]:
        """The label table: class i of every variant built from this data is labels[i]."""
        return self.train.label_names

    def relabelled(self, order: tuple[str, ...]) -> Dataset:
        """The same examples with the label table in ``order`` (a fine-tuned teacher's classes)."""
        if sorted(order) != sorted(self.labels):
            raise ValueError(f"label order {list(order)} is not a permutation of {list(self.labels)}")
        train, validation, test = (
            Split(s.name, s.examples, tuple(order)) for s in (self.train, self.validation, self.test)
        )
        return Dataset(train, validation, test, info={**self.info, "label_order": "the teacher checkpoint's"})

    def hashes(self) -> dict[str, str]:
        return {s.name: s.content_hash for s in (self.train, self.validation, self.test)}


def load_verb_glosses(path: Path | None = None) -> list[str]:
    """The verb glosses' texts, in offset order (see ``variants.data.make_snapshot``)."""
    path = Path(path) if path is not None else VERB_GLOSSES_PATH
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        texts = [json.loads(line)["text"] for line in fh if line.strip()]
    if not texts:
        raise ValueError(f"verb glosses {path} are empty")
    return texts


def load_snapshot(path: Path | None = None) -> list[dict[str, Any]]:
    """Read the gzip JSON-lines snapshot into raw records, validating every record."""
    path = Path(path) if path is not None else SNAPSHOT_PATH
    if not path.is_file():
        raise FileNotFoundError(f"WordNet snapshot not found: {path}")
    records: list[dict[str, Any]] = []
    try:
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                record = json.loads(line)
                _check_record(record, f"{path}:{lineno}")
                records.append(record)
    except (OSError, EOFError, zlib.error, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"corrupt WordNet snapshot {path}: {exc}") from exc
    if not records:
        raise ValueError(f"WordNet snapshot {path} has no records")
    return records


def _check_record(record: object, where: str) -> None:
    if not isinstance(record, dict) or any(k not in record for k in _REQUIRED_KEYS):
        raise ValueError(f"{where}: record must be an object with keys {_REQUIRED_KEYS}")
    if record["label"] not in _LABEL_INDEX:
        raise ValueError(f"{where}: unknown label {record['label']!r}")
    words = record["words"]
    if not isinstance(words, list) or not words or not all(isinstance(w, str) and w for w in words):
        raise ValueError(f"{where}: 'words' must be a non-empty list of strings")
    if not isinstance(record["text"], str) or not record["text"].strip():
        raise ValueError(f"{where}: 'text' must be a non-empty string")


def _check_fractions(validation_fraction: float, test_fraction: float) -> None:
    for name, value in (("validation_fraction", validation_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= value < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {value!r}")
    if validation_fraction + test_fraction >= 1.0:
        raise ValueError(
            "validation_fraction + test_fraction must be < 1, got "
            f"{validation_fraction!r} + {test_fraction!r}"
        )


def bucket(seed: int, group: str) -> float:
    """Uniform [0, 1) position of a group; depends only on (seed, group), never on the rest."""
    digest = hashlib.sha256(f"{seed}\x00{group}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def make_splits(
    records: Iterable[Mapping[str, Any]],
    *,
    validation_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
) -> Dataset:
    """Split records by headword so all senses of a first lemma land in the same split.

    Records are ordered by offset inside each split, so the split contents (and hashes) do not
    depend on the order of ``records``.
    """
    _check_fractions(validation_fraction, test_fraction)
    parts: dict[str, list[Example]] = {"train": [], "validation": [], "test": []}
    for record in sorted(records, key=lambda r: str(r["offset"])):
        label = str(record["label"])
        if label not in _LABEL_INDEX:
            raise ValueError(f"record {record['offset']}: unknown label {label!r}")
        headword = str(record["words"][0]).lower()
        position = bucket(seed, headword)
        if position < test_fraction:
            name = "test"
        elif position < test_fraction + validation_fraction:
            name = "validation"
        else:
            name = "train"
        parts[name].append(Example(str(record["text"]), label, headword, str(record["offset"])))
    splits = {name: Split(name, tuple(examples)) for name, examples in parts.items()}
    return Dataset(train=splits["train"], validation=splits["validation"], test=splits["test"])


def load_dataset(
    path: Path | None = None,
    *,
    validation_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
) -> Dataset:
    """Load the snapshot and split it; see ``make_splits`` for the split rules."""
    _check_fractions(validation_fraction, test_fraction)
    return make_splits(
        load_snapshot(path),
        validation_fraction=validation_fraction,
        test_fraction=test_fraction,
        seed=seed,
    )
