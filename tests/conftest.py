"""Shared fixtures, and the test tiers.

Every test gets the marker of its tier from its folder: ``e2e`` (tests/e2e: a real gateway over
HTTP, a real Prometheus, the controller), ``multinode`` (tests/multinode: a Ray cluster of several
nodes under faults) and ``unit`` (everything else: fast, in process, real parts that start in
milliseconds). A plain ``pytest`` runs the unit tier (pyproject's ``-m unit``);
``scripts/test.sh`` runs every tier, each gated on the one before.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Never reach a model hub from tests: the teacher comes from the installed package.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


TIERS = {"e2e": "e2e", "multinode": "multinode"}


def pytest_collection_modifyitems(config, items):
    root = Path(__file__).parent
    for item in items:
        folder = Path(str(item.path)).relative_to(root).parts[0]
        item.add_marker(getattr(pytest.mark, TIERS.get(folder, "unit")))


# A recipe small enough to build in about a minute, whose gate accepts any retention, so that every
# variant is deployable whatever a few training steps achieve.
SERVING_RECIPE = {
    "data": {"max_length": 32},
    "teacher": {"train_examples": 128, "max_steps": 4, "batch_size": 32, "learning_rate": 2e-4},
    "student": {"train_examples": 128, "max_steps": 3, "batch_size": 32},
    "quantization": {"qat": {"train_examples": 64, "max_steps": 2}},
    "evaluation": {"test_examples": 64, "latency_samples": 3, "throughput_batches": 1, "warmup": 1},
    "gate": {"min_retention": 0.0},
    "variants": ["teacher-onnx", "student-int8", "student-int8-qat"],
    # A cascade whose target always holds and whose cost is not weighed, so that it is deployable
    # whatever a few training steps and one timed batch achieve (the gateway tests set the threshold
    # they need).
    "cascade": {
        "min_speedup": 0,
        "validation_examples": 64,
        "pairs": [{"first": "student-int8", "then": "teacher-onnx", "target": {"accuracy_margin": 1.0}}],
    },
}


@pytest.fixture(scope="session")
def registry_root(tmp_path_factory) -> Path:
    """A tiny real registry built by the real factory (shared by every test that serves variants)."""
    from variants import Registry
    from variants.assessment import assess
    from variants.dataset import load_dataset
    from variants.pipeline import build
    from variants.recipe import parse_recipe

    root = tmp_path_factory.mktemp("gateway-registry")
    reg = Registry(root)
    recipe = parse_recipe(SERVING_RECIPE)
    ds = load_dataset()
    ctx, _ = build(recipe, reg, dataset=ds, progress=False)
    assess(reg, list(ctx.built.values()), ds, recipe)
    return root


@pytest.fixture(scope="session")
def small_registry(tmp_path_factory) -> Path:
    """The PyTorch teacher and student and the dynamic int8 student, built by the real factory on
    the tiny recipe and not evaluated: for tests that open variants, not read their figures."""
    from variants import Registry
    from variants.dataset import load_dataset
    from variants.pipeline import build
    from variants.recipe import parse_recipe

    root = tmp_path_factory.mktemp("small-registry")
    build(
        parse_recipe({**SERVING_RECIPE, "variants": ["student-int8"]}),
        Registry(root),
        dataset=load_dataset(),
        progress=False,
    )
    return root


@pytest.fixture(scope="session")
def cascade_registry(small_registry, tmp_path_factory) -> Path:
    """The small registry plus the cascade student-int8 -> teacher, calibrated by the real factory
    on 96 validation texts (escalating at most 30%) and not evaluated."""
    import shutil

    from variants import Registry
    from variants.dataset import load_dataset
    from variants.pipeline import build
    from variants.recipe import parse_recipe

    root = tmp_path_factory.mktemp("cascade-registry")
    shutil.copytree(small_registry, root, dirs_exist_ok=True)
    build(parse_recipe(CASCADE_RECIPE), Registry(root), dataset=load_dataset(), progress=False)
    return root


CASCADE_RECIPE = {
    **SERVING_RECIPE,
    "variants": ["student-int8"],
    "cascade": {
        "validation_examples": 96,
        "pairs": [{"first": "student-int8", "then": "teacher", "target": {"max_escalation": 0.3}}],
    },
}


@pytest.fixture(scope="session", autouse=True)
def controller_state(tmp_path_factory):
    """Every `slimgate apply` of the tests audits into a scratch state file, never the user's."""
    path = tmp_path_factory.mktemp("controller-state") / "controller.db"
    old = os.environ.get("SLIMGATE_STATE")
    os.environ["SLIMGATE_STATE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("SLIMGATE_STATE", None)
    else:
        os.environ["SLIMGATE_STATE"] = old
