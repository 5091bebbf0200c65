"""The things bench times and scores, behind one small interface: the bundle under test and its baselines
(PyTorch eager on the source checkpoint, ORT fp32 dense and ORT int8 dense bundles of the same model).

A runner encodes sentences into feeds, runs one batch of feeds (for latency), predicts label ids (for
accuracy), and names what a fresh process must load to measure its peak memory.
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
    name: str                      # "bundle", "pytorch-eager", "ort-fp32-dense", "ort-int8-dense"
    description: str
    encode: Callable[[list[str]], Feeds]
    run: Callable[[Feeds], Any]
    predict_ids: Callable[[list[str]], Sequence[int]]
    memory_kind: str               # the probe in edgeprune.bench.memory: "bundle" or "torch"
    memory_path: Path
    size_mb: float | None = None   # what ships (ORT bundles); None for the PyTorch checkpoint
    pad_id: int = 0


def bundle_runner(bundle, name: str = "bundle", description: str = "the bundle under test") -> Runner:
    session = bundle.session
    input_names = [i.name for i in session.get_inputs()]

    def run(feeds: Feeds):
        return session.run(None, {k: v for k, v in feeds.items() if k in input_names})

    def predict_ids(texts: list[str]) -> list[int]:
        return [p.label_id for p in bundle.predict(texts, batch_size=max(len(texts), 1))]

    return Runner(name, description, bundle.encode, run, predict_ids, "bundle", Path(bundle.path),
                  bundle_mb(bundle.manifest), int(bundle.manifest.get("pad_token_id", 0)))


def torch_runner(checkpoint: Path, threads: int, encode: Callable[[list[str]], Feeds],
                 device: str = "cpu") -> Runner:
    """PyTorch eager on the source checkpoint, fed the same feeds as the bundle for latency."""
    import torch

    from ..checkpoint import load_checkpoint

    torch.set_num_threads(threads)
    model, tokenizer, _, state = load_checkpoint(Path(checkpoint))
    model.to(device)

    def run(feeds: Feeds):
        with torch.inference_mode():
            out = model(**{k: torch.from_numpy(np.ascontiguousarray(v)).to(device) for k, v in feeds.items()})
            return out.logits.cpu()

    def predict_ids(texts: list[str]) -> list[int]:
        batch = tokenizer(texts, padding=True, truncation=True, max_length=state.max_length, return_tensors="pt")
        with torch.inference_mode():
            logits = model(**{k: v.to(device) for k, v in batch.items()}).logits
        return logits.argmax(-1).tolist()

    return Runner("pytorch-eager", f"PyTorch eager fp32 on the source checkpoint ({device})", encode, run,
                  predict_ids, "torch", Path(checkpoint), None, tokenizer.pad_token_id or 0)
