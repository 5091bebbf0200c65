"""Layer removal (`kind: layers`): the cut model, its recipe checks, training, distillation and convert."""

import copy

import pytest
import torch

from conftest import tiny_bert, tiny_recipe_dict, tiny_tokenizer
from edgeprune.checkpoint import read_pruning_state
from edgeprune.depth import keep_encoder_layers
from edgeprune.errors import ModelError, RecipeError
from edgeprune.recipe import recipe_from_dict
from edgeprune.train import train

IDS = torch.tensor([[2, 7, 9, 11, 3, 0], [2, 8, 12, 3, 0, 0]])
MASK = (IDS != 0).long()


def test_cut_keeps_the_named_layers_and_their_weights(tmp_path):
    from transformers import AutoModelForSequenceClassification

    full = tiny_bert(num_hidden_layers=3)
    cut = copy.deepcopy(full)
    assert keep_encoder_layers(cut, [0, 2]) == [1]
    assert cut.config.num_hidden_layers == 2 and len(cut.bert.encoder.layer) == 2
    src, dst = full.state_dict(), cut.state_dict()
    for key, value in dst.items():
        source_key = key.replace("encoder.layer.1.", "encoder.layer.2.")
        assert torch.equal(value, src[source_key]), key
    assert not any(k.startswith("bert.encoder.layer.2.") for k in dst)

    # the cut model is a plain transformers model: it saves, reloads and computes the same logits
    cut.save_pretrained(tmp_path / "cut")
    again = AutoModelForSequenceClassification.from_pretrained(tmp_path / "cut").eval()
    with torch.no_grad():
        assert torch.allclose(again(input_ids=IDS, attention_mask=MASK).logits,
                              cut(input_ids=IDS, attention_mask=MASK).logits, atol=1e-6)


def test_a_kept_prefix_computes_exactly_what_the_full_model_computed_there():
    full = tiny_bert(num_hidden_layers=3)
    cut = copy.deepcopy(full)
    keep_encoder_layers(cut, [0, 1])
    with torch.no_grad():
        a = full(input_ids=IDS, attention_mask=MASK, output_hidden_states=True).hidden_states
        b = cut(input_ids=IDS, attention_mask=MASK, output_hidden_states=True).hidden_states
    assert len(b) == 3
    for i in range(3):
        assert torch.allclose(a[i], b[i], atol=1e-6)


def test_keeping_every_layer_changes_nothing_and_bad_indices_are_refused():
    model = tiny_bert(num_hidden_layers=3)
    assert keep_encoder_layers(model, [0, 1, 2]) == [] and model.config.num_hidden_layers == 3
    with pytest.raises(ModelError, match=r"layer\(s\) \[3\]"):
        keep_encoder_layers(model, [0, 3])
    for bad in ([], [1, 1], [2, 0]):  # the public helper checks what the recipe checks
        with pytest.raises(ModelError, match="ascending"):
            keep_encoder_layers(model, bad)
    assert len(model.bert.encoder.layer) == 3  # nothing was cut by a refused call


def test_a_keep_beyond_the_model_is_refused_before_any_training(tiny_model_dir, tiny_data_dir, tmp_path):
    raw = tiny_recipe_dict(tiny_model_dir, tiny_data_dir)
    raw["pruning"] = [{"kind": "layers", "keep": [0, 5]}]
    raw["distillation"] = {"teacher": "dense", "init_student": True}
    with pytest.raises(RecipeError, match=r"pruning\.0\.keep names layer 5.*2 encoder layers"):
        train(recipe_from_dict(raw), tmp_path / "student", progress=False)
    assert not any(tmp_path.iterdir())  # no teacher was trained first, nothing written


def test_recipes_without_a_cut_keep_their_hash():
    recipe = recipe_from_dict({"pruning": [{"kind": "heads"}]})
    assert "keep" not in recipe.to_dict()["pruning"][0]
    cut = recipe_from_dict({"pruning": [{"kind": "heads"}, {"kind": "layers", "keep": [0]}]})
    assert cut.to_dict()["pruning"][1]["keep"] == [0]


def test_distilbert_is_cut_too():
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    config = DistilBertConfig(vocab_size=64, dim=32, n_layers=3, n_heads=4, hidden_dim=37,
                              max_position_embeddings=64)
    model = DistilBertForSequenceClassification(config).eval()
    third = model.distilbert.transformer.layer[2].ffn.lin1.weight.clone()
    keep_encoder_layers(model, [2])
    assert model.config.n_layers == 1
    assert torch.equal(model.distilbert.transformer.layer[0].ffn.lin1.weight, third)
    with torch.no_grad():
        assert model(input_ids=IDS, attention_mask=MASK).logits.shape == (2, 2)


@pytest.mark.parametrize("modifier, field", [
    ({"kind": "layers"}, "pruning.0.keep"),
    ({"kind": "layers", "keep": []}, "pruning.0.keep"),
    ({"kind": "layers", "keep": [2, 0]}, "pruning.0.keep"),
    ({"kind": "layers", "keep": [0, 0]}, "pruning.0.keep"),
    ({"kind": "layers", "keep": [-1]}, "pruning.0.keep"),
    ({"kind": "layers", "keep": [0], "params": ["re:.*"]}, "pruning.0.params"),
    ({"kind": "magnitude", "keep": [0]}, "pruning.0.keep"),
])
def test_recipe_refuses_a_bad_layers_modifier(modifier, field):
    with pytest.raises(RecipeError, match=field.replace(".", r"\.")):
        recipe_from_dict({"pruning": [modifier]})


def test_recipe_refuses_two_layers_modifiers_and_reports_what_it_keeps():
    with pytest.raises(RecipeError, match="second 'layers'"):
        recipe_from_dict({"pruning": [{"kind": "layers", "keep": [0]}, {"kind": "layers", "keep": [1]}]})
    recipe = recipe_from_dict({"pruning": [{"kind": "heads"}, {"kind": "layers", "keep": [0, 3, 5]}]})
    assert recipe.kept_layers() == [0, 3, 5]
    assert recipe.dense_reference().kept_layers() is None  # the dense reference keeps full depth
    assert recipe_from_dict({}).kept_layers() is None


def test_pruner_refuses_a_model_that_was_not_cut():
    from edgeprune.pruner import Pruner

    recipe = recipe_from_dict({"pruning": [{"kind": "layers", "keep": [1]}]})
    with pytest.raises(RecipeError, match="keep_encoder_layers"):
        Pruner(tiny_bert(), recipe.pruning, 10)
    model = tiny_bert()
    keep_encoder_layers(model, [1])
    Pruner(model, recipe.pruning, 10)  # cut first: accepted
    with pytest.raises(RecipeError, match="second 'layers'"):  # configs built directly skip the recipe check
        Pruner(model, recipe.pruning * 2, 10)


def test_hidden_state_loss_follows_the_layer_map():
    from edgeprune.distill import hidden_state_loss

    torch.manual_seed(0)
    teacher = [torch.randn(2, 3, 4) for _ in range(4)]           # embeddings + 3 layers
    kept = [teacher[0], teacher[1], teacher[3]]                   # student cut to teacher layers 0 and 2
    assert hidden_state_loss(kept, teacher, None, layer_map=[0, 2]).item() == 0.0
    assert hidden_state_loss(kept, teacher, None).item() > 0       # relative depth pairs it with layers 1, 2
    with pytest.raises(ModelError, match="layer map"):
        hidden_state_loss(kept, teacher, None, layer_map=[0, 3])


def test_layer_map_only_pairs_kept_indices_with_a_teacher_as_deep_as_the_source():
    from edgeprune.train import layer_map

    recipe = recipe_from_dict({"pruning": [{"kind": "layers", "keep": [0, 2]}]})
    assert layer_map(recipe, tiny_bert(num_hidden_layers=3), source_depth=3) == [0, 2]
    assert layer_map(recipe, tiny_bert(num_hidden_layers=6), source_depth=3) is None  # relative depth
    assert layer_map(recipe_from_dict({}), tiny_bert(num_hidden_layers=3), source_depth=3) is None


def test_train_cuts_the_student_distils_by_kept_layer_and_converts(tiny_data_dir, tmp_path, monkeypatch):
    from transformers import AutoModelForSequenceClassification

    import edgeprune.distill as distill

    seen = []
    real = distill.hidden_state_loss
    monkeypatch.setattr(distill, "hidden_state_loss",
                        lambda *a, **kw: seen.append(a[3] if len(a) > 3 else kw.get("layer_map")) or real(*a, **kw))

    from edgeprune.convert import convert_checkpoint
    from edgeprune.runtime import Bundle

    model_dir = tmp_path / "three-layers"
    tiny_bert(num_hidden_layers=3).save_pretrained(model_dir)
    tiny_tokenizer().save_pretrained(model_dir)
    raw = tiny_recipe_dict(model_dir, tiny_data_dir)
    raw["pruning"] = [{"kind": "layers", "keep": [0, 2]},
                      {"kind": "heads", "final_sparsity": 0.25, "start": 0, "end": 4, "frequency": 2}]
    raw["distillation"] = {"teacher": "dense", "init_student": True, "hidden_weight": 1.0}
    recipe = recipe_from_dict(raw)
    out = train(recipe, tmp_path / "student", progress=False)

    state = read_pruning_state(out)
    assert state.layers_kept == [0, 2] and state.source_layers == 3
    assert all(int(layer) < 2 for layer in state.heads_pruned)    # pruned on the cut model's own indices
    student = AutoModelForSequenceClassification.from_pretrained(out)
    assert student.config.num_hidden_layers == 2
    teacher = AutoModelForSequenceClassification.from_pretrained(state.metrics["dense_checkpoint"])
    assert teacher.config.num_hidden_layers == 3
    assert seen and all(m == [0, 2] for m in seen)  # what training really paired, not just the helper

    bundle = convert_checkpoint(out, tmp_path / "bundle", quantize="none", progress=False)
    loaded = Bundle.load(bundle)
    assert loaded.manifest["sparsity"]["layers_kept"] == [0, 2]
    assert loaded.manifest["sparsity"]["source_layers"] == 3
    from edgeprune.commands.inspect import render

    shown = render(loaded.manifest, "0" * 64)
    assert "2 of 3 encoder layers kept (source layers 0, 2)" in shown and "(source layer 2)" in shown
    predictions = loaded.predict(["good fun", "bad awful"])
    assert [p.label for p in predictions] and all(p.label in loaded.labels for p in predictions)


def test_a_full_depth_run_records_every_layer(tiny_model_dir, tiny_data_dir, tmp_path):
    out = train(recipe_from_dict(tiny_recipe_dict(tiny_model_dir, tiny_data_dir)), tmp_path / "ck", progress=False)
    state = read_pruning_state(out)
    assert state.layers_kept == [0, 1] and state.source_layers == 2
