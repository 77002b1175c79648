"""Change-cost tags: every field has one, a path costs the highest along it, the translation reads them."""

from __future__ import annotations

import pytest
from pydantic import Field

from serving.config import GatewayConfig, VariantSpec, load_config
from serving.config.base import CHANGE_KEY, Change, Section, changes, fields_costing, path_change
from serving.translation import VARIANT_ARGS, VARIANT_USER_CONFIG, serve_config


def test_a_model_with_an_untagged_field_is_refused_when_defined():
    with pytest.raises(TypeError, match=r"untagged: \['added'\]"):

        @changes(kept=Change.LIVE)
        class Spec(Section):
            kept: int = Field(1, description="tagged")
            added: int = Field(2, description="a new field nobody priced")


def test_a_tag_for_a_field_that_does_not_exist_is_refused():
    with pytest.raises(TypeError, match=r"not fields: \['gone'\]"):

        @changes(kept=Change.LIVE, gone=Change.RESTART)
        class Spec(Section):
            kept: int = Field(1, description="tagged")


def _every_field(model, prefix=""):
    from serving.config.base import submodel

    for name, info in model.model_fields.items():
        yield model, name, prefix + name
        inner, _ = submodel(info.annotation)
        if inner is not None:
            yield from _every_field(inner, prefix + name + ".")


def test_every_field_of_the_gateway_config_is_tagged_and_shown_in_the_schema():
    seen = list(_every_field(GatewayConfig))
    assert len(seen) > 60
    for model, name, _ in seen:
        assert model.model_fields[name].json_schema_extra[CHANGE_KEY] in {c.name.lower() for c in Change}


@pytest.mark.parametrize(
    ("path", "cost"),
    [
        ("routing.weights.canary", Change.LIVE),
        ("variants.canary.ref", Change.ARTIFACT),
        ("variants.canary.resources.num_cpus", Change.RESTART),
        ("variants.canary.autoscaling.max_replicas", Change.RESCALE),
        ("variants.canary.batching.max_batch_size", Change.LIVE),
        ("router.num_cpus", Change.RESTART),
        ("router.replicas", Change.RESCALE),
        ("http.port", Change.LISTENER),
        ("registry", Change.ARTIFACT),
        ("admin.token", Change.LIVE),
    ],
)
def test_a_path_costs_the_highest_tag_along_it(path, cost):
    assert path_change(GatewayConfig, path) is cost


def test_the_translation_takes_args_and_user_config_from_the_tags():
    assert (
        set(VARIANT_ARGS)
        == set(fields_costing(VariantSpec, Change.ARTIFACT))
        == {"ref", "backend", "device", "precision", "threads"}
    )
    assert {"batching", "faults"} <= set(VARIANT_USER_CONFIG)
    assert not set(VARIANT_USER_CONFIG) & {
        "replicas",
        "autoscaling",
        "resources",
        "max_queued_requests",
        "cascade",
    }
    cfg = load_config().with_changes({"variants.teacher-int8.placement": "deployment"})
    app = next(a for a in serve_config(cfg)["applications"] if a["name"] == "variant-teacher-int8")
    assert set(app["args"]) == {"key", "registry", *VARIANT_ARGS}
    assert set(app["deployments"][0]["user_config"]) == set(VARIANT_USER_CONFIG)


def test_with_changes_keeps_the_inline_token_and_validates():
    from serving.config import REMOVE, ConfigError

    cfg = load_config().with_changes({"admin.token": "s3cret"})
    moved = cfg.with_changes({"routing.weights": {"student-int8": 100}})
    assert moved.admin.token is not None and moved.admin.token.get_secret_value() == "s3cret"
    assert moved.routing.weights == {"student-int8": 100} and cfg.routing.weights != moved.routing.weights
    with pytest.raises(ConfigError, match=r"routing.weights: must sum to 100, got 50"):
        cfg.with_changes({"routing.weights": {"student-int8": 50}})
    dropped = cfg.with_changes({"shadow.variants": [], "variants.teacher-onnx": REMOVE})
    assert "teacher-onnx" not in dropped.variants
