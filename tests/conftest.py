"""Shared fixtures: a tiny random BERT classifier with a real WordPiece tokenizer, and tiny local data.

Odd sizes (hidden 32, 2 layers, 4 heads, intermediate 37) expose shape bugs; everything is built
offline from a config in seconds.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

POSITIVE = "great good lovely superb fine delightful charming brilliant".split()
NEGATIVE = "bad awful dull boring terrible poor weak tedious".split()
FILLER = "the movie film story plot acting was is a very quite and but".split()
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def tiny_tokenizer():
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordPiece
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(SPECIALS + sorted(set(POSITIVE + NEGATIVE + FILLER)))}
    tok = Tokenizer(WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                   cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
                                   model_max_length=128)


def tiny_bert(num_labels: int = 2, seed: int = 0, **overrides):
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    sizes = dict(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                 intermediate_size=37, max_position_embeddings=64)
    config = BertConfig(num_labels=num_labels, id2label={i: f"l{i}" for i in range(num_labels)},
                        label2id={f"l{i}": i for i in range(num_labels)}, **{**sizes, **overrides})
    return BertForSequenceClassification(config).eval()


def make_sentences(n: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.randint(0, 1)
        words = rng.sample(FILLER, 4) + rng.sample(POSITIVE if label else NEGATIVE, 2)
        rng.shuffle(words)
        rows.append((str(label), " ".join(words)))
    return rows


def write_tsv(path: Path, rows) -> None:
    path.write_text("label\tsentence\n" + "".join(f"{label}\t{text}\n" for label, text in rows))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-bert")
    tiny_bert().save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-data")
    write_tsv(folder / "train.tsv", make_sentences(96, seed=1))
    write_tsv(folder / "dev.tsv", make_sentences(32, seed=2))
    return folder


def tiny_recipe_dict(model_dir: Path, data_dir: Path, **training) -> dict:
    return {
        "model": str(model_dir),
        "data": {"path": str(data_dir), "max_length": 16},
        "training": {"epochs": 1, "batch_size": 8, "eval_batch_size": 32, "learning_rate": 1e-3,
                     "save_steps": 4, "logging_steps": 4, "seed": 7, **training},
        "pruning": [
            {"kind": "heads", "final_sparsity": 0.25, "start": 0, "end": 4, "frequency": 2},
            {"kind": "neurons", "final_sparsity": 0.3, "start": 0, "end": 6, "frequency": 2, "scope": "local"},
            {"kind": "magnitude", "final_sparsity": 0.5, "start": 2, "end": 8, "frequency": 2,
             "params": ["re:.*attention\\.self\\.(query|key|value)$"]},
        ],
    }


@pytest.fixture
def tiny_recipe(tiny_model_dir, tiny_data_dir, tmp_path) -> Path:
    import yaml

    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe_dict(tiny_model_dir, tiny_data_dir)))
    return path
