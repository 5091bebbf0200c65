"""Accuracy of a torch classifier on raw sentences, batched and padded per batch."""

from __future__ import annotations

import torch


@torch.no_grad()
def torch_accuracy(model, tokenizer, texts: list[str], label_ids: list[int], max_length: int,
                   batch_size: int = 64) -> float:
    """`model` may be a list: an ensemble, scored on its averaged probabilities."""
    models = model if isinstance(model, (list, tuple)) else [model]
    for m in models:
        m.eval()
    correct = 0
    for i in range(0, len(texts), batch_size):
        enc = tokenizer(texts[i:i + batch_size], truncation=True, max_length=max_length, padding=True,
                        return_tensors="pt")
        pred = sum(m(**enc).logits.softmax(dim=-1) for m in models).argmax(dim=-1)
        correct += int((pred == torch.tensor(label_ids[i:i + batch_size])).sum())
    return correct / max(1, len(texts))
