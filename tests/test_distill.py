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


def test_hidden_state_loss_counts_real_tokens_only_and_matches_layers_by_depth():
    from edgeprune.distill import hidden_state_loss

    torch.manual_seed(0)
    teacher = [torch.randn(2, 3, 4) for _ in range(5)]           # embeddings + 4 layers
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    same = [teacher[0], teacher[2], teacher[4]]                   # 2 student layers <- teacher layers 2 and 4
    assert hidden_state_loss(same, teacher, mask).item() == 0.0
    noisy = [h.clone() for h in same]
    noisy[1][1, 2] += 100.0                                       # a padding position: ignored
    assert hidden_state_loss(noisy, teacher, mask).item() == 0.0
    noisy[1][0, 0] += 2.0                                         # a real token: 4 elements off by 2
    expected = (4 * 4.0 / (5 * 4)) / 2                            # layer MSE over 5 real tokens, mean of 2 layers
    assert abs(hidden_state_loss(noisy, teacher, mask).item() - expected) < 1e-6


def test_hidden_state_loss_names_a_hidden_size_mismatch():
    from edgeprune.distill import hidden_state_loss
    from edgeprune.errors import ModelError

    with pytest.raises(ModelError, match="hidden shape"):
        hidden_state_loss([torch.zeros(1, 2, 4)] * 2, [torch.zeros(1, 2, 8)] * 2, None)


def test_hidden_weight_needs_a_teacher_and_is_non_negative(tiny_model_dir, tiny_data_dir):
    from edgeprune.errors import RecipeError

    raw = tiny_recipe_dict(tiny_model_dir, tiny_data_dir)
    raw["distillation"] = {"hidden_weight": 1.0}
    with pytest.raises(RecipeError, match="distillation.hidden_weight"):
        recipe_from_dict(raw)
    raw["distillation"] = {"teacher": "dense", "hidden_weight": -1.0}
    with pytest.raises(RecipeError, match="distillation.hidden_weight"):
        recipe_from_dict(raw)


def test_hidden_state_distillation_trains_and_changes_the_result(tiny_model_dir, tiny_data_dir, tmp_path):
    raw = tiny_recipe_dict(tiny_model_dir, tiny_data_dir)
    raw["pruning"] = [{"kind": "heads", "final_sparsity": 0.5, "start": 0.0, "end": 0.5, "frequency": 1}]
    raw["distillation"] = {"teacher": "dense", "init_student": True, "alpha": 0.5}
    logits_only = train(recipe_from_dict(raw), tmp_path / "logits", progress=False)
    raw["distillation"]["hidden_weight"] = 5.0
    layered = train(recipe_from_dict(raw), tmp_path / "layered", progress=False)
    a, b = read_pruning_state(logits_only), read_pruning_state(layered)
    assert b.recipe["distillation"]["hidden_weight"] == 5.0
    assert a.metrics["train_loss"] != b.metrics["train_loss"]


def test_an_ensemble_target_is_the_mixture_of_the_teachers_distributions():
    from edgeprune.distill import ensemble_log_probs

    torch.manual_seed(1)
    a, b, s, hard = torch.randn(4, 3), torch.randn(4, 3), torch.randn(4, 3), torch.tensor(0.2)
    T = 2.0
    mixture = (F.softmax(a / T, dim=-1) + F.softmax(b / T, dim=-1)) / 2
    assert torch.allclose(ensemble_log_probs([a, b], T).exp(), mixture, atol=1e-6)
    assert torch.equal(ensemble_log_probs([a], T), ensemble_log_probs(a, T))  # one teacher: exactly as before
    assert torch.allclose(distillation_loss(s, [a, a], hard, 0.5, T), distillation_loss(s, a, hard, 0.5, T),
                          atol=1e-6)
    # not the mean logit: a confident teacher does not outvote an unsure one by the size of its logits
    sure, unsure = torch.tensor([[10.0, -10.0]]), torch.tensor([[-0.5, 0.5]])
    assert ensemble_log_probs([sure, unsure], 1.0).exp()[0, 0] < F.softmax((sure + unsure) / 2, dim=-1)[0, 0]


def test_a_weighted_mixture_weighs_each_teachers_distribution():
    from edgeprune.distill import ensemble_log_probs

    torch.manual_seed(2)
    a, b, s, hard = torch.randn(5, 2), torch.randn(5, 2), torch.randn(5, 2), torch.tensor(0.4)
    T = 2.0
    pa, pb = F.softmax(a / T, dim=-1), F.softmax(b / T, dim=-1)
    assert torch.allclose(ensemble_log_probs([a, b], T, [0.7, 0.3]).exp(), 0.7 * pa + 0.3 * pb, atol=1e-6)
    assert torch.allclose(ensemble_log_probs([a, b], T, [2.0, 2.0]), ensemble_log_probs([a, b], T), atol=1e-6)
    assert torch.allclose(ensemble_log_probs([a, b], T, [1.0, 0.0]), F.log_softmax(a / T, dim=-1), atol=1e-6)
    assert not torch.allclose(distillation_loss(s, [a, b], hard, 0.8, T, [0.7, 0.3]),
                              distillation_loss(s, [a, b], hard, 0.8, T), atol=1e-4)
    for bad in ([1.0], [0.5, -0.5], [0.0, 0.0]):
        with pytest.raises(ValueError, match="weights"):
            ensemble_log_probs([a, b], T, bad)


def test_ensemble_recipe_field_checks_and_seeds():
    from edgeprune.errors import RecipeError

    with pytest.raises(RecipeError, match="distillation.ensemble"):
        recipe_from_dict({"distillation": {"teacher": "/some/teacher", "ensemble": 2}})
    with pytest.raises(RecipeError, match="distillation.ensemble"):
        recipe_from_dict({"distillation": {"teacher": "dense", "ensemble": 0}})
    one = recipe_from_dict({"distillation": {"teacher": "dense"}})
    assert "ensemble" not in one.to_dict()["distillation"]  # recipes from before the field keep their hash
    assert one.sha256() == recipe_from_dict({"distillation": {"teacher": "dense", "ensemble": 1}}).sha256()
    three = recipe_from_dict({"training": {"seed": 7}, "distillation": {"teacher": "dense", "ensemble": 3}})
    members = three.dense_teachers()
    assert [m.training.seed for m in members] == [7, 8, 9]
    assert members[0] == three.dense_reference() and all(not m.pruning for m in members)
    two = recipe_from_dict({"distillation": {"teacher": "dense", "ensemble": 2}})
    assert two.dense_teachers()[0].sha256() == one.dense_reference().sha256()  # the existing teacher is reused


def test_an_ensemble_of_dense_teachers_is_trained_seeded_and_distilled_from(tiny_model_dir, tiny_data_dir, tmp_path):
    from edgeprune.train import teacher_dir_for

    raw = tiny_recipe_dict(tiny_model_dir, tiny_data_dir)
    raw["distillation"] = {"teacher": "dense", "init_student": True, "alpha": 0.9}
    single = read_pruning_state(train(recipe_from_dict(raw), tmp_path / "one", progress=False))
    raw["distillation"]["ensemble"] = 2
    out = train(recipe_from_dict(raw), tmp_path / "two", progress=False)
    first, second = teacher_dir_for(out), teacher_dir_for(out, 1)
    assert second.name == "two.teacher-2"
    a, b = read_pruning_state(first), read_pruning_state(second)
    assert a.recipe["training"]["seed"] + 1 == b.recipe["training"]["seed"]
    assert {**a.recipe, "training": None} == {**b.recipe, "training": None}  # the seed is all that differs
    student = read_pruning_state(out)
    assert student.metrics["dense_checkpoint"] == str(first)  # the reference is one model, not the ensemble
    assert student.metrics["dense_accuracy"] == a.metrics["eval_accuracy"]
    assert student.metrics["ensemble_checkpoints"] == [str(first), str(second)]
    from edgeprune.data import load_examples
    from edgeprune.distill import load_teacher
    from edgeprune.evaluate import torch_accuracy
    from edgeprune.models import load_classifier

    recipe = recipe_from_dict(raw)
    model, tokenizer = load_classifier(str(out))
    data = load_examples(recipe.data, seed=recipe.training.seed)
    pair = [load_teacher(str(first), model.config), load_teacher(str(second), model.config)]
    assert student.metrics["ensemble_accuracy"] == torch_accuracy(pair, tokenizer, data.eval.texts,
                                                                  data.ids(data.eval), recipe.data.max_length)
    assert "ensemble_accuracy" not in single.metrics
    assert student.metrics["train_loss"] != single.metrics["train_loss"]  # the second teacher changed the target


class _Fixed(torch.nn.Module):
    """A stand-in classifier whose logits are the same for every sentence."""

    def __init__(self, logits):
        super().__init__()
        self.fixed = torch.tensor(logits)

    def forward(self, input_ids=None, **_):
        from types import SimpleNamespace

        return SimpleNamespace(logits=self.fixed.expand(input_ids.shape[0], -1))


def test_an_ensemble_is_scored_on_its_mean_probability_not_its_mean_logit():
    from conftest import tiny_tokenizer
    from edgeprune.evaluate import torch_accuracy

    # one sure of class 0, two leaning to class 1: the mean logit (+2) says 0, the mean probability (0.41) says 1
    sure, leaning = _Fixed([10.0, 0.0]), _Fixed([-2.0, 0.0])
    texts, labels = ["good film", "bad film", "fine"], [1, 1, 1]
    score = lambda models: torch_accuracy(models, tiny_tokenizer(), texts, labels, 16)  # noqa: E731
    assert (score(sure), score(leaning), score([sure, leaning, leaning])) == (0.0, 1.0, 1.0)


def test_the_trainer_distils_from_every_ensemble_member():
    from types import SimpleNamespace

    from edgeprune.distill import DistillationTrainer

    torch.manual_seed(2)
    s, a, b, hard = torch.randn(3, 2), torch.randn(3, 2), torch.randn(3, 2), torch.tensor(0.4)
    fake = SimpleNamespace(teacher=lambda **kw: SimpleNamespace(logits=a), extra_teachers=[_Fixed(b[0].tolist())],
                           alpha=0.7, temperature=2.0, hidden_weight=0.0, layer_map=None)
    inputs = {"input_ids": torch.zeros(3, 4, dtype=torch.long), "labels": torch.zeros(3, dtype=torch.long)}

    class Student:
        training = True

        def __call__(self, **kw):
            assert "labels" in kw
            return SimpleNamespace(logits=s, loss=hard)

    got = DistillationTrainer.compute_loss(fake, Student(), inputs)
    expected = distillation_loss(s, [a, b[0].expand(3, -1)], hard, 0.7, 2.0)
    assert torch.allclose(got, expected, atol=1e-6)
    assert not torch.allclose(got, distillation_loss(s, a, hard, 0.7, 2.0), atol=1e-4)  # the member counted
