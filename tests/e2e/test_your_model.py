"""Your model, your data, end to end through the CLI as a user runs it: ``variants init`` on a CSV
and a fine-tuned checkpoint of their own, ``variants build``, ``config init``, ``serve``; then the
gateway answers in that model's labels over /v1, /v2 and a cascade.

The checkpoint is a tiny DistilBERT sequence classifier with random weights and unnamed labels
(LABEL_0, LABEL_1), mapped onto the data's at init. The test's only edit to the recipe init writes
is its size (a few steps) and a gate any model passes: it checks the plumbing of a task that is not
WordNet, not accuracy.
"""

from __future__ import annotations

import pytest
import yaml
from support.checkpoints import tiny_checkpoint
from support.e2e import GRPC_PORT, PORT, Gateway, serving, slimgate
from support.glosses import glosses, write_csv

LABELS = {"plant", "animal"}


@pytest.fixture(scope="module")
def your_gateway(tmp_path_factory):
    work = tmp_path_factory.mktemp("your-model")
    rows = glosses(("animal", "plant"), 150, text="sentence", label="kind")
    data = write_csv(work / "mine.csv", rows)
    teacher = tiny_checkpoint(
        "distilbert", work / "teacher", [r["sentence"] for r in rows], ["LABEL_0", "LABEL_1"]
    )
    recipe_path = work / "my.yaml"
    columns = ["--text-column", "sentence", "--label-column", "kind"]
    mapping = ["--label-map", "LABEL_0=plant", "LABEL_1=animal"]
    slimgate(
        "variants",
        "init",
        "--data",
        str(data),
        *columns,
        "--teacher",
        str(teacher),
        *mapping,
        "--out",
        str(recipe_path),
    )

    recipe = yaml.safe_load(recipe_path.read_text())
    recipe["student"].update(train_examples=64, max_steps=2)
    recipe["quantization"]["qat"].update(train_examples=64, max_steps=2)
    recipe["evaluation"].update(test_examples=32, latency_samples=2, throughput_batches=1, warmup=1)
    recipe["gate"]["min_retention"] = 0.0
    recipe["variants"] = ["teacher-onnx", "student-int8", "student-int8-qat"]
    recipe["cascade"].update(
        min_speedup=0,
        validation_examples=24,
        pairs=[{"first": "student-int8", "then": "teacher-onnx", "target": {"accuracy_margin": 1.0}}],
    )
    recipe_path.write_text(yaml.safe_dump(recipe))

    registry = work / "registry"
    slimgate(
        "variants",
        "--registry",
        str(registry),
        "build",
        "--recipe",
        str(recipe_path),
        "--quiet",
        "--no-baseline",
    )
    config = work / "gateway.yaml"
    slimgate("config", "init", "--registry", str(registry), "--out", str(config))
    cfg = yaml.safe_load(config.read_text())
    cfg["http"] = {"host": "127.0.0.1", "port": PORT, "grpc_port": GRPC_PORT}  # the test's ports
    config.write_text(yaml.safe_dump(cfg))
    gw = Gateway(f"http://127.0.0.1:{PORT}", work, registry)
    with serving(config, gw):
        yield gw, cfg


TEXTS = ["a small furry mammal that climbs trees", "a tall flowering shrub of wet woodland"]


def test_v1_answers_in_the_models_labels(your_gateway):
    gw, cfg = your_gateway
    r = gw.predict(TEXTS)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] in {"student-int8", "student-int8-qat", "teacher-onnx"}
    for out in body["outputs"]:
        assert out["label"] in LABELS
        assert {t["label"] for t in out["top_k"]} <= LABELS
    pinned = [key for key, spec in cfg["variants"].items() if spec.get("cascade")]
    assert pinned, "config init pins the deployable cascade"
    r = gw.predict(TEXTS, headers={"x-slimgate-variant": pinned[0]})
    assert r.status_code == 200, r.text
    cascade = r.json()
    assert all(o["label"] in LABELS and o["stage"] in {"first", "then"} for o in cascade["outputs"])


def test_v2_metadata_and_inference_carry_the_tasks_two_labels(your_gateway):
    gw, _ = your_gateway
    meta = gw.client.get("/v2/models/slimgate").json()
    probabilities = next(o for o in meta["outputs"] if o["name"] == "probabilities")
    assert probabilities["shape"] == [-1, 2]
    r = gw.client.post(
        "/v2/models/slimgate/infer",
        json={"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": TEXTS}]},
    )
    assert r.status_code == 200, r.text
    outputs = {o["name"]: o for o in r.json()["outputs"]}
    assert set(outputs["label"]["data"]) <= LABELS
    assert outputs["probabilities"]["shape"] == [2, 2]
