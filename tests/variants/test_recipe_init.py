"""``slimgate variants init``: a recipe for the user's data and model that loads back as written,
documents every field from the schema, and refuses bad data or a mismatched checkpoint before
writing anything."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from support.checkpoints import tiny_checkpoint
from support.glosses import glosses, write_csv

from serving.cli import main
from variants.recipe import Recipe, load_recipe
from variants.recipe_init import student_layers


@pytest.fixture(scope="module")
def mine(tmp_path_factory) -> Path:
    rows = glosses(("animal", "plant"), 150, text="sentence", label="kind")
    return write_csv(tmp_path_factory.mktemp("data") / "mine.csv", rows)


def init(*args: str) -> int:
    return main(["variants", "init", *args])


def test_student_layers_keep_a_third_spread_from_first_to_last():
    assert student_layers(6) == [0, 5]  # the bundled recipes' choice for MiniLM
    assert student_layers(12) == [0, 4, 7, 11]
    assert student_layers(4) == [0, 3]
    assert student_layers(24) == [0, 3, 7, 10, 13, 16, 20, 23]


def test_init_writes_a_documented_recipe_that_loads_back(tmp_path, mine, capsys):
    out = tmp_path / "recipes" / "my.yaml"
    out.parent.mkdir()
    args = ["--data", str(mine), "--text-column", "sentence", "--label-column", "kind", "--out", str(out)]
    assert init(*args, "--profile", "quick") == 0
    printed = capsys.readouterr().out
    assert "2 labels" in printed and "variants --registry REGISTRY build --recipe" in printed
    recipe = load_recipe(out)
    assert recipe.task == "mine"
    assert recipe.data.source is not None and recipe.data.source.text_column == "sentence"
    assert recipe.student.layers == [0, 5]  # a third of MiniLM's six blocks
    quick = load_recipe("quick")
    assert recipe.teacher.train_examples == quick.teacher.train_examples
    text = out.read_text()
    for field in Recipe.model_fields["gate"].annotation.model_fields.values():  # type: ignore[union-attr]
        assert field.description.split()[0] in text  # each field under its description
    from variants.data_sources import load_data

    assert load_data(recipe).labels == ("animal", "plant")  # the path resolves from the recipe's folder

    # It never overwrites a recipe unasked.
    assert init(*args) == 2
    assert "exists" in capsys.readouterr().err
    assert load_recipe(out) == recipe


def test_init_with_a_fine_tuned_teacher_maps_its_labels(tmp_path, mine, capsys):
    with mine.open(encoding="utf-8") as fh:
        texts = [row["sentence"] for row in csv.DictReader(fh)]
    teacher = tiny_checkpoint("roberta", tmp_path / "teacher", texts, ["LABEL_0", "LABEL_1"])
    out = tmp_path / "my.yaml"
    base = ["--data", str(mine), "--text-column", "sentence", "--label-column", "kind", "--out", str(out)]
    assert init(*base, "--teacher", str(teacher)) == 2
    err = capsys.readouterr().err
    assert "LABEL_0" in err and "label_map" in err and not out.exists()

    assert init(*base, "--teacher", str(teacher), "--label-map", "LABEL_0=plant", "LABEL_1=animal") == 0
    recipe = load_recipe(out)
    assert recipe.teacher.checkpoint == "teacher" and recipe.teacher.label_map == {
        "LABEL_0": "plant",
        "LABEL_1": "animal",
    }
    assert recipe.student.layers == [0, 3]

    assert init(*base, "--force", "--label-map", "nonsense") == 2
    assert "THEIRS=OURS" in capsys.readouterr().err


def test_init_refuses_bad_data_before_writing(tmp_path, mine, capsys):
    out = tmp_path / "my.yaml"
    assert (
        init("--data", str(mine), "--text-column", "text", "--label-column", "kind", "--out", str(out)) == 2
    )
    err = capsys.readouterr().err
    assert "mine.csv:2" in err and "'text'" in err and not out.exists()
