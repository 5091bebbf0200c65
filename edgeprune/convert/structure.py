"""Structured removal: make pruned heads and FFN neurons physically absent, exactly.

transformers 5 has no `prune_heads`, and BERT's config holds one `num_attention_heads`, so each layer's
attention module gets its own `num_attention_heads`/`all_head_size` here. Both the eager and the sdpa
attention paths reshape with `view(..., -1, head_size)`, so a smaller q/k/v simply means fewer heads.

What may be removed is decided by exactness, not by sparsity: a head contributes to the layer only
through its columns of `attention.output.dense`, a neuron only through its column of `output.dense`;
when those columns are zero the head/neuron computes nothing and its rows can go. A layer whose heads
are all gone is *not* an identity: `LayerNorm(x + output.dense.bias)` remains, so it is replaced by that
constant-bias path; likewise for a layer without neurons. A layer without both is reduced to the two
bias + LayerNorm steps (recorded as `reduced`), never silently dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import CheckpointError, ModelError


@dataclass
class LayerStructure:
    heads_total: int
    heads_kept: int
    neurons_total: int
    neurons_kept: int

    @property
    def reduced(self) -> bool:
        """Attention and FFN both gone: only bias + residual + LayerNorm remain."""
        return self.heads_kept == 0 and self.neurons_kept == 0


@dataclass
class StructureReport:
    layers: list[LayerStructure] = field(default_factory=list)
    head_size: int = 0

    def to_json(self) -> list[dict]:
        return [{"layer": i, "heads_kept": s.heads_kept, "heads_total": s.heads_total,
                 "neurons_kept": s.neurons_kept, "neurons_total": s.neurons_total,
                 "reduced_to_bias_layernorm": s.reduced} for i, s in enumerate(self.layers)]


def _torch_modules():
    import torch
    from torch import nn

    class BiasResidualNorm(nn.Module):
        """What a block computes once every head/neuron is gone: LayerNorm(residual + bias)."""

        def __init__(self, bias, layer_norm):
            super().__init__()
            self.bias = nn.Parameter(bias.detach().clone())
            self.LayerNorm = layer_norm

        def forward(self, hidden_states, input_tensor=None):
            residual = hidden_states if input_tensor is None else input_tensor
            return self.LayerNorm(residual + self.bias)

    class HeadlessAttention(nn.Module):
        """Replaces `layer.attention` when no head is left; keeps the (output, weights) interface."""

        def __init__(self, bias, layer_norm):
            super().__init__()
            self.output = BiasResidualNorm(bias, layer_norm)

        def forward(self, hidden_states, attention_mask=None, *args, **kwargs):
            return self.output(hidden_states), None

    class PassThrough(nn.Module):
        """Replaces `layer.intermediate` when no neuron is left; its output is ignored downstream."""

        def forward(self, hidden_states):
            return hidden_states

    return torch, nn, BiasResidualNorm, HeadlessAttention, PassThrough


def encoder_layers(model):
    """The BERT-style encoder layers (BERT, RoBERTa, MiniLM, ...), or a ModelError naming the family."""
    base = getattr(model, "base_model", model)
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    if layers is None or not hasattr(layers[0], "attention") or not hasattr(layers[0].attention, "self"):
        raise ModelError(
            f"structured removal supports BERT-style encoders; {type(model).__name__} is not one",
            "convert with --no-structured (masks applied, nothing removed)",
        )
    return layers


def _check_zero(tensor, what: str) -> None:
    nonzero = int((tensor != 0).sum())
    if nonzero:
        raise CheckpointError(
            f"{what} should be zero (pruned) but has {nonzero} nonzero weights",
            "the checkpoint's pruning_state.json does not match its weights; re-run `edgeprune train`",
        )


def _indices(state_map: dict, layer: int, total: int, kind: str) -> list[int]:
    idx = sorted({int(i) for i in state_map.get(str(layer), state_map.get(layer, []))})
    bad = [i for i in idx if not 0 <= i < total]
    if bad:
        raise CheckpointError(f"pruning_state.json lists {kind} {bad} in layer {layer}, which has {total}",
                              "the state and model come from different runs; re-run `edgeprune train`")
    return idx


def remove_structure(model, heads_pruned: dict, neurons_pruned: dict) -> StructureReport:
    """Shrink `model` in place; raises CheckpointError when a pruned head/neuron is not really zero."""
    torch, nn, BiasResidualNorm, HeadlessAttention, PassThrough = _torch_modules()
    layers = encoder_layers(model)
    for key in list(heads_pruned) + list(neurons_pruned):
        if not 0 <= int(key) < len(layers):
            raise CheckpointError(f"pruning_state.json names layer {key}; the model has {len(layers)}",
                                  "the state and model come from different runs; re-run `edgeprune train`")
    report = StructureReport()
    with torch.no_grad():
        for i, layer in enumerate(layers):
            att = layer.attention
            n_heads = att.self.num_attention_heads
            size = att.self.attention_head_size
            report.head_size = size
            gone = _indices(heads_pruned, i, n_heads, "heads")
            for h in gone:
                _check_zero(att.output.dense.weight[:, h * size:(h + 1) * size],
                            f"layer {i} head {h} columns of attention.output.dense")
            keep_heads = [h for h in range(n_heads) if h not in gone]
            if not keep_heads:
                layer.attention = HeadlessAttention(att.output.dense.bias, att.output.LayerNorm)
            elif gone:
                rows = torch.tensor([h * size + j for h in keep_heads for j in range(size)])
                for name in ("query", "key", "value"):
                    setattr(att.self, name, _take_rows(nn, getattr(att.self, name), rows))
                att.output.dense = _take_cols(nn, att.output.dense, rows)
                att.self.num_attention_heads = len(keep_heads)
                att.self.all_head_size = len(keep_heads) * size

            inter, out = layer.intermediate.dense, layer.output.dense
            n_neurons = inter.out_features
            dropped = _indices(neurons_pruned, i, n_neurons, "neurons")
            if dropped:
                _check_zero(out.weight[:, dropped], f"layer {i} pruned neuron columns of output.dense")
            keep = [j for j in range(n_neurons) if j not in set(dropped)]
            if not keep:
                layer.intermediate = PassThrough()
                layer.output = BiasResidualNorm(out.bias, layer.output.LayerNorm)
            elif dropped:
                idx = torch.tensor(keep)
                layer.intermediate.dense = _take_rows(nn, inter, idx)
                layer.output.dense = _take_cols(nn, out, idx)
            report.layers.append(LayerStructure(n_heads, len(keep_heads), n_neurons, len(keep)))
    return report


def _take_rows(nn, linear, rows):
    new = nn.Linear(linear.in_features, len(rows), bias=linear.bias is not None)
    new.weight.copy_(linear.weight[rows])
    if linear.bias is not None:
        new.bias.copy_(linear.bias[rows])
    return new


def _take_cols(nn, linear, cols):
    new = nn.Linear(len(cols), linear.out_features, bias=linear.bias is not None)
    new.weight.copy_(linear.weight[:, cols])
    if linear.bias is not None:
        new.bias.copy_(linear.bias)
    return new
