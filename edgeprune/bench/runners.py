"""The things bench times and scores, behind one small interface: the bundle under test and its baselines
(PyTorch eager on the source checkpoint or a dense reference, ORT fp32 dense and ORT int8 dense bundles
of the same model).

A runner encodes sentences into feeds, runs one batch of feeds (for latency), scores gold-labelled
sentences (for accuracy), and names what a fresh process must load to measure its peak memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .latency import Feeds

MB = 1024 * 1024


def bundle_mb(manifest: dict) -> float:
    """What ships: the bytes of every file in the bundle's hashed file table (manifest.json aside, whose
    size grows as bench records figures in it)."""
    return sum(int(entry["bytes"]) for entry in manifest["files"].values()) / MB


@dataclass
class Runner:
    name: str                      # "bundle", "pytorch-eager", "ort-fp32-dense", "ort-int8-dense", "dense-reference"
    description: str
    encode: Callable[[list[str]], Feeds]
    run: Callable[[Feeds], Any]
    # accuracy on (texts, gold ids, batch size): what bench uses, at the target workload's batch size
    score: Callable[[Sequence[str], Sequence[int], int], float]
    memory_kind: str               # the probe in edgeprune.bench.memory: "bundle" or "torch"
    memory_path: Path
    size_mb: float | None = None   # what ships (ORT bundles); None for a PyTorch checkpoint
    pad_id: int = 0


def bundle_runner(bundle, name: str = "bundle", description: str = "the bundle under test") -> Runner:
    from .accuracy import accuracy

    session = bundle.session
    input_names = [i.name for i in session.get_inputs()]

    def run(feeds: Feeds):
        return session.run(None, {k: v for k, v in feeds.items() if k in input_names})

    def predict_ids(texts: list[str]) -> list[int]:
        return [p.label_id for p in bundle.predict(texts, batch_size=max(len(texts), 1))]

    return Runner(name, description, bundle.encode, run, lambda texts, ids, batch: accuracy(predict_ids, texts, ids, batch),
                  "bundle", Path(bundle.path), bundle_mb(bundle.manifest), int(bundle.manifest.get("pad_token_id", 0)))


def load_torch_classifier(folder: Path):
    """(model, tokenizer) of an edgeprune checkpoint (masks re-applied) or of a plain `save_pretrained`
    classifier folder (a dense fine-tuned reference such as a distillation teacher)."""
    from ..checkpoint import STATE_FILE, load_checkpoint, load_classifier_folder

    folder = Path(folder)
    if (folder / STATE_FILE).is_file():
        model, tokenizer, _, _ = load_checkpoint(folder)
        return model, tokenizer
    return load_classifier_folder(folder)


def torch_runner(checkpoint: Path, threads: int, encode: Callable[[list[str]], Feeds], max_length: int | None = None,
                 device: str = "cpu", name: str = "pytorch-eager",
                 description: str | None = None) -> Runner:
    """PyTorch eager on a checkpoint, fed the same feeds as the bundle for latency; scored with
    `edgeprune.evaluate.torch_accuracy` at `max_length` (pass the bundle's; default the checkpoint's)."""
    import torch

    from ..evaluate import torch_accuracy

    torch.set_num_threads(threads)
    model, tokenizer = load_torch_classifier(checkpoint)
    model.to(device)
    if max_length is None:
        from ..checkpoint import STATE_FILE, read_pruning_state

        max_length = (read_pruning_state(Path(checkpoint)).max_length if (Path(checkpoint) / STATE_FILE).is_file()
                      else min(int(tokenizer.model_max_length), int(model.config.max_position_embeddings)))

    def run(feeds: Feeds):
        with torch.inference_mode():
            out = model(**{k: torch.from_numpy(np.ascontiguousarray(v)).to(device) for k, v in feeds.items()})
            return out.logits.cpu()

    def score(texts: Sequence[str], ids: Sequence[int], batch: int) -> float:
        model.cpu()
        try:
            return torch_accuracy(model, tokenizer, list(texts), list(ids), max_length, batch_size=batch)
        finally:
            model.to(device)

    return Runner(name, description or f"PyTorch eager fp32 on the source checkpoint ({device})", encode, run,
                  score, "torch", Path(checkpoint), None, tokenizer.pad_token_id or 0)
