import pytest
import torch
import torch.nn.functional as F

from conftest import tiny_recipe_dict
from edgeprune.checkpoint import read_pruning_state
from edgeprune.distill import distillation_loss
from edgeprune.recipe import recipe_from_dict
from edgeprune.train import train


def test_loss_is_kl_at_temperature_mixed_with_hard_loss():
    torch.manual_seed(0)
    s, t, hard = torch.randn(5, 3), torch.randn(5, 3), torch.tensor(0.7)
    T, alpha = 2.0, 0.3
    p_t = F.softmax(t / T, dim=-1)
    kl = (p_t * (p_t.log() - F.log_softmax(s / T, dim=-1))).sum(dim=-1).mean()
    expected = alpha * kl * T * T + (1 - alpha) * hard
    assert torch.allclose(distillation_loss(s, t, hard, alpha, T), expected, atol=1e-6)
    assert torch.allclose(distillation_loss(t, t, hard, 1.0, T), torch.tensor(0.0), atol=1e-6)


def test_training_with_a_teacher_changes_the_result(tiny_model_dir, tiny_data_dir, tmp_path):
    raw = tiny_recipe_dict(tiny_model_dir, tiny_data_dir)
    plain = train(recipe_from_dict(raw), tmp_path / "plain", progress=False)
    raw["distillation"] = {"teacher": str(plain), "alpha": 0.9, "temperature": 3.0}
    distilled = train(recipe_from_dict(raw), tmp_path / "distilled", progress=False)
    a, b = read_pruning_state(plain), read_pruning_state(distilled)
    assert b.recipe["distillation"]["teacher"] == str(plain)
    assert a.metrics["train_loss"] != b.metrics["train_loss"]


def test_teacher_must_be_a_classifier_over_the_same_labels(tiny_model_dir, tiny_data_dir, tmp_path):
    from edgeprune.errors import ModelError
    from conftest import tiny_bert, tiny_tokenizer

    raw = tiny_recipe_dict(tiny_model_dir, tiny_data_dir)
    raw["data"]["label_names"] = ["neg", "pos"]
    teacher = tmp_path / "teacher"
    tiny_bert().save_pretrained(teacher)  # labels l0/l1, not neg/pos
    tiny_tokenizer().save_pretrained(teacher)
    raw["distillation"] = {"teacher": str(teacher)}
    with pytest.raises(ModelError, match="labels"):
        train(recipe_from_dict(raw), tmp_path / "student", progress=False)
    assert not (tmp_path / "student").exists()


def test_dense_accuracy_of_the_teacher_is_recorded(tiny_model_dir, tiny_data_dir, tmp_path):
    raw = tiny_recipe_dict(tiny_model_dir, tiny_data_dir)
    plain = train(recipe_from_dict({**raw, "pruning": []}), tmp_path / "dense", progress=False)
    raw["distillation"] = {"teacher": str(plain)}
    state = read_pruning_state(train(recipe_from_dict(raw), tmp_path / "student", progress=False))
    assert state.metrics["dense_accuracy"] == read_pruning_state(plain).metrics["eval_accuracy"]
    assert state.labels == ["0", "1"]  # no data.label_names: the raw values name the classes
    assert state.raw_labels == ["0", "1"]


def test_teacher_dense_is_built_first_reused_and_can_seed_the_student(tiny_model_dir, tiny_data_dir, tmp_path):
    from edgeprune.train import teacher_dir_for

    raw = tiny_recipe_dict(tiny_model_dir, tiny_data_dir)
    raw["distillation"] = {"teacher": "dense", "alpha": 0.5, "init_student": True}
    out = train(recipe_from_dict(raw), tmp_path / "student", progress=False)
    teacher = teacher_dir_for(out)
    dense_state = read_pruning_state(teacher)
    assert dense_state.global_sparsity == 0 and dense_state.recipe["pruning"] == []
    student = read_pruning_state(out)
    assert student.metrics["dense_checkpoint"] == str(teacher)
    assert student.metrics["dense_accuracy"] == dense_state.metrics["eval_accuracy"]
    stamp = (teacher / "model.safetensors").stat().st_mtime_ns
    train(recipe_from_dict(raw), tmp_path / "student", overwrite=True, progress=False)
    assert (teacher / "model.safetensors").stat().st_mtime_ns == stamp  # reused, not retrained


def test_init_student_needs_a_teacher():
    from edgeprune.errors import RecipeError

    with pytest.raises(RecipeError, match="distillation.init_student"):
        recipe_from_dict({"distillation": {"init_student": True}})
