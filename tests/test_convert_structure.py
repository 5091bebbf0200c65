import copy

import pytest
import torch

from convert_fixtures import HEAD_SIZE, INTERMEDIATE, SENTENCES, STRUCTURED, structured_ckpt  # noqa: F401
from edgeprune.checkpoint import load_checkpoint
from edgeprune.convert.structure import remove_structure
from edgeprune.errors import CheckpointError, ModelError


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_removal_shrinks_matrices_and_changes_no_output(structured_ckpt, attention):
    model, tok, _, state = load_checkpoint(structured_ckpt)
    model.set_attn_implementation(attention)
    enc = tok(SENTENCES, padding=True, return_tensors="pt")  # padding exercises the attention mask
    with torch.no_grad():
        before = model(**enc).logits
        shrunk = copy.deepcopy(model)
        report = remove_structure(shrunk, state.heads_pruned, state.neurons_pruned)
        after = shrunk(**enc).logits
    assert torch.allclose(before, after, atol=1e-4)
    layers = shrunk.bert.encoder.layer
    assert layers[0].attention.self.query.weight.shape == (2 * HEAD_SIZE, 32)
    assert layers[0].attention.output.dense.weight.shape == (32, 2 * HEAD_SIZE)
    assert layers[0].attention.self.num_attention_heads == 2
    assert not hasattr(layers[1].attention, "self")  # all heads gone: bias + residual + LayerNorm left
    assert not hasattr(layers[0].output, "dense")    # all neurons gone
    assert layers[1].intermediate.dense.weight.shape == (INTERMEDIATE - 3, 32)
    assert layers[1].output.dense.weight.shape == (32, INTERMEDIATE - 3)
    assert [(s.heads_kept, s.neurons_kept) for s in report.layers] == [(2, 0), (0, INTERMEDIATE - 3)]
    # the shortcut is not an identity: dropping the layer outright would change the output
    assert not torch.allclose(before, torch.zeros_like(before))


def test_layer_with_nothing_left_is_reduced_exactly(tmp_path):
    from convert_fixtures import make_checkpoint

    ck = make_checkpoint(tmp_path / "ck", heads={0: [0, 1, 2, 3]}, neurons={0: list(range(INTERMEDIATE))})
    model, tok, _, state = load_checkpoint(ck)
    enc = tok(SENTENCES[:4], padding=True, return_tensors="pt")
    with torch.no_grad():
        before = model(**enc).logits
        report = remove_structure(model, state.heads_pruned, state.neurons_pruned)
        after = model(**enc).logits
    assert report.layers[0].reduced and report.to_json()[0]["reduced_to_bias_layernorm"]
    assert torch.allclose(before, after, atol=1e-5)


def test_state_that_lies_about_zeros_is_refused(structured_ckpt):
    model, _, _, state = load_checkpoint(structured_ckpt)
    with pytest.raises(CheckpointError, match="layer 0 head 0"):
        remove_structure(model, {"0": [0]}, {})  # head 0 of layer 0 was never pruned


def test_out_of_range_layer_is_refused(structured_ckpt):
    model, _, _, _ = load_checkpoint(structured_ckpt)
    with pytest.raises(CheckpointError, match="layer 7"):
        remove_structure(model, {"7": [0]}, {})


def test_non_bert_model_is_a_model_error():
    with pytest.raises(ModelError, match="BERT-style"):
        remove_structure(torch.nn.Linear(2, 2), {}, {})
