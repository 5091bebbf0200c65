"""Vocabulary trimming: keep the embedding rows a deployment can actually reach.

The word-embedding table is half of a MiniLM's bytes (30522 x 384), yet a sentiment kiosk's text uses a
small part of the vocabulary. Trimming keeps: every special token, every token the tokenizer produces on
the training sentences, and every single character with its `##` continuation, so that *any* input still
tokenizes without new unknowns (a word whose whole-word token was dropped falls back to smaller pieces).
That changes how some unseen words are split, so it is never assumed harmless: convert measures label
agreement and accuracy with the trimmed tokenizer, and the share of eval sentences tokenized identically.

Only WordPiece tokenizers (BERT family) are trimmed; ids are renumbered in their old order, so [PAD]
and the other low ids keep their relative places.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable

from ..errors import ModelError


@dataclass(frozen=True)
class VocabTrim:
    kept_ids: list[int]          # old id of each new id, in order
    tokenizer_json: str          # the trimmed tokenizer, loadable by `tokenizers.Tokenizer.from_str`
    before: int
    after: int

    def to_json(self) -> dict[str, Any]:
        return {"vocab_before": self.before, "vocab_after": self.after}


def plan_trim(tokenizer_json: str, texts: Iterable[str]) -> VocabTrim:
    """Which tokens to keep for `texts` (training sentences), and the renumbered tokenizer."""
    from tokenizers import Tokenizer

    spec = json.loads(tokenizer_json)
    model = spec.get("model", {})
    if model.get("type") != "WordPiece":
        raise ModelError(f"vocabulary trimming supports WordPiece tokenizers, not {model.get('type')!r}",
                         "convert without --trim-vocab")
    vocab: dict[str, int] = model["vocab"]
    prefix = model.get("continuing_subword_prefix", "##")
    keep: set[int] = {t["id"] for t in spec.get("added_tokens", [])}
    if model.get("unk_token") in vocab:
        keep.add(vocab[model["unk_token"]])
    keep |= {i for tok, i in vocab.items()
             if len(tok) == 1 or (tok.startswith(prefix) and len(tok) == len(prefix) + 1)}
    tokenizer = _bare(Tokenizer.from_str(tokenizer_json))
    batch = list(texts)
    for i in range(0, len(batch), 1024):
        for enc in tokenizer.encode_batch(batch[i:i + 1024]):
            keep.update(enc.ids)
    kept = sorted(keep)
    remap = {old: new for new, old in enumerate(kept)}
    spec["model"]["vocab"] = {tok: remap[i] for tok, i in sorted(vocab.items(), key=lambda kv: kv[1])
                              if i in remap}
    _remap_specials(spec, remap)
    return VocabTrim(kept_ids=kept, tokenizer_json=json.dumps(spec, ensure_ascii=False), before=len(vocab),
                     after=len(kept))


def _remap_specials(spec: dict[str, Any], remap: dict[int, int]) -> None:
    """Special-token ids live outside the vocab too: added tokens, post-processor and padding."""
    for token in spec.get("added_tokens", []):
        token["id"] = remap[token["id"]]
    post = spec.get("post_processor") or {}
    processors = post.get("processors", [post]) if post.get("type") == "Sequence" else [post]
    for proc in processors:
        for key in ("cls", "sep"):  # BertProcessing / RobertaProcessing: [token, id]
            if isinstance(proc.get(key), list):
                proc[key][1] = remap[proc[key][1]]
        for special in (proc.get("special_tokens") or {}).values():  # TemplateProcessing
            special["ids"] = [remap[i] for i in special["ids"]]
    padding = spec.get("padding")
    if isinstance(padding, dict) and "pad_id" in padding:
        padding["pad_id"] = remap.get(padding["pad_id"], 0)


def apply_to_model(model, kept_ids: list[int]) -> None:
    """Keep only `kept_ids` rows of the word embeddings (and a tied decoder, if any)."""
    import torch

    embeddings = model.get_input_embeddings()
    index = torch.tensor(kept_ids, dtype=torch.long)
    trimmed = torch.nn.Embedding(len(kept_ids), embeddings.embedding_dim,
                                 padding_idx=None if embeddings.padding_idx is None
                                 else kept_ids.index(embeddings.padding_idx))
    with torch.no_grad():
        trimmed.weight.copy_(embeddings.weight[index])
    model.set_input_embeddings(trimmed)
    model.config.vocab_size = len(kept_ids)


def tokenization_agreement(original_json: str, trimmed: VocabTrim, texts: list[str]) -> float:
    """Share of `texts` that the trimmed tokenizer splits into exactly the original tokens."""
    from tokenizers import Tokenizer

    if not texts:
        return 1.0
    a, b = _bare(Tokenizer.from_str(original_json)), _bare(Tokenizer.from_str(trimmed.tokenizer_json))
    same = sum(x.tokens == y.tokens for x, y in zip(a.encode_batch(texts), b.encode_batch(texts)))
    return same / len(texts)


def _bare(tokenizer):
    """No padding, no truncation: a batch padded to its longest member would make every sentence differ
    as soon as one splits longer, and truncation would hide tokens past max_length."""
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer
