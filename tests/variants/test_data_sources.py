"""The user's own data: every format read into the same splits, the split rules, leakage, and a
clear error for each kind of bad data (no training, apart from one tiny build on a user CSV).

The rows are real texts: WordNet glosses of three lexicographer classes, written out as a user's
files would be (CSV, TSV, JSON Lines, Parquet, a ``datasets`` folder).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from support.glosses import write_csv

from variants.data_sources import DataError, load_data, load_source, summary
from variants.dataset import load_snapshot
from variants.recipe import DataConfig, RecipeError, parse_recipe

KINDS = ("noun.animal", "noun.plant", "noun.food")
SHORT = {"noun.animal": "animal", "noun.plant": "plant", "noun.food": "food"}


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    """300 real glosses, 100 per class, with the first lemma as a group key (several senses of a
    word share it) and the class under a short name, as a user's own labels would read."""
    per: Counter = Counter()
    out = []
    for record in load_snapshot():
        label = record["label"]
        if label in KINDS and per[label] < 100:
            per[label] += 1
            out.append({"sentence": record["text"], "category": SHORT[label], "word": record["words"][0]})
    return out


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def data(path: Path | None = None, **source) -> DataConfig:
    src = {"text_column": "sentence", "label_column": "category", **source}
    if path is not None:
        src["path"] = str(path)
    return parse_recipe({"data": {"source": src}}).data


def texts_by_split(ds) -> dict[str, set[str]]:
    return {s.name: set(s.texts) for s in (ds.train, ds.validation, ds.test)}


def test_a_csv_is_split_grouped_stratified_and_seed_stable(tmp_path, rows):
    path = write_csv(tmp_path / "mine.csv", rows)
    ds = load_source(data(path, group_column="word"))
    assert ds.labels == ("animal", "food", "plant")
    assert len(ds.train) + len(ds.validation) + len(ds.test) == len(rows)
    for split in (ds.train, ds.validation, ds.test):
        assert set(split.labels) == set(ds.labels)  # every label reaches every split
    for label in ds.labels:  # about 80/10/10 of each label's groups
        assert 5 <= Counter(ds.test.labels)[label] <= 20
    where = {}
    for split in (ds.train, ds.validation, ds.test):
        for e in split.examples:
            assert where.setdefault(e.group, split.name) == split.name  # a word's senses stay together
    assert ds.hashes() == load_source(data(path, group_column="word")).hashes()
    moved = load_source(parse_recipe({"data": {"seed": 1, "source": data(path).source.model_dump()}}).data)
    assert moved.hashes()["test"] != ds.hashes()["test"]
    assert ds.train.label_ids[:3] == [ds.labels.index(label) for label in ds.train.labels[:3]]


@pytest.mark.parametrize("kind", ["tsv", "jsonl", "parquet"])
def test_every_file_format_reads_the_same_rows(tmp_path, rows, kind):
    reference = load_source(data(write_csv(tmp_path / "mine.csv", rows)))
    if kind == "tsv":
        path = write_csv(tmp_path / "mine.tsv", rows, delimiter="\t")
    elif kind == "jsonl":
        path = write_jsonl(tmp_path / "mine.jsonl", rows)
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = tmp_path / "mine.parquet"
        pq.write_table(pa.Table.from_pylist(rows), path)
    assert load_source(data(path)).hashes() == reference.hashes()


def test_a_datasets_folder_with_class_names_and_a_dataset_dict_keeps_its_splits(tmp_path, rows):
    import datasets

    features = datasets.Features(
        {
            "sentence": datasets.Value("string"),
            "category": datasets.ClassLabel(names=["animal", "food", "plant"]),
            "word": datasets.Value("string"),
        }
    )
    encoded = [{**r, "category": ["animal", "food", "plant"].index(r["category"])} for r in rows]
    one = datasets.Dataset.from_list(encoded, features=features)
    one.save_to_disk(str(tmp_path / "one"))
    ds = load_source(data(tmp_path / "one"))
    assert ds.labels == ("animal", "food", "plant")  # the ClassLabel's names, not 0, 1, 2
    assert ds.hashes() == load_source(data(write_csv(tmp_path / "mine.csv", rows))).hashes()

    parts = {
        "train": [r for i, r in enumerate(encoded) if i % 5 > 1],
        "validation": encoded[1::5],
        "test": encoded[0::5],
    }
    datasets.DatasetDict(
        {
            name if name != "validation" else "dev": datasets.Dataset.from_list(p, features=features)
            for name, p in parts.items()
        }
    ).save_to_disk(str(tmp_path / "dict"))
    kept = load_source(data(tmp_path / "dict"))
    assert kept.info["splits"] == "the data's own"
    assert texts_by_split(kept)["test"] == {r["sentence"] for r in parts["test"]}
    assert len(kept.validation) == len(parts["validation"])  # "dev" read as validation


def test_the_users_own_splits_from_a_column_or_files_and_leakage_dropped(tmp_path, rows):
    marked = [{**r, "part": ("test", "dev", "train", "train", "train")[i % 5]} for i, r in enumerate(rows)]
    # Leakage: two test rows repeat a training text; one validation row does.
    marked[0]["sentence"] = marked[2]["sentence"]
    marked[5]["sentence"] = marked[3]["sentence"]
    marked[1]["sentence"] = marked[4]["sentence"]
    ds = load_source(data(write_csv(tmp_path / "marked.csv", marked), split_column="part"))
    assert ds.info["cross_split_duplicates_dropped"] == {"validation": 1, "test": 2}
    assert any("leakage" in line and "2 from test" in line for line in summary(ds))
    by = texts_by_split(ds)
    assert not (by["test"] & by["train"]) and not (by["validation"] & by["train"])
    assert len(ds.test) == sum(1 for r in marked if r["part"] == "test") - 2

    files = {}
    for name, tag in (("train", "train"), ("validation", "dev"), ("test", "test")):
        files[name] = str(write_csv(tmp_path / f"{name}.csv", [r for r in marked if r["part"] == tag]))
    apart = load_source(data(**files))
    assert apart.hashes() == ds.hashes()


def test_relative_paths_start_from_the_recipe_file(tmp_path, rows):
    (tmp_path / "data").mkdir()
    write_csv(tmp_path / "data" / "mine.csv", rows)
    recipe_file = tmp_path / "my.yaml"
    recipe_file.write_text(
        "data:\n  source:\n    path: data/mine.csv\n    text_column: sentence\n    label_column: category\n"
    )
    from variants.recipe import load_recipe

    assert len(load_data(load_recipe(recipe_file)).labels) == 3


def bad(tmp_path: Path, content: bytes | str, name: str = "bad.csv", **source) -> str:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(DataError) as err:
        load_source(data(path, **source))
    return str(err.value)


def test_bad_data_is_refused_naming_the_file_the_line_and_the_column(tmp_path):
    header = "sentence,category\n"
    good = "".join(f"a text about thing {i},{'ab'[i % 2]}\n" for i in range(40))

    msg = bad(tmp_path, "text,category\nhello,a\n")
    assert "bad.csv:2" in msg and "'sentence'" in msg and "text_column" in msg

    msg = bad(tmp_path, header + good + "   ,a\n")
    assert "bad.csv:42" in msg and "'sentence'" in msg and "empty" in msg

    msg = bad(tmp_path, header.encode() + good.encode() + b"caf\xe9 au lait,a\n")
    assert "bad.csv:42" in msg and "UTF-8" in msg

    msg = bad(tmp_path, header + good + "one,two,three\n")
    assert "bad.csv:42" in msg and "3 fields" in msg

    msg = bad(tmp_path, header + good + '"an unclosed quote,a\n')
    assert "bad.csv" in msg and "CSV" in msg

    msg = bad(tmp_path, header + good + "a lone text,c\n")
    assert "'c'" in msg and "1 distinct texts" in msg and "at least 3" in msg

    msg = bad(tmp_path, header + "".join(f"text {i},a\n" for i in range(10)))
    assert "at least 2 labels" in msg

    msg = bad(tmp_path, '{"sentence": "fine", "category": "a"}\n{"sentence": oops}\n', name="bad.jsonl")
    assert "bad.jsonl:2" in msg and "not JSON" in msg

    msg = bad(tmp_path, '{"sentence": 3, "category": "a"}\n', name="bad.jsonl")
    assert "bad.jsonl:1" in msg and "not text" in msg

    msg = bad(tmp_path, b"PAR1 not really parquet", name="bad.parquet")
    assert "bad.parquet" in msg and "Parquet" in msg

    msg = bad(tmp_path, header + good, name="bad.txt")
    assert "data.source.format" in msg

    msg = bad(tmp_path, "sentence,category,part\nx,a,holdout\n", split_column="part")
    assert "bad.csv:2" in msg and "'holdout'" in msg

    msg = bad(tmp_path, header + good, labels=["a", "x"])
    assert "'b'" in msg and "data.source.labels" in msg

    with pytest.raises(DataError, match="no such file"):
        load_source(data(tmp_path / "absent.csv"))


def test_a_source_names_one_layout():
    for source in (
        {"path": "a.csv", "train": "b.csv"},
        {"train": "a.csv", "test": "b.csv"},
        {"train": "a", "validation": "b", "test": "c", "split_column": "part"},
        {"path": "a.csv", "labels": ["x", "x"]},
        {"path": "a.csv", "format": "xlsx"},
    ):
        with pytest.raises(RecipeError, match="data.source"):
            parse_recipe({"data": {"source": source}})


def test_bad_data_writes_nothing_to_the_registry(tmp_path):
    from variants import Registry
    from variants.pipeline import build

    (tmp_path / "bad.csv").write_text("sentence,category\nhello,\n")
    recipe = parse_recipe(
        {
            "data": {
                "source": {
                    "path": str(tmp_path / "bad.csv"),
                    "text_column": "sentence",
                    "label_column": "category",
                }
            }
        }
    )
    with pytest.raises(DataError, match="bad.csv:2"):
        build(recipe, Registry(tmp_path / "registry"), progress=False)
    assert not (tmp_path / "registry").exists() or not any((tmp_path / "registry").iterdir())


def test_a_build_on_a_users_csv_records_its_labels_and_source(tmp_path, rows):
    from conftest import SERVING_RECIPE

    from variants import Registry
    from variants.pipeline import build

    path = write_csv(tmp_path / "mine.csv", rows)
    recipe = parse_recipe(
        {
            **SERVING_RECIPE,
            "task": "my-glosses",
            "data": {
                "max_length": 32,
                "source": {"path": str(path), "text_column": "sentence", "label_column": "category"},
            },
            "variants": ["student-int8"],
            "cascade": {"pairs": []},
        }
    )
    ctx, outcomes = build(recipe, Registry(tmp_path / "registry"), progress=False)
    assert {o.status for o in outcomes} == {"built"}
    for manifest in ctx.built.values():
        assert manifest.labels == ["animal", "food", "plant"]
        assert manifest.data_source["source"]["path"] == str(path)
        assert manifest.task == "my-glosses"
    from variants.predictor import load_variant

    predictor = load_variant("student-int8", registry=tmp_path / "registry")
    assert predictor.predict(["a small furry mammal"]).labels[0] in {"animal", "food", "plant"}
