"""ONNX export of a (shrunk) classifier with dynamic batch and sequence axes.

The TorchScript exporter (`dynamo=False`) is used: with eager attention it emits the MatMul/Softmax
pattern that onnxruntime's BERT fusions recognise, exports per-layer head counts without symbolic-shape
trouble, and handles dynamic axes reliably; the dynamo exporter is kept as a fallback.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from ..errors import ModelError

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT_NAMES = ("logits",)
OPSET = 17


class _Logits:
    """Wrap the HF model so the exported graph has plain tensor inputs and a single `logits` output."""

    def __new__(cls, model, names):
        import torch

        class Wrapper(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.model = model

            def forward(self, *tensors):
                return self.model(**dict(zip(names, tensors)), return_dict=True).logits

        return Wrapper().eval()


def _explicit_heads_attention(self_attention):
    """Same maths as HF's eager self-attention, but reshaping to an explicit per-layer head count.

    HF reshapes with `view(..., -1, head_size)`; the exported Reshape then carries -1 for the heads, and
    onnxruntime's attention fusion can only fall back to one global `num_heads`, which is wrong for a
    layer that lost heads. A constant head count per layer lets the fusion read each layer's own.
    """
    import torch

    class ExplicitHeadsSelfAttention(torch.nn.Module):
        def __init__(self, src):
            super().__init__()
            self.query, self.key, self.value = src.query, src.key, src.value
            self.heads = int(src.num_attention_heads)
            self.head_size = int(src.attention_head_size)
            self.scaling = float(getattr(src, "scaling", self.head_size ** -0.5))

        def _split(self, x):
            return x.view(x.size(0), -1, self.heads, self.head_size).transpose(1, 2)

        def forward(self, hidden_states, attention_mask=None, *args, **kwargs):
            q = self._split(self.query(hidden_states))
            k = self._split(self.key(hidden_states))
            v = self._split(self.value(hidden_states))
            scores = torch.matmul(q, k.transpose(-1, -2)) * self.scaling
            if attention_mask is not None:
                scores = scores + attention_mask
            context = torch.matmul(torch.softmax(scores, dim=-1), v).transpose(1, 2)
            context = context.reshape(context.size(0), -1, self.heads * self.head_size)
            return context, None

    return ExplicitHeadsSelfAttention(self_attention).eval()


def use_explicit_heads(model, layout=None) -> int:
    """Swap every BERT-style self-attention for the explicit-head form; returns how many were swapped.

    The layers come from `edgeprune.layout.encoder_layout` (pass the `layout` taken before structured
    removal: a shrunk layer may no longer match the map). Other families (DistilBERT) keep their
    attention: their graphs stay correct, only ORT's per-layer head fusion may not apply.
    """
    from ..errors import ModelError
    from ..layout import encoder_layout

    if layout is None:
        try:
            layout = encoder_layout(model)
        except ModelError:
            return 0
    swapped = 0
    for lay in layout:
        parent_name, _, attr = lay.q.rpartition(".")
        try:
            src = model.get_submodule(parent_name)
        except AttributeError:  # the whole attention was removed (no head left)
            continue
        if attr == "query" and all(hasattr(src, n) for n in ("query", "key", "value", "num_attention_heads",
                                                             "attention_head_size")):
            holder_name, _, holder_attr = parent_name.rpartition(".")
            setattr(model.get_submodule(holder_name), holder_attr, _explicit_heads_attention(src))
            swapped += 1
    return swapped


def model_input_names(model, tokenizer) -> list[str]:
    """Inputs the model takes and the tokenizer produces (RoBERTa/DistilBERT have no token types)."""
    import inspect

    accepted = set(inspect.signature(model.forward).parameters)
    produced = set(getattr(tokenizer, "model_input_names", INPUT_NAMES))
    return [n for n in INPUT_NAMES if n in accepted and n in produced]


def export_onnx(model, tokenizer, path: Path, sample_texts: list[str], max_length: int, layout=None) -> list[str]:
    """Write `path` (weights inline, no external data); return the input names. `layout`: the encoder
    layout taken before structured removal (see `use_explicit_heads`)."""
    import torch

    names = model_input_names(model, tokenizer)
    try:
        model.set_attn_implementation("eager")
    except (AttributeError, ValueError):
        pass
    use_explicit_heads(model, layout)
    model.eval()
    enc = tokenizer(sample_texts[:2], padding=True, truncation=True, max_length=max_length,
                    return_tensors="pt")
    args = tuple(enc[n] for n in names)
    wrapper = _Logits(model, names)
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    axes["logits"] = {0: "batch"}
    errors = []
    for dynamo in (False, True):
        try:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                if dynamo:
                    batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
                    torch.onnx.export(wrapper, args, str(path), input_names=list(names),
                                      output_names=list(OUTPUT_NAMES), opset_version=18, dynamo=True,
                                      external_data=False,
                                      dynamic_shapes=tuple({0: batch, 1: seq} for _ in names))
                else:
                    torch.onnx.export(wrapper, args, str(path), input_names=list(names),
                                      output_names=list(OUTPUT_NAMES), opset_version=OPSET,
                                      dynamic_axes=axes, dynamo=False, do_constant_folding=True)
            return names
        except Exception as exc:  # noqa: BLE001 - both exporters fail in many ways; report them all
            errors.append(f"{'dynamo' if dynamo else 'torchscript'}: {type(exc).__name__}: {exc}"[:300])
    raise ModelError("ONNX export failed (" + " | ".join(errors) + ")",
                     "report this model architecture; try --format dense with structured removal off")
