"""Keep a subset of an encoder's layers: the one structural cut that removes per-layer overhead.

Head and neuron removal shrinks each layer's matrices, but every layer still pays for its attention,
layer norms and (int8) activation quantization; at kiosk sequence lengths that fixed cost dominates.
Dropping whole layers before fine-tuning (DistilBERT takes every other layer; Sajjad et al. 2020,
"Poor Man's BERT") and distilling from the full teacher recovers most of the accuracy. The layers are cut
in the model itself, so the checkpoint, its config and everything downstream (convert, ONNX, bundle)
simply see a shallower model of the same family.
"""

from __future__ import annotations

from typing import Sequence

from .errors import ModelError
from .layout import encoder_layout

# config attributes that count encoder layers, per family (BERT-style, DistilBERT)
_DEPTH_KEYS = ("num_hidden_layers", "n_layers")


def config_depth(config) -> int | None:
    """The encoder layer count a config states, or None where it states none this module knows."""
    return next((int(getattr(config, k)) for k in _DEPTH_KEYS if getattr(config, k, None) is not None), None)


def keep_encoder_layers(model, keep: Sequence[int]) -> list[int]:
    """Keep encoder layers `keep` (0-based, ascending) of `model` in place; returns the dropped indices."""
    layout = encoder_layout(model)
    depth = len(layout)
    keep = list(keep)
    if not keep or keep != sorted(set(keep)):
        raise ModelError(f"keep_layers must list distinct encoder layers in ascending order, got {keep}",
                         "list at least one layer index, each once, e.g. [1, 3, 5]")
    bad = [i for i in keep if not 0 <= i < depth]
    if bad:
        raise ModelError(f"keep_layers names layer(s) {bad}, but the model has {depth} encoder layers "
                         f"(0..{depth - 1})", f"list layer indices between 0 and {depth - 1}")
    if keep == list(range(depth)):
        return []
    keys = [k for k in _DEPTH_KEYS if hasattr(model.config, k)]
    if not keys:  # checked before anything changes: never a half-cut model
        raise ModelError(f"the config of {type(model).__name__} has no layer count to update",
                         "use a BERT- or DistilBERT-style model")
    container_name = layout[0].prefix.rsplit(".", 1)[0]
    container = model.get_submodule(container_name)
    kept = [container[i] for i in keep]
    for new_index, layer in enumerate(kept):
        # attention modules remember their position (for caches); keep that consistent with the new stack
        for module in layer.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = new_index
    parent_name, _, attr = container_name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, type(container)(kept))
    for key in keys:
        setattr(model.config, key, len(kept))
    return [i for i in range(depth) if i not in set(keep)]
