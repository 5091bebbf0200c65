"""Tiny pruned checkpoints for the convert/runtime tests, built locally from configs (no network).

Odd sizes (hidden 32, 4 heads, intermediate 37) expose shape bugs; the zeros follow the checkpoint
contract exactly (a pruned head: zero q/k/v rows + biases and zero attention.output.dense columns; a
pruned neuron: zero intermediate row + bias and zero output.dense column).
"""

from __future__ import annotations

from pathlib import Path

WORDS = (
    "the a an movie film was is good great bad awful fun boring love hate story actors plot "
    "not very really quite best worst ever and but it this that of to in with for on funny sad "
    "long short charming dull brilliant terrible wonderful mess masterpiece script director "
    "music scenes ending beginning i we you they liked enjoyed disliked watched"
).split()

SENTENCES = [
    "the movie was great",
    "a boring and long film",
    "i loved this story",
    "the worst script ever",
    "it was not very funny",
    "brilliant actors and a charming plot",
    "we watched it and hated the ending",
    "the director made a wonderful film",
    "dull scenes but great music",
    "a terrible mess of a movie",
    "really fun and quite sad",
    "this film is a masterpiece",
]
LABELS = ["1", "0", "1", "0", "0", "1", "0", "1", "1", "0", "1", "1"]

HIDDEN, LAYERS, HEADS, INTERMEDIATE = 32, 2, 4, 37
HEAD_SIZE = HIDDEN // HEADS


def make_tokenizer():
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = sorted({c for w in WORDS for c in w})
    tokens = list(dict.fromkeys(specials + WORDS + ["##" + c for c in chars] + chars))  # ids contiguous
    vocab = {tok: i for i, tok in enumerate(tokens)}
    tok = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    return BertTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                             cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
                             model_max_length=64), len(vocab)


def make_model(vocab_size: int, seed: int = 0, layers: int = LAYERS):
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=vocab_size, hidden_size=HIDDEN, num_hidden_layers=layers,
                        num_attention_heads=HEADS, intermediate_size=INTERMEDIATE,
                        max_position_embeddings=64, num_labels=2,
                        id2label={0: "negative", 1: "positive"}, label2id={"negative": 0, "positive": 1})
    model = BertForSequenceClassification(config).eval()
    with torch.no_grad():  # larger-than-init weights so pruning visibly changes outputs
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(4.0)
    return model


def prune_head(model, layer: int, head: int, masks: dict) -> None:
    import torch

    att = model.bert.encoder.layer[layer].attention
    rows = slice(head * HEAD_SIZE, (head + 1) * HEAD_SIZE)
    for name in ("query", "key", "value"):
        lin = getattr(att.self, name)
        key = f"bert.encoder.layer.{layer}.attention.self.{name}.weight"
        m = masks.setdefault(key, torch.ones_like(lin.weight, dtype=torch.bool))
        m[rows] = False
        with torch.no_grad():
            lin.weight[rows] = 0
            lin.bias[rows] = 0
    key = f"bert.encoder.layer.{layer}.attention.output.dense.weight"
    dense = att.output.dense
    m = masks.setdefault(key, torch.ones_like(dense.weight, dtype=torch.bool))
    m[:, rows] = False
    with torch.no_grad():
        dense.weight[:, rows] = 0


def prune_neurons(model, layer: int, neurons: list[int], masks: dict) -> None:
    import torch

    lay = model.bert.encoder.layer[layer]
    inter, out = lay.intermediate.dense, lay.output.dense
    k_in = f"bert.encoder.layer.{layer}.intermediate.dense.weight"
    k_out = f"bert.encoder.layer.{layer}.output.dense.weight"
    m_in = masks.setdefault(k_in, torch.ones_like(inter.weight, dtype=torch.bool))
    m_out = masks.setdefault(k_out, torch.ones_like(out.weight, dtype=torch.bool))
    idx = torch.tensor(neurons, dtype=torch.long)
    m_in[idx] = False
    m_out[:, idx] = False
    with torch.no_grad():
        inter.weight[idx] = 0
        inter.bias[idx] = 0
        out.weight[:, idx] = 0


def prune_magnitude(model, name: str, sparsity: float, masks: dict) -> None:
    import torch

    p = dict(model.named_parameters())[name]
    k = int(p.numel() * sparsity)
    thresh = p.detach().abs().flatten().kthvalue(max(k, 1)).values
    new = p.detach().abs() > thresh
    masks[name] = masks.get(name, torch.ones_like(new)) & new
    with torch.no_grad():
        p.mul_(masks[name])


def prune_2of4(model, name: str, masks: dict) -> None:
    import torch

    p = dict(model.named_parameters())[name]
    w = p.detach().reshape(-1, 4).abs()
    keep = torch.zeros_like(w, dtype=torch.bool)
    keep.scatter_(1, w.topk(2, dim=1).indices, True)
    keep = keep.reshape(p.shape)
    masks[name] = masks.get(name, torch.ones_like(keep)) & keep
    with torch.no_grad():
        p.mul_(masks[name])


def write_data(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", "dev"):
        lines = ["sentence\tlabel"] + [f"{s}\t{lab}" for s, lab in zip(SENTENCES, LABELS)]
        (folder / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return folder


def make_checkpoint(out: Path, *, heads: dict | None = None, neurons: dict | None = None,
                    magnitude: dict | None = None, nm: list[str] | None = None,
                    data_dir: Path | None = None, seed: int = 0, layers: int = LAYERS,
                    data_extra: dict | None = None, metrics: dict | None = None) -> Path:
    """Write a checkpoint: `heads` {layer: [head]}, `neurons` {layer: [idx]}, `magnitude` {param: s};
    `data_extra` adds recipe data keys (eval_split, eval_limit...), `metrics` goes into the state."""
    from edgeprune.checkpoint import PruningState, save_checkpoint
    from edgeprune.hashing import sha256_json

    tokenizer, vocab_size = make_tokenizer()
    model = make_model(vocab_size, seed, layers)
    masks: dict = {}
    for layer, hs in (heads or {}).items():
        for h in hs:
            prune_head(model, layer, h, masks)
    for layer, ns in (neurons or {}).items():
        prune_neurons(model, layer, ns, masks)
    for name, s in (magnitude or {}).items():
        prune_magnitude(model, name, s, masks)
    for name in nm or []:
        prune_2of4(model, name, masks)
    per_layer = {k: float(1 - v.float().mean()) for k, v in masks.items()}
    total = sum(v.numel() for v in masks.values()) or 1
    zeros = sum(int((~v).sum()) for v in masks.values())
    data_dir = data_dir or write_data(Path(out).parent / f"{Path(out).name}-data")
    recipe = {"model": "tiny-bert", "data": {"path": str(data_dir), "text_column": "sentence",
                                             "label_column": "label", "max_length": 32, **(data_extra or {})}}
    state = PruningState(
        recipe=recipe, recipe_sha256=sha256_json(recipe), global_sparsity=zeros / total, metrics=dict(metrics or {}),
        per_layer_sparsity=per_layer,
        heads_pruned={str(k): sorted(v) for k, v in (heads or {}).items()},
        neurons_pruned={str(k): sorted(v) for k, v in (neurons or {}).items()},
        nm=[{"n": 2, "m": 4, "params": list(nm)}] if nm else [],
        max_length=32, labels=["negative", "positive"], raw_labels=["0", "1"],
    )
    save_checkpoint(Path(out), model, tokenizer, masks, state)
    return Path(out)


def make_distilbert_checkpoint(out: Path, *, heads: dict | None = None, neurons: dict | None = None,
                               data_dir: Path | None = None, seed: int = 0) -> Path:
    """A tiny DistilBERT (dim 32, 2 layers, 4 heads, hidden_dim 37) checkpoint; `heads`/`neurons` are
    zeroed through the layout map (q/k/v rows + biases, out_lin columns; lin1 row + bias, lin2 column)."""
    import torch
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    from edgeprune.checkpoint import PruningState, save_checkpoint
    from edgeprune.hashing import sha256_json
    from edgeprune.layout import encoder_layout

    tokenizer, vocab_size = make_tokenizer()
    tokenizer.model_input_names = ["input_ids", "attention_mask"]  # DistilBERT takes no token types
    torch.manual_seed(seed)
    config = DistilBertConfig(vocab_size=vocab_size, dim=32, n_layers=2, n_heads=4, hidden_dim=37,
                              max_position_embeddings=64, num_labels=2,
                              id2label={0: "negative", 1: "positive"}, label2id={"negative": 0, "positive": 1})
    model = DistilBertForSequenceClassification(config).eval()
    modules = dict(model.named_modules())
    masks: dict = {}
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(4.0)
        layout = encoder_layout(model)
        for layer, hs in (heads or {}).items():
            lay = layout[layer]
            for h in hs:
                rows = slice(h * lay.head_dim, (h + 1) * lay.head_dim)
                for name in lay.head_rows:
                    m = masks.setdefault(f"{name}.weight", torch.ones_like(modules[name].weight, dtype=torch.bool))
                    m[rows] = False
                    modules[name].weight[rows] = 0
                    modules[name].bias[rows] = 0
                m = masks.setdefault(f"{lay.o}.weight", torch.ones_like(modules[lay.o].weight, dtype=torch.bool))
                m[:, rows] = False
                modules[lay.o].weight[:, rows] = 0
        for layer, ns in (neurons or {}).items():
            lay = layout[layer]
            idx = torch.tensor(ns, dtype=torch.long)
            m_in = masks.setdefault(f"{lay.ffn_in}.weight", torch.ones_like(modules[lay.ffn_in].weight, dtype=torch.bool))
            m_out = masks.setdefault(f"{lay.ffn_out}.weight",
                                     torch.ones_like(modules[lay.ffn_out].weight, dtype=torch.bool))
            m_in[idx] = False
            m_out[:, idx] = False
            modules[lay.ffn_in].weight[idx] = 0
            modules[lay.ffn_in].bias[idx] = 0
            modules[lay.ffn_out].weight[:, idx] = 0
    data_dir = data_dir or write_data(Path(out).parent / f"{Path(out).name}-data")
    recipe = {"model": "tiny-distilbert", "data": {"path": str(data_dir), "text_column": "sentence",
                                                   "label_column": "label", "max_length": 32}}
    state = PruningState(recipe=recipe, recipe_sha256=sha256_json(recipe),
                         heads_pruned={str(k): sorted(v) for k, v in (heads or {}).items()},
                         neurons_pruned={str(k): sorted(v) for k, v in (neurons or {}).items()},
                         max_length=32, labels=["negative", "positive"], raw_labels=["0", "1"])
    save_checkpoint(Path(out), model, tokenizer, masks, state)
    return Path(out)


# --- shared pytest fixtures (import them into a test module to use them) -------------------------

import pytest  # noqa: E402

STRUCTURED = {"heads": {0: [1, 3], 1: [0, 1, 2, 3]}, "neurons": {0: list(range(INTERMEDIATE)), 1: [0, 5, 9]}}


@pytest.fixture(scope="session")
def structured_ckpt(tmp_path_factory) -> Path:
    """Layer 0 keeps 2 heads and no neurons; layer 1 keeps no heads and 34 neurons; plus 2:4 and
    magnitude zeros elsewhere."""
    root = tmp_path_factory.mktemp("ckpt")
    return make_checkpoint(root / "structured", **STRUCTURED,
                           magnitude={"bert.encoder.layer.0.attention.self.key.weight": 0.5},
                           nm=["bert.encoder.layer.1.intermediate.dense.weight"])


@pytest.fixture(scope="session")
def dense_bundle(tmp_path_factory, structured_ckpt) -> Path:
    from edgeprune.convert import convert_checkpoint

    return convert_checkpoint(structured_ckpt, tmp_path_factory.mktemp("bundles") / "dense", progress=False)
