"""Word-swap augmentation for the distilled student, drawn afresh each time an example is read.

A three-layer student sees SST-2's 67k sentences three times and starts to learn them rather than the
teacher; TinyBERT's remedy is more sentences, labelled by the teacher. Here a drawn example is, with
probability `augment`, rewritten by swapping some of its whole-word tokens for one of their nearest
neighbours in the model's own word-embedding table (cosine), which needs no extra model or download. The
swap may change the sentiment ("good" sits near "bad"), so an augmented example carries no label: its target
is the teacher's distribution on the rewritten sentence, and the hard-label loss skips it
(`DistillationTrainer`). The step count is unchanged: the same batches, some sentences rewritten.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Sequence

import torch

NEIGHBOURS = 8          # candidates per word: close enough to keep the sentence a sentence
AUGMENTED = "augmented"  # the batch key that marks rewritten examples (popped before the model sees it)


def swappable_ids(tokenizer) -> list[int]:
    """Vocabulary entries that are whole alphabetic words: no special tokens, no `##` continuations, no
    `[unusedN]` slots, at least two letters (single letters are mostly noise as substitutes)."""
    special = set(tokenizer.all_special_ids)
    vocab = tokenizer.get_vocab()
    return sorted(i for token, i in vocab.items()
                  if i not in special and token.isalpha() and len(token) >= 2 and token.isascii())


def nearest_neighbours(table: torch.Tensor, ids: Sequence[int], k: int = NEIGHBOURS,
                       chunk: int = 2048) -> dict[int, list[int]]:
    """For each id in `ids`, the k other ids in `ids` whose rows of `table` are closest by cosine."""
    index = torch.tensor(list(ids), dtype=torch.long)
    if len(index) < 2:
        return {}
    k = min(k, len(index) - 1)
    rows = torch.nn.functional.normalize(table.detach().float()[index], dim=-1)
    found: dict[int, list[int]] = {}
    with torch.no_grad():
        for start in range(0, len(index), chunk):
            sims = rows[start:start + chunk] @ rows.T
            own = torch.arange(start, min(start + chunk, len(index)))
            sims[own - start, own] = -2.0  # never a word's own neighbour
            best = sims.topk(k, dim=-1).indices
            for r, picks in zip(own.tolist(), best.tolist()):
                found[int(index[r])] = [int(index[p]) for p in picks]
    return found


@dataclass
class WordSwapper:
    """Rewrites token-id lists: each single-piece word with a neighbour list is swapped with probability
    `rate`. Words split into pieces stay whole: swapping a piece would make a non-word."""

    neighbours: dict[int, list[int]]
    continuation: frozenset[int]  # ids of `##` pieces: the token before one is part of a longer word
    rate: float
    rng: random.Random

    @classmethod
    def for_model(cls, model, tokenizer, rate: float, seed: int) -> "WordSwapper":
        ids = swappable_ids(tokenizer)
        table = model.get_input_embeddings().weight
        pieces = frozenset(i for token, i in tokenizer.get_vocab().items() if token.startswith("##"))
        return cls(nearest_neighbours(table, ids), pieces, rate, random.Random(seed))

    def __call__(self, input_ids: Sequence[int]) -> tuple[list[int], int]:
        """The rewritten ids and how many were swapped."""
        out, swapped = list(input_ids), 0
        for i, token in enumerate(out):
            options = self.neighbours.get(token)
            if not options or (i + 1 < len(out) and out[i + 1] in self.continuation):
                continue
            if self.rng.random() < self.rate:
                out[i], swapped = self.rng.choice(options), swapped + 1
        return out, swapped


class AugmentedDataset(torch.utils.data.Dataset):
    """A tokenized dataset whose examples are rewritten with probability `probability` each time they are
    read, marked `augmented` = 1 when at least one word changed. The length is the base dataset's, so
    epochs, steps and schedules are the same as without augmentation; swaps are one token for one, so
    lengths (and length-grouped batches) are too."""

    def __init__(self, base, swapper: WordSwapper, probability: float):
        self.base, self.swapper, self.probability = base, swapper, probability

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict:
        item = dict(self.base[int(i)])
        item[AUGMENTED] = 0
        if self.swapper.rng.random() < self.probability:
            ids, swapped = self.swapper(item["input_ids"])
            if swapped:
                item["input_ids"], item[AUGMENTED] = ids, 1
        return item
