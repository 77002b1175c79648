"""Fast checks of the WordNet snapshot, its parser and the headword-grouped splits (no training)."""

from __future__ import annotations

import copy
import gzip
from pathlib import Path

import pytest

from variants.data.make_snapshot import (
    NOUN_LEXNAMES,
    clean_gloss,
    clean_word,
    parse_data_noun,
    parse_line,
    write_snapshot,
)
from variants.dataset import (
    LABELS,
    SNAPSHOT_PATH,
    Dataset,
    load_dataset,
    load_snapshot,
    make_splits,
)

ENTITY_LINE = (
    "00001740 03 n 01 entity 0 003 ~ 00001930 n 0000 ~ 00002137 n 0000 ~ 04424418 n 0000 "
    "| that which is perceived or known or inferred to have its own distinct existence "
    "(living or nonliving)  \n"
)


@pytest.fixture(scope="module")
def records() -> list[dict]:
    return load_snapshot()


@pytest.fixture(scope="module")
def dataset(records: list[dict]) -> Dataset:
    return make_splits(records)


def test_snapshot_loads_with_all_26_labels(records: list[dict]) -> None:
    assert SNAPSHOT_PATH.is_file()
    assert len(records) > 80_000
    assert len(LABELS) == 26
    assert list(LABELS) == sorted(LABELS)
    assert {r["label"] for r in records} == set(LABELS) == set(NOUN_LEXNAMES.values())
    assert records[0] == {
        "offset": "00001740",
        "label": "noun.Tops",
        "words": ["entity"],
        "text": "that which is perceived or known or inferred to have its own distinct existence "
        "(living or nonliving)",
    }
    offsets = [r["offset"] for r in records]
    assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)


def test_no_headword_in_two_splits(dataset: Dataset) -> None:
    seen: dict[str, str] = {}
    for split in (dataset.train, dataset.validation, dataset.test):
        for example in split.examples:
            assert seen.setdefault(example.group, split.name) == split.name
    total = len(dataset.train) + len(dataset.validation) + len(dataset.test)
    assert 0.08 < len(dataset.test) / total < 0.12
    assert 0.08 < len(dataset.validation) / total < 0.12


def test_split_accessors(dataset: Dataset) -> None:
    split = dataset.validation
    assert len(split.texts) == len(split.labels) == len(split.label_ids) == len(split)
    assert all(LABELS[i] == label for i, label in zip(split.label_ids, split.labels, strict=True))
    assert set(dataset.hashes()) == {"train", "validation", "test"}


def test_splits_are_deterministic(records: list[dict], dataset: Dataset) -> None:
    again = make_splits(list(reversed(records)))
    assert again.hashes() == dataset.hashes()
    assert make_splits(records, seed=1).hashes() != dataset.hashes()


def test_hash_changes_only_for_the_edited_split(records: list[dict], dataset: Dataset) -> None:
    edited = copy.deepcopy(records)
    target = dataset.test.examples[0].id
    for record in edited:
        if record["offset"] == target:
            record["text"] += " (edited)"
    after = make_splits(edited).hashes()
    before = dataset.hashes()
    assert after["test"] != before["test"]
    assert after["train"] == before["train"]
    assert after["validation"] == before["validation"]


def test_assignment_is_independent_of_other_records(records: list[dict]) -> None:
    subset = records[::7]
    small = make_splits(subset)
    full = make_splits(records)
    full_split = {e.id: s.name for s in (full.train, full.validation, full.test) for e in s.examples}
    for split in (small.train, small.validation, small.test):
        assert all(full_split[e.id] == split.name for e in split.examples)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"validation_fraction": -0.1}, "validation_fraction"),
        ({"validation_fraction": 1.0}, "validation_fraction"),
        ({"test_fraction": 1.5}, "test_fraction"),
        ({"validation_fraction": 0.5, "test_fraction": 0.5}, "validation_fraction \\+ test_fraction"),
    ],
)
def test_fractions_are_validated(records: list[dict], kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        make_splits(records[:10], **kwargs)


def test_zero_fractions_put_everything_in_train(records: list[dict]) -> None:
    ds = make_splits(records[:500], validation_fraction=0.0, test_fraction=0.0)
    assert len(ds.train) == 500 and len(ds.validation) == len(ds.test) == 0


def test_subsample_is_deterministic(dataset: Dataset) -> None:
    split = dataset.validation
    a, b = split.subsample(100, seed=3), split.subsample(100, seed=3)
    assert len(a) == 100 and a == b and a.content_hash == b.content_hash
    assert split.subsample(100, seed=4).content_hash != a.content_hash
    position = {e.id: i for i, e in enumerate(split.examples)}
    assert [position[e.id] for e in a.examples] == sorted(position[e.id] for e in a.examples)
    assert split.subsample(None, seed=0) is split
    assert split.subsample(len(split) + 5, seed=0) is split
    with pytest.raises(ValueError):
        split.subsample(-1, seed=0)


def test_missing_and_corrupt_snapshot_errors_name_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.jsonl.gz"
    with pytest.raises(FileNotFoundError, match="nope.jsonl.gz"):
        load_snapshot(missing)
    garbage = tmp_path / "garbage.jsonl.gz"
    garbage.write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match="garbage.jsonl.gz"):
        load_snapshot(garbage)
    bad_label = tmp_path / "bad_label.jsonl.gz"
    with gzip.open(bad_label, "wt") as fh:
        fh.write('{"offset":"1","label":"noun.nope","words":["x"],"text":"y"}\n')
    with pytest.raises(ValueError, match="bad_label.jsonl.gz:1"):
        load_snapshot(bad_label)


def test_round_trip_through_writer(tmp_path: Path) -> None:
    lines = [
        ENTITY_LINE,
        '00002452 03 n 01 thing 0 000 | a separate entity; "the thing in the box"  \n',
    ]
    out = tmp_path / "snap.jsonl.gz"
    write_snapshot(parse_data_noun(lines), out)
    first = out.read_bytes()
    write_snapshot(parse_data_noun(lines), out)
    assert out.read_bytes() == first
    ds = load_dataset(out, validation_fraction=0.0, test_fraction=0.0)
    assert ds.train.texts == [
        "that which is perceived or known or inferred to have its own distinct existence "
        "(living or nonliving)",
        "a separate entity",
    ]


# --- data.noun parsing -------------------------------------------------------------------


def test_parse_line_basic_and_header() -> None:
    assert parse_line("  1 This software and database is being provided to you, the LICENSEE, by  \n") is None
    assert parse_line("\n") is None
    record = parse_line(ENTITY_LINE)
    assert record is not None
    assert record["offset"] == "00001740" and record["label"] == "noun.Tops"
    assert record["words"] == ["entity"]


def test_parse_line_hex_word_count_and_lemma_cleanup() -> None:
    words = " ".join(f"w_{i} 0" for i in range(11))
    line = f"09999999 18 n 0b {words} 001 @ 00007846 n 0000 | a made-up person  \n"
    record = parse_line(line)
    assert record is not None
    assert record["label"] == "noun.person"
    assert record["words"] == [f"w {i}" for i in range(11)]
    assert clean_word("a_cappella(p)") == "a cappella"
    assert clean_word("Rockefeller") == "Rockefeller"


def test_parse_line_rejects_non_noun_and_malformed_lines() -> None:
    with pytest.raises(ValueError, match="lex_filenum"):
        parse_line("00001740 00 n 01 able 0 000 | not a noun  \n")
    with pytest.raises(ValueError):
        parse_line("00001740 03 n 02 entity 0 000 | too few words  \n")
    with pytest.raises(ValueError, match="'\\|'"):
        parse_line("00001740 03 n 01 entity 0 000 no gloss\n")


@pytest.mark.parametrize(
    ("gloss", "expected"),
    [
        ("a separate entity", "a separate entity"),
        ('a unit; "one example"; "another; with a semicolon"', "a unit"),
        ('the act of substitution: "he sent Smith in for Jones"', "the act of substitution"),
        ('quick or easy earnings, "they are traders out to make a fast buck"', "quick or easy earnings"),
        ('woven of worsted yarns "he wore a worsted suit"', "woven of worsted yarns"),
        (
            "an inability to write; \"he had writer's block; the words wouldn't come\"",
            "an inability to write",
        ),
        ('harm; "the evil that men do lives after them"- Shakespeare', "harm"),
        ('a workplace; as in the expression "on the job";', 'a workplace; as in the expression "on the job"'),
        (
            'a demand especially in the phrase "the call of duty"',
            'a demand especially in the phrase "the call of duty"',
        ),
        (
            'progress (especially in the phrase "make strides"); "they made big strides"',
            'progress (especially in the phrase "make strides")',
        ),
        (
            'a local branch where postal services are available"',
            "a local branch where postal services are available",
        ),
        ('fear; "he was in bondage to fear:; "he sought release"', "fear"),
        (
            "a room for bathing; `vapour bath' is a British term",
            "a room for bathing; `vapour bath' is a British term",
        ),
        ("  spaced   out ;  ", "spaced out"),
        ('"only an example"', ""),
    ],
)
def test_clean_gloss_strips_quoted_examples(gloss: str, expected: str) -> None:
    assert clean_gloss(gloss) == expected


def test_parse_data_noun_sorts_and_drops_empty_text() -> None:
    lines = [
        "00002452 03 n 01 thing 0 000 | a separate entity  \n",
        '00002000 03 n 01 ghost 0 000 | "only an example"  \n',
        ENTITY_LINE,
    ]
    assert [r["offset"] for r in parse_data_noun(lines)] == ["00001740", "00002452"]
