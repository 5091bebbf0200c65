"""training.pooling: mean: the head reads the masked mean of the last layer, in training, in every loader
and in the bundle's graph."""

import json

import numpy as np
import pytest
import torch

from conftest import tiny_bert, tiny_recipe_dict, tiny_tokenizer
from edgeprune.recipe import recipe_from_dict

TEXTS = ["the movie was great and lovely", "bad awful dull film", "good fine",
         "the plot is very quite boring but charming acting", "tedious weak poor story"]


def _mean_pooled(model):
    from edgeprune.pooling import CONFIG_KEY, mean_pooling_class

    setattr(model.config, CONFIG_KEY, "mean")
    twin = mean_pooling_class(model.config)(model.config).eval()
    twin.load_state_dict(model.state_dict())
    return twin


def _one_at_a_time(model, tok, texts):
    with torch.no_grad():
        return np.concatenate([model(**tok([t], return_tensors="pt")).logits.numpy() for t in texts])


def test_the_head_reads_the_mean_of_the_real_tokens_so_padding_changes_nothing():
    cls_model, tok = tiny_bert(seed=4), tiny_tokenizer()
    model = _mean_pooled(cls_model)
    batch = tok(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        got = model(**batch).logits
        hidden = model.bert(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        mean = (hidden * mask).sum(1) / mask.sum(1)
        expected = model.classifier(torch.tanh(model.bert.pooler.dense(mean)))
        cls_logits = cls_model(**batch).logits
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    np.testing.assert_allclose(got.numpy(), _one_at_a_time(model, tok, TEXTS), rtol=0, atol=1e-5)
    assert (got - cls_logits).abs().max() > 1e-3  # the same weights read [CLS] give other logits
    labels = torch.tensor([1, 0, 1, 0, 0])
    model.train()
    out = model(**batch, labels=labels)
    out.loss.backward()
    assert model.bert.pooler.dense.weight.grad.abs().sum() > 0  # every weight takes part (DDP-safe)


def test_a_model_family_without_the_mean_head_is_a_clear_error(tmp_path):
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    from edgeprune.errors import ModelError
    from edgeprune.models import load_classifier

    config = DistilBertConfig(vocab_size=64, dim=32, n_layers=1, n_heads=4, hidden_dim=37,
                              max_position_embeddings=64)
    DistilBertForSequenceClassification(config).save_pretrained(tmp_path)
    tiny_tokenizer().save_pretrained(tmp_path)
    with pytest.raises(ModelError, match="training.pooling: mean supports BERT-style models") as err:
        load_classifier(str(tmp_path), ["negative", "positive"], pooling="mean")
    assert "training.pooling: cls" in err.value.fix


@pytest.fixture(scope="module")
def mean_kiosk_checkpoint(tiny_model_dir, tiny_data_dir, tmp_path_factory):
    """The kiosk recipe's shape in miniature: dense mean-pooled teacher, a pruned student distilled from
    it, int4 word table and int8-aware training."""
    from edgeprune.train import train

    raw = tiny_recipe_dict(tiny_model_dir, tiny_data_dir, pooling="mean", embeddings="int4",
                           quantize="int8-dynamic-per-channel")
    raw["distillation"] = {"teacher": "dense", "init_student": True, "hidden_weight": 1.0}
    out = tmp_path_factory.mktemp("mean") / "ck"
    train(recipe_from_dict(raw), out, progress=False, report=lambda line: None)
    return out


def test_every_loader_rebuilds_the_mean_head_of_a_trained_checkpoint_and_its_teacher(mean_kiosk_checkpoint):
    from edgeprune.checkpoint import load_checkpoint, load_classifier_folder
    from edgeprune.pooling import CONFIG_KEY

    config = json.loads((mean_kiosk_checkpoint / "config.json").read_text())
    assert config[CONFIG_KEY] == "mean"
    state = json.loads((mean_kiosk_checkpoint / "pruning_state.json").read_text())
    teacher, _ = load_classifier_folder(state["metrics"]["dense_checkpoint"])
    model, _, _, _ = load_checkpoint(mean_kiosk_checkpoint)
    for m in (teacher, model):
        assert type(m).__name__ == "MeanPoolingBertForSequenceClassification"


def test_the_bundle_graph_pools_the_mean_and_computes_what_was_trained(mean_kiosk_checkpoint, tmp_path):
    """Structured removal, fusion, int8 per channel and int4 embeddings on a mean-pooled student: the
    bundle's logits are the trained (int8-simulated) network's, one sentence at a time as on the kiosk."""
    import onnx

    from edgeprune.checkpoint import load_checkpoint
    from edgeprune.convert import convert_checkpoint
    from edgeprune.fake_int8 import Int8Aware
    from edgeprune.runtime import Bundle

    out = convert_checkpoint(mean_kiosk_checkpoint, tmp_path / "b", quantize="int8-dynamic-per-channel",
                             embeddings="int4", progress=False, int8_min_agreement=0.5, int8_max_drop=1.0)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["structured"]
    graph = onnx.load(str(out / "model.onnx"), load_external_data=False)
    assert any(n.op_type == "ReduceSum" for n in graph.graph.node)
    model, tok, _, _ = load_checkpoint(mean_kiosk_checkpoint)
    Int8Aware(model, "int8-dynamic-per-channel", word_table="int4")
    trained = _one_at_a_time(model, tok, TEXTS)
    got = np.concatenate([Bundle.load(out).logits([t]) for t in TEXTS])
    np.testing.assert_allclose(got, trained, rtol=0, atol=1e-5)
