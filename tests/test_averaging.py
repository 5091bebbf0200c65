"""Weight averaging over the tail of training (training.average_from): the maths, the train wiring, resume."""

import pytest
import torch
from transformers import TrainerCallback

from conftest import tiny_bert, tiny_recipe_dict
from edgeprune.averaging import AVERAGE_FILE, WeightAveragingCallback
from edgeprune.checkpoint import load_masks, read_pruning_state
from edgeprune.errors import RecipeError
from edgeprune.recipe import recipe_from_dict
from edgeprune.train import train, work_dir_for


def test_running_mean_is_the_mean_of_the_snapshots_and_skips_frozen_weights():
    model = tiny_bert()
    frozen = model.bert.embeddings.word_embeddings.weight
    frozen.requires_grad_(False)
    table = frozen.detach().clone()
    averaging = WeightAveragingCallback(0, every=1)
    seen = []
    for k in range(3):
        with torch.no_grad():
            for p in model.parameters():
                if p.requires_grad:
                    p.add_(torch.randn_like(p) * (k + 1))
        seen.append({n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad})
        averaging.add(model)
    assert averaging.swap_into(model) == 3
    for name, param in model.named_parameters():
        if name in seen[0]:
            expected = torch.stack([s[name] for s in seen]).mean(0)
            assert torch.allclose(param, expected, atol=1e-6), name
    assert torch.equal(frozen, table) and "bert.embeddings.word_embeddings.weight" not in averaging.mean


def test_swap_without_snapshots_leaves_the_model_alone():
    model = tiny_bert()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    assert WeightAveragingCallback(0.5).swap_into(model) == 0
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


class _Snapshots(TrainerCallback):
    """Records the weights at the steps averaging should sample, independently of the averaging code."""

    def __init__(self, steps):
        self.steps, self.seen = set(steps), []

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step in self.steps:
            self.seen.append({n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad})


def _recipe(model_dir, data_dir, **training):
    return recipe_from_dict(tiny_recipe_dict(model_dir, data_dir, average_from=8, average_every=2, **training))


def test_checkpoint_holds_the_average_of_the_sampled_steps(tiny_model_dir, tiny_data_dir, tmp_path):
    from safetensors.torch import load_file

    recipe = _recipe(tiny_model_dir, tiny_data_dir)  # 12 steps; the last mask lands at step 8
    record = _Snapshots({8, 10, 12})
    out = train(recipe, tmp_path / "ck", progress=False, extra_callbacks=[record])
    assert len(record.seen) == 3
    saved = load_file(out / "model.safetensors")
    for name in record.seen[0]:
        expected = torch.stack([s[name] for s in record.seen]).mean(0)
        assert torch.allclose(saved[name], expected, atol=1e-6), name
    assert not torch.equal(saved["classifier.weight"], record.seen[-1]["classifier.weight"])
    params = saved
    for name, mask in load_masks(out).items():
        assert params[name][~mask].abs().max() == 0, name
    state = read_pruning_state(out)
    average = state.metrics["average"]
    assert average["snapshots"] == 3 and average["from_step"] == 8 and average["every"] == 2
    assert 0 <= average["last_weights_accuracy"] <= 1
    last = state.metrics["evaluations"][-1]
    assert last["averaged"] == 3 and last["final"] and last["accuracy"] == state.metrics["eval_accuracy"]


@pytest.mark.parametrize("start, needle", [(4, "before pruning.2 ends at step 8"), (0.99, "only 12 steps")])
def test_averaging_that_cannot_work_is_refused_before_training(tiny_model_dir, tiny_data_dir, tmp_path,
                                                               start, needle):
    recipe = recipe_from_dict(tiny_recipe_dict(tiny_model_dir, tiny_data_dir, average_from=start))
    with pytest.raises(RecipeError, match=needle):
        train(recipe, tmp_path / "ck", progress=False)
    assert not (tmp_path / "ck").exists() and not work_dir_for(tmp_path / "ck").exists()


class _Kill(Exception):
    pass


class _Killer(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == 10:
            raise _Kill


def test_resume_ends_with_the_same_average(tiny_model_dir, tiny_data_dir, tmp_path):
    from safetensors.torch import load_file

    recipe = _recipe(tiny_model_dir, tiny_data_dir)
    straight = train(recipe, tmp_path / "straight", progress=False)
    killed = tmp_path / "killed"
    with pytest.raises(_Kill):
        train(recipe, killed, progress=False, extra_callbacks=[_Killer()])  # last save at step 8: one snapshot
    saved = torch.load(work_dir_for(killed) / "checkpoint-8" / AVERAGE_FILE, weights_only=True)
    assert saved["count"] == 1
    train(recipe, killed, resume=True, progress=False)
    a, b = load_file(straight / "model.safetensors"), load_file(killed / "model.safetensors")
    assert set(a) == set(b) and all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    assert read_pruning_state(killed).metrics["average"]["snapshots"] == 3


def test_recipe_checks_and_hash_when_off(tiny_model_dir, tiny_data_dir):
    base = tiny_recipe_dict(tiny_model_dir, tiny_data_dir)
    off = recipe_from_dict(base)
    assert "average_from" not in off.to_dict()["training"] and "average_every" not in off.to_dict()["training"]
    on = recipe_from_dict(tiny_recipe_dict(tiny_model_dir, tiny_data_dir, average_from=0.6))
    assert on.training.average_from == 0.6 and on.sha256() != off.sha256()
    assert on.dense_reference().training.average_from is None  # the student's switch alone
    assert "teacher_average_from" not in on.to_dict()["distillation"]
    teacher_only = recipe_from_dict({**base, "distillation": {"teacher": "dense", "teacher_average_from": 0.6}})
    assert teacher_only.training.average_from is None and teacher_only.dense_reference().training.average_from == 0.6
    assert teacher_only.sha256() != recipe_from_dict({**base, "distillation": {"teacher": "dense"}}).sha256()
    with pytest.raises(RecipeError, match="distillation.teacher_average_from"):
        recipe_from_dict({**base, "distillation": {"teacher": "dense", "teacher_average_from": 1.0}})
    for bad, field in (({"average_from": 1.5}, "training.average_from"), ({"average_from": -3}, "training.average_from"),
                       ({"average_every": 0}, "training.average_every")):
        with pytest.raises(RecipeError, match=field):
            recipe_from_dict(tiny_recipe_dict(tiny_model_dir, tiny_data_dir, **bad))


def test_teacher_average_from_averages_the_dense_teacher_and_not_the_student(tiny_model_dir, tiny_data_dir, tmp_path):
    from edgeprune.train import teacher_dir_for

    raw = tiny_recipe_dict(tiny_model_dir, tiny_data_dir)
    raw["distillation"] = {"teacher": "dense", "init_student": True, "teacher_average_from": 0.5}
    out = train(recipe_from_dict(raw), tmp_path / "ckpt", progress=False)
    teacher = read_pruning_state(teacher_dir_for(out))
    assert teacher.metrics["average"]["snapshots"] >= 1 and teacher.recipe["training"]["average_from"] == 0.5
    assert "average" not in read_pruning_state(out).metrics
