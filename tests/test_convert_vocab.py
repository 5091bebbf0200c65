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


def test_agreement_ignores_batch_padding_and_truncation():
    """A tokenizer saved with padding=longest pads a whole batch to its longest sentence: one sentence
    that splits longer must not make every other sentence count as changed."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(_tokenizer_json())
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    tok.enable_truncation(max_length=4)
    padded = tok.to_str()
    plan = plan_trim(padded, ["the film was great and very good but dull"])
    assert "dull" in json.loads(plan.tokenizer_json)["model"]["vocab"]  # past the truncation length
    assert tokenization_agreement(padded, plan, ["the film", "lovely", "a great film"]) == pytest.approx(2 / 3)


def test_only_wordpiece_is_trimmed():
    spec = json.loads(_tokenizer_json())
    spec["model"]["type"] = "BPE"
    with pytest.raises(ModelError, match="WordPiece"):
        plan_trim(json.dumps(spec), ["x"])


def test_convert_with_a_trimmed_vocabulary_is_verified_and_smaller(tmp_path):
    """End to end on a tiny checkpoint: fewer embedding rows, a tokenizer that matches, verified labels."""
    from conftest import make_sentences, write_tsv
    from edgeprune.cli import main
    from edgeprune.runtime import Bundle
    from edgeprune.train import train
    from edgeprune.recipe import recipe_from_dict

    data = tmp_path / "data"
    data.mkdir()
    write_tsv(data / "train.tsv", make_sentences(96, seed=1))
    write_tsv(data / "dev.tsv", make_sentences(32, seed=2))
    model_dir = tmp_path / "model"
    big = tiny_tokenizer()
    # a vocabulary with words the data never uses, as a real one has
    from tokenizers import Tokenizer
    spec = json.loads(big.backend_tokenizer.to_str())
    vocab = spec["model"]["vocab"]
    for i in range(200):
        vocab[f"unused{i}"] = len(vocab)
    from transformers import PreTrainedTokenizerFast
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(spec)), unk_token="[UNK]",
                                  pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    tiny_bert(vocab_size=len(vocab)).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    ck = train(recipe_from_dict({"model": str(model_dir), "data": {"path": str(data), "max_length": 16},
                                 "training": {"epochs": 2, "batch_size": 8, "learning_rate": 1e-3}}),
               tmp_path / "ck", progress=False)
    full, trimmed = tmp_path / "full", tmp_path / "trimmed"
    assert main(["convert", str(ck), "-o", str(full), "--quiet"]) == 0
    assert main(["convert", str(ck), "-o", str(trimmed), "--vocabulary", "train", "--quiet",
                 "--int8-min-agreement", "0.9"]) == 0
    b_full, b_trim = Bundle.load(full), Bundle.load(trimmed)
    info = b_trim.manifest["vocabulary"]
    assert info["mode"] == "train" and info["vocab_after"] < info["vocab_before"] == len(vocab)
    assert info["tokenization_agreement"] == 1.0  # the toy dev set uses only training words
    assert b_trim.manifest["sizes"]["bundle_bytes"] < b_full.manifest["sizes"]["bundle_bytes"]
    texts = ["a great film", "dull and boring story"]
    assert [p.label for p in b_trim.predict(texts)] == [p.label for p in b_full.predict(texts)]
    import numpy as np

    full_scores = np.array([p.scores for p in b_full.predict(texts)])
    trim_scores = np.array([p.scores for p in b_trim.predict(texts)])
    assert np.allclose(full_scores, trim_scores, atol=1e-4)  # same tokens, same rows: same outputs
