"""The checkpoint contract between train and convert.

A checkpoint folder is:
- a `save_pretrained` model (loads with plain transformers) whose pruned weights are exactly zero,
  plus the tokenizer files;
- `masks.safetensors`: one uint8 tensor per pruned parameter, keyed by parameter name, 1 = kept. Masks
  live apart from the weights so another sparsity level or format needs no retraining;
- `pruning_state.json`: a `PruningState` (recipe, step, per-layer sparsity, structure removed, history).

Structured pruning is recorded by index as well as by zeros: for each encoder layer, the attention heads
and FFN neurons that were pruned. A pruned head has zero query/key/value rows and biases and zero
columns in `attention.output.dense`; a pruned neuron has a zero `intermediate.dense` row and bias and a
zero column in `output.dense`. Convert removes them physically and checks the zeros are really there.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import __version__
from .errors import CheckpointError

SCHEMA_VERSION = 1
STATE_FILE = "pruning_state.json"
MASKS_FILE = "masks.safetensors"


@dataclass
class PruningState:
    recipe: dict[str, Any]
    recipe_sha256: str
    step: int = 0
    total_steps: int = 0
    global_sparsity: float = 0.0
    per_layer_sparsity: dict[str, float] = field(default_factory=dict)
    heads_pruned: dict[str, list[int]] = field(default_factory=dict)
    neurons_pruned: dict[str, list[int]] = field(default_factory=dict)
    nm: list[dict[str, Any]] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    max_length: int = 64
    labels: list[str] = field(default_factory=list)      # id -> label name (what predictions print)
    raw_labels: list[str] = field(default_factory=list)  # id -> label value as written in the data files
    layers_kept: list[int] = field(default_factory=list)  # source-model encoder layers still there ([] = unknown)
    source_layers: int = 0                                # encoder layers of the model training started from
    schema_version: int = SCHEMA_VERSION
    edgeprune_version: str = __version__

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> "PruningState":
        known = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(data, dict) or not isinstance(data.get("schema_version", SCHEMA_VERSION), int):
            raise TypeError("not a pruning state object")
        if data.get("schema_version", SCHEMA_VERSION) > SCHEMA_VERSION:
            raise CheckpointError(
                f"{STATE_FILE} has schema version {data['schema_version']}, newer than this edgeprune "
                f"understands ({SCHEMA_VERSION})",
                "upgrade edgeprune",
            )
        return cls(**{k: v for k, v in data.items() if k in known})


def read_pruning_state(path: Path) -> PruningState:
    """Read only the JSON state: cheap, torch-free, enough for up-to-date checks and inspection."""
    file = Path(path) / STATE_FILE
    if not file.is_file():
        raise CheckpointError(
            f"{path} is not an edgeprune checkpoint (no {STATE_FILE})",
            "pass the -o folder written by `edgeprune train`",
        )
    try:
        return PruningState.from_json(json.loads(file.read_text()))
    except (json.JSONDecodeError, TypeError) as exc:
        raise CheckpointError(f"{file} is malformed ({exc})", "re-run `edgeprune train`") from exc


def save_checkpoint(out_dir: Path, model, tokenizer, masks: dict, state: PruningState) -> None:
    """Write the three parts into `out_dir` (the caller makes that folder atomic)."""
    import torch
    from safetensors.torch import save_file

    from .models import quiet_transformers

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with quiet_transformers():
        model.save_pretrained(out_dir)
        if tokenizer is not None:
            tokenizer.save_pretrained(out_dir)
    save_file({k: v.detach().to(torch.uint8).contiguous().cpu() for k, v in masks.items()},
              str(out_dir / MASKS_FILE))
    (out_dir / STATE_FILE).write_text(json.dumps(state.to_json(), indent=2))


def load_masks(path: Path) -> dict:
    import torch
    from safetensors.torch import load_file

    file = Path(path) / MASKS_FILE
    if not file.is_file():
        raise CheckpointError(f"{path} has no {MASKS_FILE}", "pass a folder written by `edgeprune train`")
    return {k: v.to(torch.bool) for k, v in load_file(str(file)).items()}


def load_classifier_folder(path: Path):
    """(model in eval mode, tokenizer) of a save_pretrained classifier folder, or a one-line error."""
    from transformers import AutoConfig, AutoTokenizer

    from .models import classifier_class, quiet_transformers

    try:
        with quiet_transformers():
            config = AutoConfig.from_pretrained(path)
            model = classifier_class(config).from_pretrained(path, config=config)
            tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot load a classifier from {path} ({str(exc).splitlines()[0][:160]})",
                              "pass a save_pretrained classifier folder or an edgeprune checkpoint") from exc
    return model.eval(), tokenizer


def load_checkpoint(path: Path):
    """(model, tokenizer, masks, state) from a checkpoint folder, with the masks re-applied."""
    import torch

    path = Path(path)
    state = read_pruning_state(path)
    masks = load_masks(path)
    model, tokenizer = load_classifier_folder(path)
    params = dict(model.named_parameters())
    missing = sorted(set(masks) - set(params))
    if missing:
        raise CheckpointError(f"{MASKS_FILE} names parameters the model lacks: {missing[:3]}",
                              "the masks and model come from different runs; re-run `edgeprune train`")
    with torch.no_grad():
        for name, mask in masks.items():
            params[name].mul_(mask.to(params[name].dtype))
    model.eval()
    return model, tokenizer, masks, state
