"""Vocabulary trimming keeps what the training text needs, renumbers ids, and shrinks the embeddings."""

import json

import pytest
import torch

from conftest import tiny_bert, tiny_tokenizer
from edgeprune.convert.vocab import apply_to_model, plan_trim, tokenization_agreement
from edgeprune.errors import ModelError


def _tokenizer_json():
    return tiny_tokenizer().backend_tokenizer.to_str()


def test_trim_keeps_specials_training_tokens_and_characters():
    from tokenizers import Tokenizer

    original = _tokenizer_json()
    plan = plan_trim(original, ["the film was great", "a dull story"])
    vocab = json.loads(plan.tokenizer_json)["model"]["vocab"]
    assert plan.after < plan.before and len(vocab) == plan.after
    assert {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "great", "dull", "story"} <= set(vocab)
    assert "lovely" not in vocab and "boring" not in vocab
    assert sorted(vocab.values()) == list(range(plan.after))  # contiguous new ids
    trimmed = Tokenizer.from_str(plan.tokenizer_json)
    enc = trimmed.encode("the film was great")
    old = Tokenizer.from_str(original).encode("the film was great")
    assert enc.tokens == old.tokens  # [CLS]/[SEP] template still right after renumbering
    assert [plan.kept_ids[i] for i in enc.ids] == old.ids


def test_trimmed_model_computes_the_same_on_kept_tokens():
    from tokenizers import Tokenizer

    model = tiny_bert()
    original = _tokenizer_json()
    plan = plan_trim(original, ["the film was great", "a dull story"])
    text = "a great story"
    old_ids = torch.tensor([Tokenizer.from_str(original).encode(text).ids])
    before = model(input_ids=old_ids).logits
    apply_to_model(model, plan.kept_ids)
    assert model.get_input_embeddings().weight.shape[0] == plan.after == model.config.vocab_size
    new_ids = torch.tensor([Tokenizer.from_str(plan.tokenizer_json).encode(text).ids])
    assert torch.allclose(model(input_ids=new_ids).logits, before, atol=1e-6)


def test_agreement_counts_sentences_split_differently():
    original = _tokenizer_json()
    plan = plan_trim(original, ["the film was great"])
    assert tokenization_agreement(original, plan, ["the film was great", "the film"]) == 1.0
    # "lovely" was not in the training text: its characters are not in this toy vocab, so it becomes [UNK]
    assert tokenization_agreement(original, plan, ["the film was great", "lovely"]) == 0.5


def test_only_wordpiece_is_trimmed():
    spec = json.loads(_tokenizer_json())
    spec["model"]["type"] = "BPE"
    with pytest.raises(ModelError, match="WordPiece"):
        plan_trim(json.dumps(spec), ["x"])
