"""The train stage end to end on a tiny BERT: checkpoint contract, bad input, resume."""

import json
import subprocess
import sys

import pytest
import torch
import yaml

from conftest import tiny_recipe_dict, write_tsv
from edgeprune.checkpoint import MASKS_FILE, STATE_FILE, load_checkpoint, load_masks, read_pruning_state
from edgeprune.cli import main
from edgeprune.recipe import recipe_from_dict
from edgeprune.train import train, work_dir_for


def write_recipe(tmp_path, raw, name="recipe.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw))
    return path


def test_train_writes_a_checkpoint_plain_transformers_can_load(tiny_recipe, tmp_path, capsys):
    from transformers import AutoModelForSequenceClassification

    out = tmp_path / "ck"
    assert main(["train", str(tiny_recipe), "-o", str(out), "--no-progress", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["step"] == 12
    assert {MASKS_FILE, STATE_FILE, "config.json", "model.safetensors", "tokenizer.json"} <= {
        p.name for p in out.iterdir()}
    assert not work_dir_for(out).exists()

    model = AutoModelForSequenceClassification.from_pretrained(out)
    params = dict(model.named_parameters())
    masks = load_masks(out)
    for name, mask in masks.items():
        assert params[name][~mask].abs().max() == 0, name
    state = read_pruning_state(out)
    assert state.step == 12 and state.total_steps == 12
    assert sum(len(v) for v in state.heads_pruned.values()) == 2  # 25% of 8 heads
    assert all(len(v) == round(0.3 * 37) for v in state.neurons_pruned.values())
    assert 0 <= state.metrics["eval_accuracy"] <= 1 and state.metrics["evaluations"]
    assert state.recipe["pruning"][2]["final_sparsity"] == 0.5
    q = "bert.encoder.layer.0.attention.self.query.weight"
    assert state.per_layer_sparsity[q] > 0.5  # heads removed, then half of the rest
    _, _, loaded_masks, _ = load_checkpoint(out)
    assert set(loaded_masks) == set(masks)


def test_existing_output_is_never_overwritten(tiny_recipe, tmp_path, capsys):
    out = tmp_path / "ck"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    assert main(["train", str(tiny_recipe), "-o", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--overwrite" in err
    assert (out / "keep.txt").read_text() == "precious"


def _bad_recipes(model_dir, data_dir, tmp_path):
    base = tiny_recipe_dict(model_dir, data_dir)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "train.tsv").write_text("label\tsentence\n")
    (empty / "dev.tsv").write_text("label\tsentence\n")
    one_class = tmp_path / "one-class"
    one_class.mkdir()
    write_tsv(one_class / "train.tsv", [("1", "good film")] * 10)
    write_tsv(one_class / "dev.tsv", [("1", "good film")] * 4)
    return {
        "unknown key": ({**base, "pruning_typo": []}, "pruning_typo"),
        "wrong type": ({**base, "training": {**base["training"], "epochs": "three"}}, "training.epochs"),
        "out of range": ({**base, "pruning": [{"final_sparsity": 1.2}]}, "pruning.0.final_sparsity"),
        "missing model": ({**base, "model": str(tmp_path / "no-such-model")}, "no-such-model"),
        "missing data": ({**base, "data": {"path": str(tmp_path / "no-such-data")}}, "no-such-data"),
        "empty data": ({**base, "data": {"path": str(empty)}}, "no rows"),
        "one class": ({**base, "data": {"path": str(one_class)}}, "one class"),
        "bad label column": ({**base, "data": {"path": str(data_dir), "label_column": "stars"}}, "stars"),
        "bad layer": ({**base, "pruning": [{"params": ["bert.encoder.layer.0.attention.self.querry"]}]},
                      "attention.self.query"),
        "bad trainer key": ({**base, "training": {**base["training"], "lr_sheduler_type": "constant"}},
                            "lr_scheduler_type"),
    }


@pytest.mark.parametrize("case", ["unknown key", "wrong type", "out of range", "missing model", "missing data",
                                  "empty data", "one class", "bad label column", "bad layer", "bad trainer key"])
def test_bad_recipe_exits_2_with_one_line_and_leaves_nothing(case, tiny_model_dir, tiny_data_dir, tmp_path,
                                                             capsys):
    raw, needle = _bad_recipes(tiny_model_dir, tiny_data_dir, tmp_path)[case]
    recipe = write_recipe(tmp_path, raw)
    out = tmp_path / "out" / "ck"
    assert main(["train", str(recipe), "-o", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert needle in err and "fix:" in err
    assert not out.exists() and not work_dir_for(out).exists()


def test_cli_error_is_one_line_without_traceback(tmp_path):
    recipe = write_recipe(tmp_path, {"modle": "x"})
    proc = subprocess.run([sys.executable, "-m", "edgeprune", "train", str(recipe), "-o", str(tmp_path / "o")],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
    assert "unknown key modle" in proc.stderr and "did you mean 'model'" in proc.stderr


class _Kill(Exception):
    pass


def _killer(at_step):
    from transformers import TrainerCallback

    class Killer(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == at_step:
                raise _Kill()

    return Killer()


@pytest.mark.parametrize("cut,kiosk_head", [(False, False), (True, False), (True, True)],
                         ids=["full-depth", "layers-cut", "kiosk-head"])
def test_resume_after_a_kill_ends_with_the_same_masks(tiny_model_dir, tiny_data_dir, tmp_path, cut, kiosk_head):
    raw = tiny_recipe_dict(tiny_model_dir, tiny_data_dir)
    raw["pruning"][0]["score"] = "taylor"  # accumulated state must survive the restart too
    if cut:  # the resumed model must be cut (and its table snapped) the same way before the Trainer restores it
        raw["pruning"].append({"kind": "layers", "keep": [1]})
        raw["training"]["embeddings"] = "int4"
    if kiosk_head:  # the kiosk recipe's head and rounding: the resumed model must be rebuilt as the same class
        raw["training"].update(quantize="int8-dynamic-per-channel", pooling="mean")
    recipe = recipe_from_dict(raw)
    straight = train(recipe, tmp_path / "straight", progress=False)

    killed = tmp_path / "killed"
    with pytest.raises(_Kill):
        train(recipe, killed, progress=False, extra_callbacks=[_killer(6)])  # last save at step 4
    assert not killed.exists() and (work_dir_for(killed) / "checkpoint-4").is_dir()
    with pytest.raises(Exception, match="--resume"):
        train(recipe, killed, progress=False)
    changed = recipe_from_dict({**raw, "training": {**raw["training"], "learning_rate": 5e-4}})
    with pytest.raises(Exception, match="different recipe"):
        train(changed, killed, resume=True, progress=False)
    train(recipe, killed, resume=True, progress=False)

    a, b = load_masks(straight), load_masks(killed)
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    sa, sb = read_pruning_state(straight), read_pruning_state(killed)
    assert sa.heads_pruned == sb.heads_pruned and sa.neurons_pruned == sb.neurons_pruned
    assert [h["step"] for h in sa.history] == [h["step"] for h in sb.history]
    assert sa.layers_kept == sb.layers_kept == ([1] if cut else [0, 1])
    from transformers import AutoConfig

    assert AutoConfig.from_pretrained(killed).num_hidden_layers == (1 if cut else 2)  # the resumed model itself
    if cut:  # the frozen table survives the restart unchanged and on the grid
        from safetensors.torch import load_file

        from edgeprune.int4 import is_on_grid

        key = "bert.embeddings.word_embeddings.weight"
        ta, tb = load_file(straight / "model.safetensors")[key], load_file(killed / "model.safetensors")[key]
        assert torch.equal(ta, tb) and is_on_grid(tb.numpy())
    if kiosk_head:
        from safetensors import safe_open

        from edgeprune.checkpoint import load_classifier_folder
        from edgeprune.pooling import config_pooling

        assert config_pooling(AutoConfig.from_pretrained(killed)) == "mean"
        model, _ = load_classifier_folder(killed)
        assert type(model).__name__ == "MeanPoolingBertForSequenceClassification"
        assert sb.recipe["training"]["quantize"] == "int8-dynamic-per-channel"
        keys = [set(safe_open(str(f / "model.safetensors"), "pt").keys()) for f in (straight, killed)]
        assert keys[0] == keys[1] and not any("parametriz" in k or "original" in k for k in keys[1])


def test_resume_without_an_interrupted_run_is_an_error(tiny_recipe, tmp_path, capsys):
    assert main(["train", str(tiny_recipe), "-o", str(tmp_path / "x"), "--resume", "--no-progress"]) == 2
    assert "no interrupted run" in capsys.readouterr().err


def test_resume_skips_a_checkpoint_without_pruner_state(tiny_model_dir, tiny_data_dir, tmp_path):
    """A kill between the Trainer's save and the pruner's must not resume with the masks lost."""
    import shutil

    from edgeprune.train import last_resumable_checkpoint

    recipe = recipe_from_dict(tiny_recipe_dict(tiny_model_dir, tiny_data_dir))
    killed = tmp_path / "killed"
    with pytest.raises(_Kill):
        train(recipe, killed, progress=False, extra_callbacks=[_killer(10)])  # saves at 4 and 8
    work = work_dir_for(killed)
    (work / "checkpoint-8" / "pruner_state.json").unlink()
    assert last_resumable_checkpoint(work, needs_pruner=True).endswith("checkpoint-4")
    assert last_resumable_checkpoint(work, needs_pruner=False).endswith("checkpoint-8")
    shutil.rmtree(work / "checkpoint-4")
    with pytest.raises(Exception, match="no interrupted run"):
        train(recipe, killed, resume=True, progress=False)


def test_callback_refuses_to_resume_without_pruner_state(tiny_model_dir, tiny_data_dir, tmp_path):
    from transformers import Trainer, TrainingArguments

    from edgeprune.callback import GradualPruningCallback
    from edgeprune.checkpoint import CheckpointError
    from edgeprune.data import load_examples, tokenize
    from edgeprune.models import load_classifier

    recipe = recipe_from_dict(tiny_recipe_dict(tiny_model_dir, tiny_data_dir))
    data = load_examples(recipe.data)
    model, tok = load_classifier(str(tiny_model_dir), data.labels)
    ds = tokenize(data.train, data.ids(data.train), tok, 16)
    args = TrainingArguments(output_dir=str(tmp_path / "w"), max_steps=4, save_steps=2, report_to=[],
                             per_device_train_batch_size=8, use_cpu=True, disable_tqdm=True)
    from transformers import DataCollatorWithPadding

    Trainer(model=model, args=args, train_dataset=ds, data_collator=DataCollatorWithPadding(tok)).train()
    pruning = GradualPruningCallback(recipe.pruning)
    args2 = TrainingArguments(output_dir=str(tmp_path / "w"), max_steps=8, save_steps=2, report_to=[],
                              per_device_train_batch_size=8, use_cpu=True, disable_tqdm=True)
    trainer = Trainer(model=model, args=args2, train_dataset=ds, data_collator=DataCollatorWithPadding(tok),
                      callbacks=[pruning])
    with pytest.raises(CheckpointError, match="no pruner state"):
        trainer.train(resume_from_checkpoint=str(tmp_path / "w" / "checkpoint-4"))


def test_recipe_checks_that_need_the_model(tiny_model_dir, tiny_data_dir, tmp_path):
    from edgeprune.errors import RecipeError

    base = tiny_recipe_dict(tiny_model_dir, tiny_data_dir)
    too_long = recipe_from_dict({**base, "data": {**base["data"], "max_length": 512}})
    with pytest.raises(RecipeError, match="max_position_embeddings|64 positions"):
        train(too_long, tmp_path / "a", progress=False)
    late = recipe_from_dict({**base, "pruning": [{"start": 0, "end": 50, "frequency": 5}]})
    with pytest.raises(RecipeError, match="run has only 12 steps"):
        train(late, tmp_path / "b", progress=False)
    reserved = recipe_from_dict({**base, "training": {**base["training"], "output_dir": "/tmp/x"}})
    with pytest.raises(RecipeError, match="training.output_dir is managed by edgeprune"):
        train(reserved, tmp_path / "c", progress=False)
    ignored = recipe_from_dict({**base, "pruning": [{"params": ["re:.*query$"], "scope": "local",
                                                     "sparsity_overrides": {"re:.*key$": 0.9}}]})
    with pytest.raises(RecipeError, match="sparsity_overrides"):
        train(ignored, tmp_path / "d", progress=False)
    for name in "abcd":
        assert not (tmp_path / name).exists() and not work_dir_for(tmp_path / name).exists()


def test_bad_set_value_is_a_recipe_error(tiny_recipe, tmp_path, capsys):
    assert main(["train", str(tiny_recipe), "-o", str(tmp_path / "x"), "--set", "model=["]) == 2
    assert "not valid YAML" in capsys.readouterr().err
