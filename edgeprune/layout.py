"""Where the prunable structures of a transformer encoder live, by module name.

Heads and FFN neurons are spread over several matrices (a head is rows of q/k/v and columns of the
attention output; a neuron is a row of the FFN input and a column of its output). Pruning and structured
removal both need that map, so it is found once here from module names, for BERT-style (BERT, RoBERTa,
MiniLM, ELECTRA...) and DistilBERT-style encoders.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import ModelError

# attribute paths inside one encoder layer, per naming family
_FAMILIES = (
    {"q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
     "o": "attention.output.dense", "ffn_in": "intermediate.dense", "ffn_out": "output.dense"},
    {"q": "attention.q_lin", "k": "attention.k_lin", "v": "attention.v_lin",
     "o": "attention.out_lin", "ffn_in": "ffn.lin1", "ffn_out": "ffn.lin2"},
)
_LAYER = re.compile(r"^(.*\.layer)\.(\d+)$")


@dataclass(frozen=True)
class LayerLayout:
    index: int
    prefix: str          # e.g. bert.encoder.layer.3
    q: str
    k: str
    v: str
    o: str
    ffn_in: str
    ffn_out: str
    num_heads: int
    head_dim: int
    intermediate: int

    @property
    def head_rows(self) -> tuple[str, ...]:
        """Modules whose output rows (and bias) belong to heads."""
        return (self.q, self.k, self.v)


def encoder_layout(model) -> list[LayerLayout]:
    """One LayerLayout per encoder layer, in order; ModelError for an architecture we cannot map."""
    modules = dict(model.named_modules())
    config = model.config
    num_heads = getattr(config, "num_attention_heads", None) or getattr(config, "n_heads", None)
    layers: list[LayerLayout] = []
    for name in modules:
        match = _LAYER.match(name)
        if not match:
            continue
        for family in _FAMILIES:
            paths = {key: f"{name}.{rel}" for key, rel in family.items()}
            if all(p in modules for p in paths.values()):
                q = modules[paths["q"]]
                heads = num_heads
                if not heads:
                    raise ModelError(f"cannot tell the head count of {name}",
                                     "use a model whose config has num_attention_heads")
                layers.append(LayerLayout(index=int(match.group(2)), prefix=name, num_heads=int(heads),
                                          head_dim=q.out_features // int(heads),
                                          intermediate=modules[paths["ffn_in"]].out_features, **paths))
                break
    if not layers:
        raise ModelError(f"cannot find encoder layers in a {type(model).__name__}",
                         "edgeprune's structured pruning supports BERT-, RoBERTa- and DistilBERT-style encoders")
    return sorted(layers, key=lambda layer: layer.index)
