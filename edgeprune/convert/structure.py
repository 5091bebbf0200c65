"""Structured removal: make pruned heads and FFN neurons physically absent, exactly.

transformers 5 has no `prune_heads`, and BERT's config holds one `num_attention_heads`, so each layer's
attention module gets its own `num_attention_heads`/`all_head_size` (DistilBERT: `n_heads`) here. The
eager and sdpa attention paths of both families reshape with `view(..., -1, head_size)`, so a smaller
q/k/v simply means fewer heads. Where the matrices live comes from `edgeprune.layout.encoder_layout`,
the one layer map pruning uses too.

What may be removed is decided by exactness, not by sparsity: a head contributes to the layer only
through its columns of `attention.output.dense`, a neuron only through its column of `output.dense`;
when those columns are zero the head/neuron computes nothing and its rows can go. A layer whose heads
are all gone is *not* an identity: `LayerNorm(x + output.dense.bias)` remains, so it is replaced by that
constant-bias path (DistilBERT: the attention returns its output bias and the block's own residual +
LayerNorm follow); likewise for a layer without neurons. A layer without both is reduced to the two
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
        """What a BERT block computes once every head/neuron is gone: LayerNorm(residual + bias)."""

        def __init__(self, bias, layer_norm):
            super().__init__()
            self.bias = nn.Parameter(bias.detach().clone())
            self.LayerNorm = layer_norm

        def forward(self, hidden_states, input_tensor=None):
            residual = hidden_states if input_tensor is None else input_tensor
            return self.LayerNorm(residual + self.bias)

    class HeadlessAttention(nn.Module):
        """Replaces BERT's `layer.attention` when no head is left; keeps the (output, weights) interface."""

        def __init__(self, bias, layer_norm):
            super().__init__()
            self.output = BiasResidualNorm(bias, layer_norm)

        def forward(self, hidden_states, attention_mask=None, *args, **kwargs):
            return self.output(hidden_states), None

    class PassThrough(nn.Module):
        """Replaces BERT's `layer.intermediate` when no neuron is left; its output is ignored downstream."""

        def forward(self, hidden_states):
            return hidden_states

    class ConstantBias(nn.Module):
        """DistilBERT: an attention (returns (bias, None)) or FFN (returns bias) with nothing left; the
        block's own residual + LayerNorm follow it."""

        def __init__(self, bias, pair: bool):
            super().__init__()
            self.bias = nn.Parameter(bias.detach().clone())
            self.pair = pair

        def forward(self, hidden_states, *args, **kwargs):
            out = self.bias.expand_as(hidden_states)
            return (out, None) if self.pair else out

    return torch, nn, BiasResidualNorm, HeadlessAttention, PassThrough, ConstantBias


def encoder_layers(model):
    """The encoder layer map (`edgeprune.layout.encoder_layout`), or a ModelError naming the family."""
    from ..layout import encoder_layout

    try:
        return encoder_layout(model)
    except (ModelError, AttributeError) as exc:
        raise ModelError(
            f"structured removal supports BERT-style and DistilBERT-style encoders; {type(model).__name__} "
            f"is not one ({getattr(exc, 'problem', exc)})",
            "convert with --no-structured (masks applied, nothing removed)",
        ) from exc


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


def _parent(model, name: str):
    parent, _, attr = name.rpartition(".")
    return model.get_submodule(parent), attr


def _set(model, name: str, module) -> None:
    parent, attr = _parent(model, name)
    setattr(parent, attr, module)


def remove_structure(model, heads_pruned: dict, neurons_pruned: dict) -> StructureReport:
    """Shrink `model` in place; raises CheckpointError when a pruned head/neuron is not really zero."""
    torch, nn, BiasResidualNorm, HeadlessAttention, PassThrough, ConstantBias = _torch_modules()
    layers = encoder_layers(model)
    for key in list(heads_pruned) + list(neurons_pruned):
        if not 0 <= int(key) < len(layers):
            raise CheckpointError(f"pruning_state.json names layer {key}; the model has {len(layers)}",
                                  "the state and model come from different runs; re-run `edgeprune train`")
    report = StructureReport()
    with torch.no_grad():
        for i, lay in enumerate(layers):
            bert = lay.q.endswith("attention.self.query")
            get = model.get_submodule
            n_heads, size = lay.num_heads, lay.head_dim
            report.head_size = size
            gone = _indices(heads_pruned, i, n_heads, "heads")
            o = get(lay.o)
            for h in gone:
                _check_zero(o.weight[:, h * size:(h + 1) * size], f"layer {i} head {h} columns of {lay.o}")
            keep_heads = [h for h in range(n_heads) if h not in gone]
            if not keep_heads:
                if bert:
                    attention = get(f"{lay.prefix}.attention")
                    _set(model, f"{lay.prefix}.attention", HeadlessAttention(o.bias, attention.output.LayerNorm))
                else:
                    _set(model, f"{lay.prefix}.attention", ConstantBias(o.bias, pair=True))
            elif gone:
                rows = torch.tensor([h * size + j for h in keep_heads for j in range(size)])
                for name in lay.head_rows:
                    _set(model, name, _take_rows(nn, get(name), rows))
                _set(model, lay.o, _take_cols(nn, o, rows))
                attention, _ = _parent(model, lay.q)
                if hasattr(attention, "num_attention_heads"):
                    attention.num_attention_heads = len(keep_heads)
                    attention.all_head_size = len(keep_heads) * size
                if hasattr(attention, "n_heads"):
                    attention.n_heads = len(keep_heads)

            inter, out = get(lay.ffn_in), get(lay.ffn_out)
            n_neurons = inter.out_features
            dropped = _indices(neurons_pruned, i, n_neurons, "neurons")
            if dropped:
                _check_zero(out.weight[:, dropped], f"layer {i} pruned neuron columns of {lay.ffn_out}")
            keep = [j for j in range(n_neurons) if j not in set(dropped)]
            if not keep:
                if bert:
                    _set(model, f"{lay.prefix}.intermediate", PassThrough())
                    output = get(f"{lay.prefix}.output")
                    _set(model, f"{lay.prefix}.output", BiasResidualNorm(out.bias, output.LayerNorm))
                else:
                    _set(model, f"{lay.prefix}.ffn", ConstantBias(out.bias, pair=False))
            elif dropped:
                idx = torch.tensor(keep)
                _set(model, lay.ffn_in, _take_rows(nn, inter, idx))
                _set(model, lay.ffn_out, _take_cols(nn, out, idx))
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
