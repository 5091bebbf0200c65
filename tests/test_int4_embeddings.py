"""training.embeddings: int4 snaps the student's word table onto the grid convert stores it on and freezes
it, so the int4 bundle holds exactly what was trained."""

import json

import numpy as np
import pytest
import torch

from conftest import tiny_recipe_dict
from edgeprune.int4 import BLOCK_SIZE, is_on_grid, round_trip, snap_to_grid
from edgeprune.recipe import recipe_from_dict


def test_snap_is_idempotent_and_has_at_most_16_levels_per_block():
    rng = np.random.default_rng(0)
    table = rng.normal(0, 0.05, size=(40, 2 * BLOCK_SIZE + 7)).astype(np.float32)  # a ragged last block
    table[3] = 0.0  # an all-zero row stays zero (its blocks have a zero scale)
    table[5] = np.abs(table[5])  # an all-positive row: the grid still holds 0
    snapped = snap_to_grid(table)
    assert not is_on_grid(table) and is_on_grid(snapped)
    np.testing.assert_allclose(snap_to_grid(snapped), snapped, rtol=0, atol=1e-7)  # float rounding only
    assert np.abs(snapped - table).max() < np.ptp(table, axis=1).max() / 15  # within one step
    for row in snapped:
        for start in range(0, table.shape[1], BLOCK_SIZE):
            assert len(np.unique(row[start:start + BLOCK_SIZE])) <= 16
    assert not snapped[3].any()


def test_a_block_straddling_zero_evenly_is_snapped_to_a_fixed_point():
    """min = -max gives a zero point of 7.5: one rounding uses levels 0..14 only, and a second rounding
    would then choose a smaller scale; the snapped table must be what the quantizer stores unchanged."""
    block = np.linspace(-0.17, 0.17, BLOCK_SIZE, dtype=np.float32)[None, :]
    block[0, -1] = np.nextafter(np.float32(0.17), np.float32(1))  # zero point 7.4999..: rounds down to 7
    once = round_trip(block)
    assert not np.allclose(round_trip(once), once, atol=1e-6)  # one pass is not a fixed point here
    snapped = snap_to_grid(block)
    assert is_on_grid(snapped) and np.allclose(round_trip(snapped), snapped, rtol=0, atol=1e-6)


def test_a_model_without_a_word_table_is_a_model_error():
    from edgeprune.errors import ModelError
    from edgeprune.int4 import snap_and_freeze_word_embeddings

    with pytest.raises(ModelError, match="training.embeddings: train"):
        snap_and_freeze_word_embeddings(torch.nn.Linear(4, 4))


@pytest.fixture(scope="module")
def snapped_checkpoint(tiny_model_dir, tiny_data_dir, tmp_path_factory):
    from edgeprune.train import train

    raw = tiny_recipe_dict(tiny_model_dir, tiny_data_dir, embeddings="int4")
    out = tmp_path_factory.mktemp("int4") / "ck"
    train(recipe_from_dict(raw), out, progress=False, report=lambda line: None)
    return out


def test_training_keeps_the_word_table_on_the_grid_and_frozen(snapped_checkpoint, tiny_model_dir):
    from transformers import AutoModelForSequenceClassification

    start = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir)
    done = AutoModelForSequenceClassification.from_pretrained(snapped_checkpoint)
    before = start.get_input_embeddings().weight.detach().numpy()
    after = done.get_input_embeddings().weight.detach().numpy()
    assert not is_on_grid(before)
    np.testing.assert_array_equal(after, snap_to_grid(before))  # snapped once, then never trained
    moved = [n for n, p in done.named_parameters()
             if not torch.equal(p, dict(start.named_parameters())[n])]
    assert any("encoder" in n for n in moved)  # the rest of the network did train
    state = json.loads((snapped_checkpoint / "pruning_state.json").read_text())
    assert state["recipe"]["training"]["embeddings"] == "int4"


def test_an_int4_bundle_of_a_snapped_student_holds_the_trained_table(snapped_checkpoint, tiny_model_dir, tmp_path):
    """Convert's 4-bit storage changes nothing of a snapped table; an unsnapped one it rounds."""
    from convert_fixtures import SENTENCES

    from edgeprune.checkpoint import load_checkpoint
    from edgeprune.convert import convert_checkpoint
    from edgeprune.runtime import Bundle

    out = convert_checkpoint(snapped_checkpoint, tmp_path / "b", quantize="none", embeddings="int4",
                             progress=False)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["quantization"]["embeddings"]["max_rounding"] < 1e-6
    model, tok, _, _ = load_checkpoint(snapped_checkpoint)
    with torch.no_grad():
        expected = model(**tok(SENTENCES, padding=True, return_tensors="pt")).logits.numpy()
    np.testing.assert_allclose(Bundle.load(out).logits(SENTENCES), expected, atol=1e-4)

    from convert_fixtures import make_checkpoint

    plain = make_checkpoint(tmp_path / "plain")
    rounded = convert_checkpoint(plain, tmp_path / "p", quantize="none", embeddings="int4", progress=False,
                                 int8_min_agreement=0.5, int8_max_drop=1.0)
    assert json.loads((rounded / "manifest.json").read_text())["quantization"]["embeddings"]["max_rounding"] > 1e-4
