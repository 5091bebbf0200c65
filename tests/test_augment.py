import random

import pytest
import torch
import torch.nn.functional as F

from conftest import tiny_recipe_dict, tiny_tokenizer
from edgeprune.augment import AUGMENTED, AugmentedDataset, WordSwapper, nearest_neighbours, swappable_ids
from edgeprune.distill import labelled_loss
from edgeprune.errors import RecipeError
from edgeprune.recipe import recipe_from_dict


def test_neighbours_are_the_closest_rows_by_cosine_never_the_word_itself():
    table = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 2.0], [-1.0, 0.0]])
    found = nearest_neighbours(table, [1, 2, 3, 4, 5], k=2, chunk=2)  # chunks smaller than the set
    assert found[1] == [2, 4]
    assert found[3] == [4, 2]
    assert all(i not in found[i] for i in found)
    assert set(found) == {1, 2, 3, 4, 5} and 0 not in {j for v in found.values() for j in v}


def test_only_whole_alphabetic_words_are_swappable():
    tok = tiny_tokenizer()
    ids = swappable_ids(tok)
    tokens = set(tok.convert_ids_to_tokens(ids))
    assert {"good", "bad", "movie"} <= tokens
    assert not tokens & {"[PAD]", "[CLS]", "[SEP]", "[MASK]", "[UNK]", "a"}


def test_a_swapper_changes_single_piece_words_only():
    # 10 and 11 have neighbours; 11 followed by a continuation piece (50) is part of a longer word
    swapper = WordSwapper({10: [20], 11: [21]}, frozenset({50}), rate=1.0, rng=random.Random(0))
    assert swapper([2, 10, 11, 50, 11, 3]) == ([2, 20, 11, 50, 21, 3], 2)
    never = WordSwapper({10: [20]}, frozenset(), rate=0.0, rng=random.Random(0))
    assert never([2, 10, 10, 3]) == ([2, 10, 10, 3], 0)
    half = WordSwapper({10: [20]}, frozenset(), rate=0.5, rng=random.Random(1))
    swapped = sum(half([10] * 1000)[1] for _ in range(4))
    assert 1800 < swapped < 2200


def test_augmented_examples_keep_length_and_are_marked():
    base = [{"input_ids": [2, 10, 12, 3], "attention_mask": [1] * 4, "labels": i % 2} for i in range(400)]
    swapper = WordSwapper({10: [20]}, frozenset(), rate=1.0, rng=random.Random(0))
    none = AugmentedDataset(base, swapper, probability=0.0)
    assert len(none) == 400 and all(none[i][AUGMENTED] == 0 and none[i]["input_ids"] == [2, 10, 12, 3]
                                    for i in range(400))
    some = AugmentedDataset(base, swapper, probability=0.5)
    items = [some[i] for i in range(400)]
    marked = [it for it in items if it[AUGMENTED]]
    assert 150 < len(marked) < 250
    assert all(it["input_ids"] == [2, 20, 12, 3] and it["labels"] in (0, 1) for it in marked)
    assert all(it["input_ids"] == [2, 10, 12, 3] for it in items if not it[AUGMENTED])
    assert base[0]["input_ids"] == [2, 10, 12, 3]  # the base data is never rewritten in place
    # an example with nothing to swap is not marked: it still carries its label
    bare = AugmentedDataset([{"input_ids": [2, 12, 3], "labels": 1}], swapper, probability=1.0)
    assert bare[0][AUGMENTED] == 0


def test_the_hard_loss_skips_augmented_examples():
    torch.manual_seed(0)
    logits, labels = torch.randn(6, 2, requires_grad=True), torch.tensor([0, 1, 1, 0, 1, 0])
    augmented = torch.tensor([0, 1, 0, 1, 1, 0])
    keep = augmented == 0
    assert torch.allclose(labelled_loss(logits, labels, augmented), F.cross_entropy(logits[keep], labels[keep]))
    assert torch.allclose(labelled_loss(logits, labels, torch.zeros(6)), F.cross_entropy(logits, labels))
    nothing = labelled_loss(logits, labels, torch.ones(6))
    assert nothing.item() == 0.0 and nothing.requires_grad


def test_augment_fields_are_checked_and_stay_out_of_old_hashes_and_teachers():
    with pytest.raises(RecipeError, match="distillation.augment"):
        recipe_from_dict({"distillation": {"augment": 0.5}})  # no teacher to label rewritten sentences
    with pytest.raises(RecipeError, match="distillation.augment"):
        recipe_from_dict({"distillation": {"teacher": "dense", "augment": 1.5}})
    with pytest.raises(RecipeError, match="distillation.augment_words"):
        recipe_from_dict({"distillation": {"teacher": "dense", "augment": 0.5, "augment_words": 0}})
    plain = recipe_from_dict({"distillation": {"teacher": "dense"}})
    assert "augment" not in plain.to_dict()["distillation"] and "augment_words" not in plain.to_dict()["distillation"]
    augmented = recipe_from_dict({"distillation": {"teacher": "dense", "augment": 0.5}})
    assert augmented.sha256() != plain.sha256()
    assert augmented.dense_teachers()[0].sha256() == plain.dense_teachers()[0].sha256()  # one teacher for both


def test_training_with_augmentation_feeds_the_teacher_rewritten_sentences(tiny_model_dir, tiny_data_dir,
                                                                        tmp_path, monkeypatch):
    import edgeprune.distill as distill
    from edgeprune.checkpoint import read_pruning_state
    from edgeprune.train import train

    marks = []

    def recording(logits, labels, augmented):
        marks.extend(augmented.tolist())
        return labelled_loss(logits, labels, augmented)

    raw = tiny_recipe_dict(tiny_model_dir, tiny_data_dir)
    raw["distillation"] = {"teacher": "dense", "init_student": True}
    plain = read_pruning_state(train(recipe_from_dict(raw), tmp_path / "plain", progress=False))
    monkeypatch.setattr(distill, "labelled_loss", recording)
    raw["distillation"].update(augment=0.5, augment_words=0.5)
    lines = []
    out = train(recipe_from_dict(raw), tmp_path / "augmented", progress=False, report=lines.append)
    state = read_pruning_state(out)
    assert len(marks) == plain.metrics["train_examples"]  # every training example passed, once (1 epoch)
    assert 0 < sum(marks) < len(marks)  # some rewritten, some not
    assert any(line.startswith("augment:") for line in lines)
    assert state.metrics["train_loss"] != plain.metrics["train_loss"]
    assert state.recipe["distillation"]["augment"] == 0.5
