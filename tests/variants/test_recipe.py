import pytest

from variants.recipe import RECIPES_DIR, RecipeError, load_recipe, parse_recipe


@pytest.mark.parametrize("path", sorted(RECIPES_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_bundled_recipes_are_valid(path):
    recipe = load_recipe(path)
    assert recipe.gate.min_retention == 0.97


def test_bundled_name_resolves():
    assert load_recipe("quick") == load_recipe(RECIPES_DIR / "quick.yaml")


def test_unknown_field_is_named():
    with pytest.raises(RecipeError) as err:
        parse_recipe({"student": {"layrs": [0, 5]}})
    assert "student.layrs: unknown field" in str(err.value)


def test_wrong_choice_names_field_and_allowed_values():
    with pytest.raises(RecipeError) as err:
        parse_recipe({"quantization": {"static": {"method": "kmeans"}}})
    msg = str(err.value)
    assert "quantization.static.method" in msg
    assert "'minmax', 'entropy' or 'percentile'" in msg


def test_wrong_type_is_named():
    with pytest.raises(RecipeError, match=r"teacher.learning_rate"):
        parse_recipe({"teacher": {"learning_rate": "fast"}})


def test_student_layers_must_increase():
    with pytest.raises(RecipeError, match=r"student.layers: .*strictly increasing"):
        parse_recipe({"student": {"layers": [5, 0]}})


def test_distillation_needs_a_loss():
    with pytest.raises(RecipeError, match=r"student.distillation: .*at least one"):
        parse_recipe({"student": {"distillation": {"kd_weight": 0, "ce_weight": 0}}})


def test_unknown_variant_name():
    with pytest.raises(RecipeError, match=r"variants.0"):
        parse_recipe({"variants": ["student-int4"]})


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(RecipeError, match="not found"):
        load_recipe(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("teacher: [unclosed\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(bad)
    top = tmp_path / "list.yaml"
    top.write_text("- 1\n- 2\n")
    with pytest.raises(RecipeError, match="top level must be a mapping"):
        load_recipe(top)


@pytest.mark.parametrize(
    ("section", "value", "where"),
    [
        ({"gate": {"confidence": 0.3}}, "0.5", "gate.confidence"),
        ({"gate": {"confidence": 1.0}}, "less than 1", "gate.confidence"),
        ({"cascade": {"min_speedup": -1}}, "greater than or equal to 0", "cascade.min_speedup"),
        ({"teacher": {"head_learning_rate": 0}}, "greater than 0", "teacher.head_learning_rate"),
        ({"student": {"head_learning_rate": 1e-3}}, "unknown field", "student.head_learning_rate"),
    ],
)
def test_the_gate_cost_and_head_rate_fields_refuse_bad_values_by_name(section, value, where):
    with pytest.raises(RecipeError, match=rf"{where}: .*{value}"):
        parse_recipe(section)
