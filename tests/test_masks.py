import pytest
import torch

from edgeprune import masks as M


def test_local_magnitude_hits_sparsity_within_one_weight_and_prunes_smallest():
    torch.manual_seed(0)
    weights = {"a": torch.randn(37, 32), "b": torch.randn(32, 37)}
    out = M.magnitude_masks_local(weights, 0.6)
    for name, w in weights.items():
        kept = out[name]
        assert abs((~kept).sum().item() - 0.6 * w.numel()) <= 1
        assert w[~kept].abs().max() <= w[kept].abs().min()


def test_global_magnitude_one_threshold_across_layers():
    torch.manual_seed(1)
    weights = {"small": torch.randn(32, 32) * 0.01, "large": torch.randn(32, 32)}
    out = M.magnitude_masks_global(weights, 0.5)
    total = sum(w.numel() for w in weights.values())
    assert abs(sum((~m).sum().item() for m in out.values()) - 0.5 * total) <= 1
    # one threshold: the small layer is pruned almost entirely, the large one barely
    assert (~out["small"]).float().mean() > 0.9
    assert (~out["large"]).float().mean() < 0.1
    pruned = torch.cat([w[~out[n]].abs() for n, w in weights.items()])
    kept = torch.cat([w[out[n]].abs() for n, w in weights.items()])
    assert pruned.max() <= kept.min()


def test_magnitude_counts_only_what_is_alive():
    w = torch.arange(1.0, 101.0).reshape(10, 10)
    alive = torch.ones_like(w, dtype=torch.bool)
    alive[:5] = False  # half already pruned by a structured modifier
    out = M.magnitude_mask(w, 0.5, alive)
    assert not out[:5].any()
    assert (~out[5:]).sum() == 25  # half of the 50 alive


@pytest.mark.parametrize("n,m", [(2, 4), (1, 4), (3, 8)])
def test_nm_every_group_holds_and_keeps_largest(n, m):
    torch.manual_seed(2)
    w = torch.randn(37, 32)
    mask = M.nm_mask(w, n, m)
    assert M.satisfies_nm(mask, n, m)
    groups, gmask = w.abs().reshape(-1, m), mask.reshape(-1, m)
    assert (gmask.sum(dim=1) == n).all()
    for g, k in zip(groups, gmask):
        assert g[k].min() >= g[~k].max()


def test_nm_rejects_indivisible_input_dim():
    with pytest.raises(ValueError, match="divisible"):
        M.nm_mask(torch.randn(4, 37), 2, 4)


def test_satisfies_nm_detects_violation():
    mask = torch.tensor([[1, 1, 1, 0, 1, 1, 0, 0]], dtype=torch.bool)
    assert not M.satisfies_nm(mask, 2, 4)


def test_select_structures_global_respects_floor():
    scores = {0: torch.tensor([0.1, 0.2, 0.3, 0.4]), 1: torch.tensor([5.0, 6.0, 7.0, 8.0])}
    keep = M.select_structures(scores, 0.5, "global", min_per_layer=1)
    assert keep[0].tolist() == [False, False, False, True]  # floor stops layer 0 at one head
    assert int((~keep[1]).sum()) == 1 and not keep[1][0]
    no_floor = M.select_structures(scores, 0.5, "global", min_per_layer=0)
    assert not no_floor[0].any() and no_floor[1].all()


def test_select_structures_local_same_fraction_each_layer_and_monotonic():
    scores = {0: torch.tensor([3.0, 1.0, 2.0, 4.0, 0.5]), 1: torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])}
    keep = M.select_structures(scores, 0.4, "local")
    assert keep[0].tolist() == [True, False, True, True, False]
    assert keep[1].tolist() == [False, False, True, True, True]
    # already-pruned structures stay pruned even if their score recovers
    scores[0][4] = 100.0
    again = M.select_structures(scores, 0.6, "local", alive=keep)
    assert not again[0][4] and not again[0][1] and int((~again[0]).sum()) == 3


def test_head_scores_see_all_four_matrices():
    q, k, v, o = (torch.zeros(32, 32) for _ in range(4))
    o[:, 8:16] = 1.0  # only head 1 has weight, and only in the output projection
    scores = M.head_scores_magnitude(q, k, v, o, num_heads=4)
    assert scores.argmax().item() == 1 and scores[[0, 2, 3]].eq(0).all()


def test_neuron_scores_see_input_row_and_output_column():
    ffn_in, ffn_out = torch.zeros(37, 32), torch.zeros(32, 37)
    ffn_in[5] = 1.0
    ffn_out[:, 9] = 2.0
    s = M.neuron_scores_magnitude(ffn_in, ffn_out)
    assert set(torch.nonzero(s).flatten().tolist()) == {5, 9}
