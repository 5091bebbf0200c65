import pytest

from edgeprune.errors import RecipeError
from edgeprune.recipe import Recipe, apply_override, load_recipe, recipe_from_dict


def test_example_recipe_loads_and_resolves_data_relative_to_the_file():
    recipe = load_recipe("recipes/example.yaml")
    assert recipe.model == "embedded:minilm-l6"
    assert recipe.data.path.endswith("shared/data/sst2") and recipe.data.path.startswith("/")
    assert recipe.pruning[0].kind == "magnitude" and recipe.pruning[0].schedule == "cubic"


def test_defaults_match_the_design():
    r = Recipe()
    assert (r.data.max_length, r.training.epochs, r.training.batch_size) == (64, 3.0, 32)
    m = recipe_from_dict({"pruning": [{}]}).pruning[0]
    assert (m.kind, m.schedule, m.start, m.end, m.frequency, m.scope) == ("magnitude", "cubic", 0.1, 0.7, 100, "global")


def test_start_int_is_a_step_float_a_fraction():
    m = recipe_from_dict({"pruning": [{"start": 100, "end": 0.5}]}).pruning[0]
    assert isinstance(m.start, int) and isinstance(m.end, float)


@pytest.mark.parametrize("raw,field", [
    ({"modle": "x"}, "modle"),
    ({"data": {"max_lenght": 12}}, "data.max_lenght"),
    ({"pruning": [{"kind": "magnitude", "final_sparsity": 1.5}]}, "pruning.0.final_sparsity"),
    ({"pruning": [{"kind": "random"}]}, "pruning.0.kind"),
    ({"pruning": [{"schedule": "quartic"}]}, "pruning.0.schedule"),
    ({"pruning": [{"start": 1.5}]}, "pruning.0.start"),
    ({"pruning": [{"start": 0.8, "end": 0.2}]}, "pruning.0.start"),
    ({"pruning": [{"frequency": 0}]}, "pruning.0.frequency"),
    ({"pruning": [{"kind": "nm", "n": 4, "m": 4}]}, "pruning.0.n"),
    ({"training": {"batch_size": "big"}}, "training.batch_size"),
    ({"training": {"learning_rate": 3}}, "training.learning_rate"),
    ({"distillation": {"alpha": 2}}, "distillation.alpha"),
    ({"pruning": [{"params": ["re:(unclosed"]}]}, "pruning.0"),
])
def test_bad_fields_are_named(raw, field):
    with pytest.raises(RecipeError) as err:
        recipe_from_dict(raw)
    assert field in str(err.value)
    assert "fix:" in str(err.value)


def test_unknown_key_suggests_the_close_one():
    with pytest.raises(RecipeError, match="did you mean 'final_sparsity'"):
        recipe_from_dict({"pruning": [{"final_sparsty": 0.5}]})


def test_overrides_reach_nested_fields_and_lists():
    raw = {"pruning": [{"final_sparsity": 0.5}], "training": {}}
    apply_override(raw, "pruning.0.final_sparsity=0.8")
    apply_override(raw, "training.epochs=1")
    r = recipe_from_dict(raw)
    assert r.pruning[0].final_sparsity == 0.8 and r.training.epochs == 1.0
    with pytest.raises(RecipeError, match="index"):
        apply_override(raw, "pruning.3.final_sparsity=0.1")
    with pytest.raises(RecipeError, match="="):
        apply_override(raw, "training.epochs")


def test_training_extra_keys_pass_through():
    r = recipe_from_dict({"training": {"lr_scheduler_type": "constant"}})
    assert r.training.extra == {"lr_scheduler_type": "constant"}


def test_hash_ignores_key_order_and_changes_with_content():
    a = recipe_from_dict({"training": {"epochs": 1, "batch_size": 8}})
    b = recipe_from_dict({"training": {"batch_size": 8, "epochs": 1}})
    c = recipe_from_dict({"training": {"batch_size": 8, "epochs": 2}})
    assert a.sha256() == b.sha256() != c.sha256()


def test_exponent_without_dot_is_a_number_not_a_string(tmp_path):
    (tmp_path / "r.yaml").write_text("training:\n  learning_rate: 5e-5\n")
    assert load_recipe(tmp_path / "r.yaml").training.learning_rate == 5e-5
    with pytest.raises(RecipeError, match="training.learning_rate must be a number"):
        recipe_from_dict({"training": {"learning_rate": "fast"}})


@pytest.mark.parametrize("field,value,dense_value,bad", [
    ("embeddings", "int4", "train", "int3"),       # a student-only trick: the dense reference trains its table
    ("quantize", "int8-dynamic-per-channel", "none", "int4"),  # likewise: the reference trains in fp32
    ("pooling", "mean", "mean", "max"),            # the model itself: the reference shares it
])
def test_training_fields_are_checked_hashed_only_when_set_and_resolved_for_the_dense_reference(
        field, value, dense_value, bad, tiny_model_dir, tiny_data_dir):
    from conftest import tiny_recipe_dict

    base = tiny_recipe_dict(tiny_model_dir, tiny_data_dir)
    plain = recipe_from_dict(base)
    assert field not in plain.to_dict()["training"]  # recipes from before the field keep their hash
    changed = recipe_from_dict({**base, "training": {**base["training"], field: value}})
    assert getattr(changed.training, field) == value and changed.sha256() != plain.sha256()
    assert getattr(changed.dense_reference().training, field) == dense_value
    assert (changed.dense_reference().sha256() == plain.dense_reference().sha256()) == (dense_value != value)
    with pytest.raises(RecipeError, match=f"training.{field}"):
        recipe_from_dict({**base, "training": {**base["training"], field: bad}})
