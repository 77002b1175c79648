"""The user's own fine-tuned teacher: a Hugging Face sequence classifier checkpoint of each
architecture slimgate takes (BERT, MiniLM, RoBERTa, XLM-RoBERTa, DistilBERT, DeBERTa-v2), used as
it is, compressed through every CPU step (ONNX, int8 dynamic, static and QAT, a layer-subset
student, a cascade) and evaluated; and each bad checkpoint refused with what to do.

The checkpoints have random weights from tiny configs (tests/support/checkpoints.py), so these
tests check what a build does with an architecture, not how accurate it is.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from support.checkpoints import ARCHITECTURES, tiny_checkpoint
from support.glosses import glosses as gloss_rows
from support.glosses import write_csv

from variants import Registry
from variants.checkpoints import CheckpointError
from variants.data_sources import load_data
from variants.recipe import parse_recipe

VARIANTS = ["teacher-onnx", "teacher-int8", "student-int8", "student-int8-static", "student-int8-qat"]


@pytest.fixture(scope="module")
def glosses(tmp_path_factory) -> Path:
    """240 real glosses of animals and plants, as a user's CSV."""
    return write_csv(tmp_path_factory.mktemp("data") / "glosses.csv", gloss_rows(("animal", "plant"), 120))


def texts_of(path: Path) -> list[str]:
    with path.open(encoding="utf-8") as fh:
        return [row["text"] for row in csv.DictReader(fh)]


def recipe_for(data: Path, checkpoint: Path, **teacher) -> dict:
    return {
        "task": "animal-or-plant",
        "data": {"max_length": 32, "source": {"path": str(data)}},
        "teacher": {"checkpoint": str(checkpoint), **teacher},
        "student": {"layers": [0, 3], "train_examples": 64, "max_steps": 2, "batch_size": 32},
        "quantization": {
            "qat": {"train_examples": 64, "max_steps": 2},
            "static": {"calibration_examples": 32},
        },
        "evaluation": {"test_examples": 32, "latency_samples": 2, "throughput_batches": 1, "warmup": 1},
        "gate": {"min_retention": 0.0},
        "cascade": {
            "min_speedup": 0,
            "validation_examples": 24,
            "pairs": [{"first": "student-int8", "then": "teacher-onnx", "target": {"accuracy_margin": 1.0}}],
        },
        "variants": VARIANTS,
    }


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_a_fine_tuned_checkpoint_of_each_architecture_is_compressed_and_evaluated(tmp_path, glosses, arch):
    from transformers import AutoModelForSequenceClassification

    from variants.assessment import assess
    from variants.pipeline import build
    from variants.predictor import load_variant

    # The checkpoint's own class order and names, mapped onto the data's labels.
    checkpoint = tiny_checkpoint(arch, tmp_path / arch, texts_of(glosses), ["LABEL_0", "LABEL_1"])
    recipe = parse_recipe(
        recipe_for(glosses, checkpoint, label_map={"LABEL_0": "plant", "LABEL_1": "animal"})
    )
    registry = Registry(tmp_path / "registry")
    ctx, outcomes = build(recipe, registry, progress=False)
    assert {o.name: o.status for o in outcomes} == {
        name: "built"
        for name in [
            "teacher",
            *VARIANTS[:2],
            "student",
            *VARIANTS[2:],
            "cascade-student-int8-to-teacher-onnx",
        ]
    }
    # Every variant but the fp32 student (a torch model as the teacher is: each torch evaluation is
    # a fresh interpreter importing torch, seconds the unit tier keeps).
    measured = [m for name, m in ctx.built.items() if name != "student"]
    manifests = assess(registry, measured, ctx.dataset, recipe)
    for m in manifests:
        assert m.labels == ["plant", "animal"]  # the checkpoint's order, the data's names
        assert m.metrics is not None and 0.0 <= m.metrics["accuracy"] <= 1.0, m.name
    teacher = next(m for m in manifests if m.name == "teacher")
    assert teacher.build["trained"] is False

    # The teacher variant is the checkpoint as it is: same logits; its ONNX export agrees.
    texts = ["a small furry mammal that climbs trees", "a tall flowering shrub of wet woodland"]
    original = AutoModelForSequenceClassification.from_pretrained(str(checkpoint)).eval()
    served = load_variant("teacher", registry=registry.root)
    ids, mask = served.encoder(texts)
    import torch

    with torch.no_grad():
        want = original(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).logits.numpy()
    np.testing.assert_allclose(served.logits(texts), want, atol=1e-5)
    np.testing.assert_allclose(
        load_variant("teacher-onnx", registry=registry.root).logits(texts), want, atol=1e-4
    )

    # The student keeps the embeddings, two of the four blocks and the head, in the same architecture.
    student = json.loads((registry.path("student", 1) / "config.json").read_text())
    assert student["num_hidden_layers" if arch != "distilbert" else "n_layers"] == 2
    assert student["architectures"] == json.loads((checkpoint / "config.json").read_text())["architectures"]
    assert load_variant("student-int8-qat", registry=registry.root).predict(texts).labels[0] in {
        "plant",
        "animal",
    }


def test_the_checkpoints_class_order_is_the_label_table(tmp_path, glosses):
    checkpoint = tiny_checkpoint("bert", tmp_path / "bert", texts_of(glosses), ["plant", "animal"])
    ds = load_data(parse_recipe(recipe_for(glosses, checkpoint)))
    assert ds.labels == ("plant", "animal")  # not the data's sorted order
    first = ds.train.examples[0]
    assert ds.train.label_ids[0] == ["plant", "animal"].index(first.label)


def refused(tmp_path: Path, glosses: Path, checkpoint: Path, **teacher) -> str:
    with pytest.raises(CheckpointError) as err:
        load_data(parse_recipe(recipe_for(glosses, checkpoint, **teacher)))
    return str(err.value)


def test_bad_checkpoints_are_refused_with_what_to_do(tmp_path, glosses):
    texts = texts_of(glosses)
    three = tiny_checkpoint("bert", tmp_path / "three", texts, ["animal", "plant", "fungus"])
    msg = refused(tmp_path, glosses, three)
    assert "['animal', 'plant', 'fungus']" in msg and "['animal', 'plant']" in msg and "label_map" in msg

    unnamed = tiny_checkpoint("bert", tmp_path / "unnamed", texts, ["LABEL_0", "LABEL_1"])
    assert "LABEL_0" in refused(tmp_path, glosses, unnamed)
    msg = refused(tmp_path, glosses, unnamed, label_map={"LABEL_7": "plant"})
    assert "LABEL_7" in msg

    pickled = tiny_checkpoint("bert", tmp_path / "pickled", texts, ["animal", "plant"])
    import torch
    from safetensors.torch import load_file

    torch.save(load_file(str(pickled / "model.safetensors")), pickled / "pytorch_model.bin")
    (pickled / "model.safetensors").unlink()
    from variants.pipeline import build

    with pytest.raises(CheckpointError) as err:
        build(parse_recipe(recipe_for(glosses, pickled)), Registry(tmp_path / "registry"), progress=False)
    assert (
        "pickle" in str(err.value)
        and "never unpickles" in str(err.value)
        and "save_pretrained" in str(err.value)
    )
    assert not (tmp_path / "registry").exists() or not any((tmp_path / "registry").iterdir())

    base = tmp_path / "base"
    base.mkdir()
    (base / "config.json").write_text(json.dumps({"architectures": ["BertModel"], "model_type": "bert"}))
    assert "not a fine-tuned sequence classifier" in refused(tmp_path, glosses, base)
    assert "no such folder" in refused(tmp_path, glosses, tmp_path / "absent")


def test_a_label_map_needs_a_checkpoint():
    from variants.recipe import RecipeError

    with pytest.raises(RecipeError, match="teacher.checkpoint"):
        parse_recipe({"teacher": {"label_map": {"LABEL_0": "a"}}})
