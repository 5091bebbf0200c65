import pytest
import torch

from conftest import tiny_bert
from edgeprune.errors import RecipeError
from edgeprune.layout import encoder_layout
from edgeprune.masks import satisfies_nm
from edgeprune.pruner import Pruner
from edgeprune.recipe import recipe_from_dict

QKV = "re:.*attention\\.self\\.(query|key|value)$"


def mods(*raw):
    return recipe_from_dict({"pruning": list(raw)}).pruning


def train_steps(model, pruner, steps, lr=1e-2):
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    torch.manual_seed(3)
    for step in range(1, steps + 1):
        ids = torch.randint(5, 64, (4, 12))
        loss = model(input_ids=ids, labels=torch.randint(0, 2, (4,))).loss
        loss.backward()
        pruner.accumulate_taylor()
        pruner.mask_gradients()
        opt.step()
        pruner.apply(opt)
        opt.zero_grad()
        if pruner.update(step):
            pruner.apply(opt)
    return opt


def test_weights_and_optimizer_state_stay_zero_after_steps():
    model = tiny_bert().train()
    pruner = Pruner(model, mods({"kind": "magnitude", "final_sparsity": 0.7, "schedule": "oneshot",
                                 "start": 0, "end": 0}), total_steps=10)
    pruner.update(0)
    pruner.apply()
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    opt = train_steps(model, pruner, 10)
    params = dict(model.named_parameters())
    assert pruner.masks
    for name, mask in pruner.masks.items():
        assert params[name][~mask].abs().max() == 0
        state = opt.state[params[name]]
        assert state["exp_avg"][~mask].abs().max() == 0
        assert not torch.equal(params[name][mask], before[name][mask]), "live weights still train"
    assert abs(pruner.report()["global"] - 0.7) < 0.01


def test_gradient_hooks_mask_before_clipping():
    model = tiny_bert().train()
    pruner = Pruner(model, mods({"kind": "magnitude", "final_sparsity": 0.5, "schedule": "oneshot",
                                 "start": 0, "end": 0, "params": [QKV]}), total_steps=4)
    pruner.update(0)
    pruner.attach_gradient_masks()
    model(input_ids=torch.randint(5, 64, (4, 12)), labels=torch.randint(0, 2, (4,))).loss.backward()
    params = dict(model.named_parameters())
    for name, mask in pruner.masks.items():
        assert params[name].grad[~mask].abs().max() == 0 and params[name].grad[mask].abs().max() > 0
    pruner.detach_gradient_masks()
    model.zero_grad()
    model(input_ids=torch.randint(5, 64, (4, 12)), labels=torch.randint(0, 2, (4,))).loss.backward()
    name, mask = next(iter(pruner.masks.items()))
    assert params[name].grad[~mask].abs().max() > 0


def test_without_reapplying_momentum_would_revive_weights():
    """The guard the pruner provides is real: plain AdamW moves zeroed weights that have momentum."""
    model = tiny_bert().train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    w = model.bert.encoder.layer[0].attention.self.query.weight
    for _ in range(2):
        model(input_ids=torch.randint(5, 64, (4, 12)), labels=torch.zeros(4, dtype=torch.long)).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=False)
    with torch.no_grad():
        w[:4] = 0
    opt.step()  # a zero gradient: only momentum moves the weights
    assert w[:4].abs().max() > 0


def test_gradual_schedule_reaches_final_exactly_at_end():
    model = tiny_bert().train()
    pruner = Pruner(model, mods({"kind": "magnitude", "final_sparsity": 0.6, "start": 2, "end": 8,
                                 "frequency": 3, "scope": "local", "params": [QKV]}), total_steps=12)
    pruner.update(0)
    train_steps(model, pruner, 12)
    steps = [h["step"] for h in pruner.history]
    assert steps == [2, 5, 8]
    targets = [h["targets"]["0"] for h in pruner.history]
    assert targets[0] == 0.0 and targets[-1] == pytest.approx(0.6) and targets[1] < 0.6
    for name, s in pruner.report()["per_layer"].items():
        assert abs(s * 32 * 32 - 0.6 * 32 * 32) <= 1, name


def test_heads_and_neurons_remove_whole_structures_then_magnitude_on_the_rest():
    model = tiny_bert().train()
    pruner = Pruner(model, mods(
        {"kind": "heads", "final_sparsity": 0.5, "schedule": "oneshot", "start": 0, "end": 0, "score": "taylor"},
        {"kind": "neurons", "final_sparsity": 0.4, "schedule": "oneshot", "start": 0, "end": 0, "scope": "local"},
        {"kind": "magnitude", "final_sparsity": 0.5, "schedule": "oneshot", "start": 0, "end": 0, "params": [QKV]},
    ), total_steps=4)
    pruner.update(0)
    pruner.apply()
    train_steps(model, pruner, 4)
    report = pruner.report()
    assert sum(len(v) for v in report["heads_pruned"].values()) == 4  # half of 2x4 heads
    for layer in encoder_layout(model):
        pruned = report["heads_pruned"][str(layer.index)]
        assert 1 <= layer.num_heads - len(pruned)  # floor: never a layer with no heads
        q = dict(model.named_parameters())[f"{layer.q}.weight"]
        o = dict(model.named_parameters())[f"{layer.o}.weight"]
        for h in range(layer.num_heads):
            rows = q[h * 8:(h + 1) * 8]
            if h in pruned:
                assert rows.abs().max() == 0 and o[:, h * 8:(h + 1) * 8].abs().max() == 0
            else:
                # magnitude pruned half of what is left, not whole heads
                assert 0.3 < (rows == 0).float().mean() < 0.7
        neurons = report["neurons_pruned"][str(layer.index)]
        assert len(neurons) == round(0.4 * 37)
        ffn_in = dict(model.named_parameters())[f"{layer.ffn_in}.weight"]
        ffn_b = dict(model.named_parameters())[f"{layer.ffn_in}.bias"]
        assert ffn_in[neurons].abs().max() == 0 and ffn_b[neurons].abs().max() == 0


def test_taylor_scores_accumulate_from_gradients():
    model = tiny_bert().train()
    pruner = Pruner(model, mods({"kind": "heads", "final_sparsity": 0.25, "start": 3, "end": 3,
                                 "score": "taylor"}), total_steps=5)
    pruner.update(0)
    train_steps(model, pruner, 2)
    assert set(pruner.taylor) == {"heads/0", "heads/1"} and all(t.sum() > 0 for t in pruner.taylor.values())


def test_nm_holds_in_every_group_after_training():
    model = tiny_bert().train()
    pruner = Pruner(model, mods({"kind": "nm", "n": 2, "m": 4, "start": 0, "end": 4, "frequency": 2,
                                 "params": ["re:.*(query|key|value|intermediate\\.dense)$"]}), total_steps=6)
    pruner.update(0)
    pruner.apply()
    train_steps(model, pruner, 6)
    params = dict(model.named_parameters())
    assert len(pruner.nm_masks) == 8
    for name in pruner.nm_masks:
        assert satisfies_nm(params[name] != 0, 2, 4), name


def test_nm_on_indivisible_layer_is_a_recipe_error():
    with pytest.raises(RecipeError, match="not divisible by m=4"):
        Pruner(tiny_bert(), mods({"kind": "nm", "params": ["re:.*output\\.dense$"]}), total_steps=4)


def test_pattern_matching_nothing_lists_close_candidates():
    with pytest.raises(RecipeError) as err:
        Pruner(tiny_bert(), mods({"params": ["bert.encoder.layer.0.attention.self.querry"]}), total_steps=4)
    assert "bert.encoder.layer.0.attention.self.query" in str(err.value)


def test_ignore_list_and_regex_selection():
    pruner = Pruner(tiny_bert(), mods({"params": [QKV], "ignore": ["re:.*layer\\.1\\..*"]}), total_steps=4)
    assert pruner.modifiers[0].modules == tuple(sorted(
        f"bert.encoder.layer.0.attention.self.{x}" for x in ("query", "key", "value")))


def test_sparsity_overrides_set_per_layer_targets():
    name = "bert.encoder.layer.0.attention.self.query"
    pruner = Pruner(tiny_bert(), mods({"params": [QKV], "final_sparsity": 0.5, "scope": "local",
                                       "schedule": "oneshot", "start": 0, "end": 0,
                                       "sparsity_overrides": {name: 0.9}}), total_steps=4)
    pruner.update(0)
    per = pruner.report()["per_layer"]
    assert per[f"{name}.weight"] == pytest.approx(0.9, abs=1 / 1024)
    assert per["bert.encoder.layer.1.attention.self.key.weight"] == pytest.approx(0.5, abs=1 / 1024)


def test_state_round_trips(tmp_path):
    model = tiny_bert().train()
    recipe = mods({"kind": "heads", "final_sparsity": 0.5, "start": 0, "end": 4, "frequency": 2,
                   "score": "taylor"}, {"kind": "magnitude", "final_sparsity": 0.4, "start": 0, "end": 4,
                                        "frequency": 2, "params": [QKV]})
    pruner = Pruner(model, recipe, total_steps=6)
    pruner.update(0)
    train_steps(model, pruner, 3)
    pruner.save(tmp_path)
    other = Pruner(model, recipe, total_steps=6)
    other.load(tmp_path)
    assert other.step == pruner.step and other.history == pruner.history
    assert set(other.masks) == set(pruner.masks)
    assert all(torch.equal(other.masks[k], pruner.masks[k]) for k in pruner.masks)
    assert all(torch.equal(other.taylor[k], pruner.taylor[k]) for k in pruner.taylor)
