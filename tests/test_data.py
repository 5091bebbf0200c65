import json

import pytest

from edgeprune.data import load_examples, tokenize
from edgeprune.data_files import find_split, read_examples
from edgeprune.errors import DataError, ModelError
from edgeprune.models import load_classifier, resolve_model_path
from edgeprune.recipe import DataConfig
from conftest import tiny_tokenizer


def test_csv_and_jsonl_folders_read_like_tsv(tmp_path):
    csv_dir, jsonl_dir = tmp_path / "csv", tmp_path / "jsonl"
    csv_dir.mkdir(), jsonl_dir.mkdir()
    rows = [("pos", 'a "quoted", great film'), ("neg", "dull, boring"), ("pos", "lovely")]
    (csv_dir / "train.csv").write_text("text,stars\n" + "".join(f'"{t.replace(chr(34), 2 * chr(34))}",{l}\n'
                                                               for l, t in rows))
    (csv_dir / "validation.csv").write_text("text,stars\n\"fine\",pos\n")
    (jsonl_dir / "train.jsonl").write_text("".join(json.dumps({"text": t, "stars": l}) + "\n" for l, t in rows))
    (jsonl_dir / "dev.jsonl").write_text(json.dumps({"text": "fine", "stars": "pos"}) + "\n")
    for folder in (csv_dir, jsonl_dir):
        data = load_examples(DataConfig(path=str(folder), text_column="text", label_column="stars"))
        assert data.train.texts[0] == 'a "quoted", great film'
        assert data.labels == ["neg", "pos"] and data.ids(data.train) == [1, 0, 1]
        assert data.eval.texts == ["fine"]


def test_numeric_labels_sort_numerically_and_take_names(tmp_path):
    (tmp_path / "train.tsv").write_text("label\tsentence\n10\ta\n2\tb\n10\tc\n")
    (tmp_path / "dev.tsv").write_text("label\tsentence\n2\td\n")
    data = load_examples(DataConfig(path=str(tmp_path), label_names=["low", "high"]))
    assert data.raw_labels == ["2", "10"] and data.labels == ["low", "high"] and data.ids(data.train) == [1, 0, 1]
    with pytest.raises(DataError, match="label_names has 3 names"):
        load_examples(DataConfig(path=str(tmp_path), label_names=["a", "b", "c"]))


def test_train_limit_takes_a_seeded_shuffled_subset(tiny_data_dir):
    a = load_examples(DataConfig(path=str(tiny_data_dir), train_limit=10), seed=1)
    b = load_examples(DataConfig(path=str(tiny_data_dir), train_limit=10), seed=1)
    c = load_examples(DataConfig(path=str(tiny_data_dir), train_limit=10), seed=2)
    full = read_examples(find_split(tiny_data_dir, "train"), "sentence", "label")
    assert len(a.train.texts) == 10 and a.train.texts == b.train.texts != c.train.texts
    assert a.train.texts != full.texts[:10]


def test_tokenize_leaves_padding_to_the_collator(tiny_data_dir):
    from transformers import DataCollatorWithPadding

    tok = tiny_tokenizer()
    data = load_examples(DataConfig(path=str(tiny_data_dir), max_length=16))
    ds = tokenize(data.train, data.ids(data.train), tok, max_length=5)
    assert max(len(x) for x in ds["input_ids"]) == 5  # truncated, not padded
    batch = DataCollatorWithPadding(tok)([ds[0], ds[1]])
    assert batch["input_ids"].shape[1] == max(len(ds[0]["input_ids"]), len(ds[1]["input_ids"]))


def _offline(monkeypatch):
    """What a kiosk build machine without hub access sees, without waiting for network retries."""
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True, raising=False)


def test_unreachable_hub_dataset_is_a_clear_error(monkeypatch):
    _offline(monkeypatch)
    with pytest.raises(DataError, match="cannot load hub dataset 'edgeprune-test/no-such-set'"):
        load_examples(DataConfig(path="edgeprune-test/no-such-set"))


def test_unreachable_hub_model_is_a_clear_error(monkeypatch):
    _offline(monkeypatch)
    assert resolve_model_path("edgeprune-test/no-such-model") == "edgeprune-test/no-such-model"
    with pytest.raises(ModelError, match="hub id"):
        load_classifier("edgeprune-test/no-such-model", ["a", "b"])


def test_embedded_model_resolves_to_the_shipped_minilm():
    from pathlib import Path

    path = Path(resolve_model_path("embedded:minilm-l6"))
    assert (path / "config.json").is_file() and (path / "model.safetensors").is_file()
    with pytest.raises(ModelError, match="embedded:minilm-l6"):
        resolve_model_path("embedded:gpt-17")
