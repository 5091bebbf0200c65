"""Pure functions from tensors (weights or importance scores) to boolean keep-masks.

No model, no state: the pruner decides *when* and *on what*; these decide *which*. Counts are exact
(`round(sparsity * n)` entries pruned, ties broken by position), so a layer reaches its asked sparsity
within one weight.
"""

from __future__ import annotations

import numpy as np
import torch


def _prune_count(sparsity: float, n: int) -> int:
    return min(n, max(0, int(round(sparsity * n))))


def magnitude_mask(weight: torch.Tensor, sparsity: float, alive: torch.Tensor | None = None) -> torch.Tensor:
    """Keep-mask pruning the `sparsity` fraction of smallest-|w| entries among those still `alive`."""
    return magnitude_masks_global({"w": weight}, sparsity, {"w": alive} if alive is not None else None)["w"]


def magnitude_masks_local(weights: dict[str, torch.Tensor], sparsity: dict[str, float] | float,
                          alive: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Each tensor pruned to its own sparsity (one threshold per layer)."""
    return {name: magnitude_mask(w, sparsity if isinstance(sparsity, float) else sparsity[name],
                                 None if alive is None else alive.get(name))
            for name, w in weights.items()}


def magnitude_masks_global(weights: dict[str, torch.Tensor], sparsity: float,
                           alive: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """One threshold across all tensors: the `sparsity` fraction of all alive entries, smallest |w| first.

    Entries already dead (`alive` false) are not counted and stay dead: sparsity is of what is left.
    """
    names = list(weights)
    flat_scores, sizes = [], []
    for name in names:
        w = weights[name].detach().abs().flatten().float()
        keep = None if alive is None or alive.get(name) is None else alive[name].flatten().bool()
        if keep is not None:
            w = torch.where(keep, w, torch.full_like(w, float("inf")))
        flat_scores.append(w)
        sizes.append(w.numel())
    scores = torch.cat(flat_scores)
    n_alive = int(torch.isfinite(scores).sum())
    k = _prune_count(sparsity, n_alive)
    keep_flat = torch.isfinite(scores)
    if k > 0:
        keep_flat &= ~_lowest_k(scores, k)
    out, offset = {}, 0
    for name, size in zip(names, sizes):
        out[name] = keep_flat[offset:offset + size].view_as(weights[name])
        offset += size
    return out


def _lowest_k(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Flags of exactly k smallest entries, ties broken by position; a selection, not a full sort,
    because a global threshold over a whole encoder runs at every pruning event."""
    # numpy's introselect is ~10x faster than torch.kthvalue on CPU for tens of millions of weights
    threshold = torch.as_tensor(np.partition(scores.cpu().numpy(), k - 1)[k - 1], dtype=scores.dtype,
                                device=scores.device)
    chosen = scores < threshold
    ties = torch.nonzero(scores == threshold).flatten()[: k - int(chosen.sum())]
    chosen[ties] = True
    return chosen


def nm_mask(weight: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep the n largest |w| in every group of m consecutive inputs (the last dim), e.g. 2:4."""
    if weight.shape[-1] % m:
        raise ValueError(f"input dimension {weight.shape[-1]} is not divisible by m={m}")
    groups = weight.detach().abs().reshape(-1, m)
    top = torch.topk(groups, n, dim=1).indices
    keep = torch.zeros_like(groups, dtype=torch.bool)
    keep.scatter_(1, top, True)
    return keep.view_as(weight)


def satisfies_nm(mask: torch.Tensor, n: int, m: int) -> bool:
    """True when no group of m consecutive inputs keeps more than n entries."""
    return bool((mask.reshape(-1, m).sum(dim=1) <= n).all())


def select_structures(scores: dict[int, torch.Tensor], sparsity: float, scope: str = "global",
                      min_per_layer: int = 1, alive: dict[int, torch.Tensor] | None = None
                      ) -> dict[int, torch.Tensor]:
    """Keep-masks over whole structures (heads or neurons) per layer from their importance scores.

    `global` ranks every structure of every layer together, `local` prunes the same fraction in each.
    No layer drops below `min_per_layer` kept structures; already-pruned ones stay pruned.
    """
    keep = {layer: (torch.ones_like(s, dtype=torch.bool) if alive is None else alive[layer].clone())
            for layer, s in scores.items()}
    if scope == "local":
        for layer, s in scores.items():
            n_total = s.numel()
            target = min(_prune_count(sparsity, n_total), max(0, n_total - min_per_layer))
            _prune_lowest(keep[layer], s, target - int((~keep[layer]).sum()))
        return keep
    n_total = sum(s.numel() for s in scores.values())
    target = _prune_count(sparsity, n_total) - sum(int((~k).sum()) for k in keep.values())
    if target <= 0:
        return keep
    entries = sorted(((float(v), layer, i) for layer, s in scores.items() for i, v in enumerate(s.tolist())
                      if keep[layer][i]), key=lambda e: (e[0], e[1], e[2]))
    for _, layer, i in entries:
        if target == 0:
            break
        if int(keep[layer].sum()) > min_per_layer:
            keep[layer][i] = False
            target -= 1
    return keep


def _prune_lowest(keep: torch.Tensor, scores: torch.Tensor, count: int) -> None:
    if count <= 0:
        return
    masked = torch.where(keep, scores.float(), torch.full_like(scores.float(), float("inf")))
    order = torch.argsort(masked, stable=True)[:count]
    keep[order] = False


def head_scores_magnitude(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, o: torch.Tensor,
                          num_heads: int) -> torch.Tensor:
    """L2 norm of each head's weights: its q/k/v output rows and its attention-output input columns."""
    d = q.shape[0] // num_heads
    per = [w.detach().float().reshape(num_heads, d, -1).pow(2).sum(dim=(1, 2)) for w in (q, k, v)]
    per.append(o.detach().float().reshape(o.shape[0], num_heads, d).pow(2).sum(dim=(0, 2)))
    return torch.stack(per).sum(dim=0).sqrt()


def neuron_scores_magnitude(ffn_in: torch.Tensor, ffn_out: torch.Tensor) -> torch.Tensor:
    """L2 norm of each FFN neuron's weights: its input row and its output column."""
    return (ffn_in.detach().float().pow(2).sum(dim=1) + ffn_out.detach().float().pow(2).sum(dim=0)).sqrt()


def head_row_mask(keep_heads: torch.Tensor, head_dim: int) -> torch.Tensor:
    """Per-head keep flags expanded to one flag per q/k/v output row (or o input column)."""
    return keep_heads.repeat_interleave(head_dim)
