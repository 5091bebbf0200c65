"""Training data: a local folder or a hub dataset, mapped to label ids and tokenized for the Trainer.

Raw examples are read first (torch-free, see `data_files`) so the label set is known before a model is
built; padding is left to the collator (dynamic, to the longest sentence in a batch).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .data_files import Examples, find_split, read_examples
from .errors import DataError
from .recipe import DataConfig


@dataclass(frozen=True)
class LabeledData:
    train: Examples
    eval: Examples
    raw_labels: list[str]    # id -> label value as found in the data
    labels: list[str]        # id -> label name (recipe's data.label_names, else the raw value)

    def ids(self, examples: Examples) -> list[int]:
        index = {raw: i for i, raw in enumerate(self.raw_labels)}
        return [index[v] for v in examples.labels]


def is_local(cfg: DataConfig) -> bool:
    return Path(cfg.path).is_dir() or cfg.path.startswith((".", "/", "~"))


def load_examples(cfg: DataConfig, seed: int = 42) -> LabeledData:
    if is_local(cfg):
        train = read_examples(find_split(Path(cfg.path), cfg.train_split), cfg.text_column, cfg.label_column)
        evaluation = read_examples(find_split(Path(cfg.path), cfg.eval_split), cfg.text_column, cfg.label_column,
                                   limit=cfg.eval_limit)
    else:
        train, evaluation = _load_hub(cfg)
    if cfg.train_limit is not None:
        train = shuffled_head(train, cfg.train_limit, seed)
    raw = _sorted_labels(set(train.labels))
    if len(raw) < 2:
        raise DataError(f"the label column {cfg.label_column!r} of {train.source} has one class ({raw[0]!r})",
                        "a classifier needs at least two classes: fix data.label_column or the data")
    unseen = sorted(set(evaluation.labels) - set(raw))
    if unseen:
        raise DataError(f"eval labels {unseen[:5]} never occur in the training data",
                        "check data.label_column, or raise data.train_limit so every class is seen")
    names = raw
    if cfg.label_names is not None:
        if len(cfg.label_names) != len(raw):
            raise DataError(f"data.label_names has {len(cfg.label_names)} names for {len(raw)} classes {raw}",
                            "give one name per class, in sorted label order")
        names = list(cfg.label_names)
    return LabeledData(train=train, eval=evaluation, raw_labels=raw, labels=names)


def _sorted_labels(values: set[str]) -> list[str]:
    if all(v.lstrip("-").isdigit() for v in values):
        return sorted(values, key=int)
    return sorted(values)


def shuffled_head(ex: Examples, n: int, seed: int) -> Examples:
    import random

    order = list(range(len(ex.texts)))
    random.Random(seed).shuffle(order)
    order = order[:n]
    return Examples([ex.texts[i] for i in order], [ex.labels[i] for i in order], ex.source)


def _load_hub(cfg: DataConfig) -> tuple[Examples, Examples]:
    """A hub dataset `owner/name[:subset]` through `datasets` (needs the network or a warm cache)."""
    try:
        import datasets
    except ImportError as exc:  # pragma: no cover - a train extra dependency
        raise DataError("hub datasets need the 'datasets' package", "pip install 'edgeprune[train]'") from exc
    name, _, subset = cfg.path.partition(":")
    try:
        ds = datasets.load_dataset(name, subset or None)
    except Exception as exc:  # datasets raises many types for offline / unknown ids
        raise DataError(f"cannot load hub dataset {cfg.path!r} ({type(exc).__name__}: {str(exc)[:120]})",
                        "check the id and your network, or set data.path to a local folder "
                        "with train/dev files") from exc
    splits = {"dev": ("dev", "validation", "valid", "test")}

    def pick(split: str):
        for candidate in splits.get(split, (split,)):
            if candidate in ds:
                return ds[candidate]
        raise DataError(f"hub dataset {cfg.path!r} has no {split} split (has {sorted(ds)})",
                        f"set data.{'train' if split == cfg.train_split else 'eval'}_split to one of them")

    out = []
    for split, limit in ((cfg.train_split, None), (cfg.eval_split, cfg.eval_limit)):
        part = pick(split)
        for column in (cfg.text_column, cfg.label_column):
            if column not in part.column_names:
                raise DataError(f"hub dataset {cfg.path!r} has no column {column!r} ({part.column_names})",
                                "set data.text_column / data.label_column to existing columns")
        if limit is not None:
            part = part.select(range(min(limit, len(part))))
        labels = [str(v) for v in part[cfg.label_column]]
        out.append(Examples([str(t) for t in part[cfg.text_column]], labels, Path(cfg.path)))
    return out[0], out[1]


def tokenize(examples: Examples, label_ids: list[int], tokenizer, max_length: int):
    """A `datasets.Dataset` of input ids and labels, unpadded (the collator pads per batch)."""
    import datasets

    enc = tokenizer(examples.texts, truncation=True, max_length=max_length)
    columns = {k: v for k, v in enc.items()}
    columns["labels"] = label_ids
    return datasets.Dataset.from_dict(columns)
