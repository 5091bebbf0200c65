"""Int8-aware training: the student's matrices see onnxruntime's dynamic int8 while it trains.

convert quantizes every MatMul (and the fused Attention) with `quantize_dynamic`: weights int8
symmetric (one scale per output channel, or one per matrix), activations uint8 with a scale and zero
point taken at run time from the tensor itself. A student trained in fp32 meets that rounding only after
training; on the kiosk student it cost 0.1 to 0.6 points (SST-2 dev, one sentence at a time), and the
bundle's accuracy was known only after convert. Here each Linear computes with both of its
inputs rounded exactly as the kiosk will round them, and gradients pass straight through the rounding
(Bengio et al. 2013; Jacob et al. 2018), so the network learns weights that survive it.

What is simulated, and why it matches the bundle:
- weights: symmetric int8 in [-127, 127] (onnxruntime's symmetric range), scale = absmax / 127 per output
  row (`per_channel`) or per matrix, where q, k and v count as one matrix (the fused Attention's); an
  all-zero row (a pruned neuron) stays zero;
- activations: `DynamicQuantizeLinear`'s uint8 rule, the range widened to include 0, taken per sentence
  over its real tokens only. The kiosk runs one unpadded sentence at a time, so a range over the whole
  padded training batch would train for a rounding the kiosk never does.
- embedding tables (position, token type, and the word table unless it is stored in 4 bits): uint8 with
  one range per table, as `quantize_dynamic` stores a Gather's or EmbedLayerNormalization's table.
The latent weights stay fp32 and are what the checkpoint saves: convert's quantizer rounds them to the
very grid the forward pass used. Every Linear takes part, pooler and classifier included: each is a
MatMul in the exported graph and `quantize_dynamic` rounds every one. Nothing is registered as a
parameter or buffer, so the state dict, masks, resume and save_pretrained are unchanged.
"""

from __future__ import annotations

import types

MODES = ("none", "int8-dynamic", "int8-dynamic-per-channel")  # convert's --quantize names for the same rounding
WEIGHT_QMAX = 127  # symmetric int8: onnxruntime uses [-127, 127] so that zero is exact and the range balanced
ACT_QMAX = 255     # uint8


def fake_quantize_weight(weight, per_channel: bool, shared=()):
    """`weight` (out x in) rounded to symmetric int8, with a straight-through gradient. `shared`: the
    other matrices one per-matrix scale covers (q, k and v become one matrix in the fused Attention)."""
    import torch

    w = weight.detach()
    if per_channel:
        absmax = w.abs().amax(dim=1, keepdim=True)
    else:
        absmax = torch.stack([w.abs().amax()] + [o.detach().abs().amax() for o in shared]).amax().reshape(1, 1)
    scale = torch.where(absmax > 0, absmax / WEIGHT_QMAX, torch.ones_like(absmax))
    rounded = torch.clamp(torch.round(w / scale), -WEIGHT_QMAX, WEIGHT_QMAX) * scale
    return weight + (rounded - w)


def fake_quantize_activation(x, real_tokens=None):
    """`x` (batch x ... x features) rounded as `DynamicQuantizeLinear` rounds one sentence: uint8, the
    range [min(x, 0), max(x, 0)] per batch row, over the positions `real_tokens` (batch x tokens) marks
    when given. Straight-through gradient."""
    import torch

    v = x.detach()
    flat = v.reshape(v.shape[0], -1, v.shape[-1]) if v.dim() > 2 else v.reshape(v.shape[0], 1, -1)
    if real_tokens is not None and v.dim() == 3 and tuple(real_tokens.shape) == tuple(v.shape[:2]):
        keep = real_tokens.to(torch.bool).unsqueeze(-1)
        hi = flat.masked_fill(~keep, -float("inf")).amax(dim=(1, 2))
        lo = flat.masked_fill(~keep, float("inf")).amin(dim=(1, 2))
    else:
        hi, lo = flat.amax(dim=(1, 2)), flat.amin(dim=(1, 2))
    hi, lo = torch.clamp(hi, min=0.0), torch.clamp(lo, max=0.0)  # a row with no real token: range [0, 0]
    scale = (hi - lo) / ACT_QMAX
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    zero = torch.clamp(torch.round(-lo / safe), 0, ACT_QMAX)
    shape = (-1,) + (1,) * (v.dim() - 1)
    safe, zero = safe.reshape(shape), zero.reshape(shape)
    q = torch.clamp(torch.round(v / safe) + zero, 0, ACT_QMAX)
    rounded = torch.where(scale.reshape(shape) > 0, (q - zero) * safe, v)
    return x + (rounded - v)


class Int8Aware:
    """Installed on a model: its Linears and embedding tables compute with int8-rounded values.

    `word_table`: "int4" when convert stores the word table in 4-bit blocks (train snaps and freezes it on
    that grid, so it is left alone here), "int8" when it is quantized with the rest. A pre-hook on the model
    records each call's attention mask, so every Linear inside that call takes its activation range over
    real tokens only. `remove()` restores plain fp32 forwards."""

    def __init__(self, model, mode: str, word_table: str = "int8"):
        import torch

        from .errors import RecipeError
        from .layout import encoder_layout

        if mode not in MODES or mode == "none":
            raise RecipeError(f"unknown int8-aware training mode {mode!r}",
                              f"use one of: {', '.join(m for m in MODES if m != 'none')}")
        self.per_channel = mode.endswith("per-channel")
        self.real_tokens = None
        layout = encoder_layout(model)  # a model convert can map, or a clear ModelError now, not after training
        modules = dict(model.named_modules())
        self.linears = [m for m in modules.values() if isinstance(m, torch.nn.Linear)]
        self.shared = {}  # linear -> the other weights its per-matrix scale spans
        for lay in layout:
            qkv = [modules[n] for n in (lay.q, lay.k, lay.v) if n in modules]
            for m in qkv:
                self.shared[m] = [o.weight for o in qkv if o is not m]
        word = model.get_input_embeddings()
        self.tables = [m for m in modules.values() if isinstance(m, torch.nn.Embedding)
                       and not (word_table == "int4" and m is word)]
        # one fused QEmbedLayerNormalization takes the three tables and the LayerNorm's scale and shift,
        # all uint8; with a 4-bit word table the lookups stay separate Gathers and the LayerNorm stays fp32
        word_name = next(n for n, m in modules.items() if m is word)
        parent = modules[word_name.rpartition(".")[0]] if "." in word_name else model
        self.norms = ([m for m in parent.children() if isinstance(m, torch.nn.LayerNorm)]
                      if word_table == "int8" else [])
        self._patched = []
        for linear in self.linears:
            self._patch(linear, self._linear)
        for table in self.tables:
            self._patch(table, self._embedding)
        for norm in self.norms:
            self._patch(norm, self._layer_norm)
        self._hook = model.register_forward_pre_hook(self._record_mask, with_kwargs=True)

    def _patch(self, module, forward) -> None:
        module.forward = types.MethodType(forward, module)
        self._patched.append(module)

    def _record_mask(self, module, args, kwargs):
        mask = kwargs.get("attention_mask")
        if mask is None and len(args) > 1:
            mask = args[1]
        self.real_tokens = mask if mask is not None and getattr(mask, "dim", lambda: 0)() == 2 else None

    def _linear(self, linear, x):
        import torch.nn.functional as F

        return F.linear(fake_quantize_activation(x, self.real_tokens),
                        fake_quantize_weight(linear.weight, self.per_channel, self.shared.get(linear, ())),
                        linear.bias)

    def _embedding(self, table, ids):
        import torch.nn.functional as F

        return F.embedding(ids, _as_one_tensor(table.weight), table.padding_idx, table.max_norm,
                           table.norm_type, table.scale_grad_by_freq, table.sparse)

    def _layer_norm(self, norm, x):
        import torch.nn.functional as F

        return F.layer_norm(x, norm.normalized_shape, _as_one_tensor(norm.weight), _as_one_tensor(norm.bias),
                            norm.eps)

    def remove(self) -> None:
        for module in self._patched:
            del module.forward  # the class's own forward again
        self._hook.remove()
        self._patched, self.linears, self.tables, self.norms = [], [], [], []


def _as_one_tensor(t):
    """A stored tensor that onnxruntime quantizes like an activation (uint8, one range for all of it)."""
    return None if t is None else fake_quantize_activation(t.reshape(1, -1)).reshape(t.shape)
