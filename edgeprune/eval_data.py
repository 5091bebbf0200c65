"""The eval (and calibration) sentences of a trained model, with gold label ids: one helper for convert,
bench and `run`, so all of them score on the split the recipe names and map labels the way train did.

Torch-free (bench scores bundles with the kiosk runtime). Reads local files through `data_files`:

- the folder is `--data DIR` when given, else the recipe's `data.path` (it must be a local folder);
- the split is the recipe's `data.eval_split` (calibration: `data.train_split`), the limit its
  `data.eval_limit` unless the caller passes one;
- a raw label value ("0", "positive") maps to its id through `raw_labels`, the id -> raw value list train
  recorded in pruning_state.json (and convert copies into the manifest). A value train never saw is a
  DataError naming it: accuracy against a guessed mapping would be a made-up number.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from .data_files import find_split, read_examples
from .errors import DataError

_NO_RAW = ("re-run `edgeprune train` with this edgeprune (it records the label values), "
           "or pass a checkpoint that has them")


@dataclass(frozen=True)
class EvalSet:
    texts: list[str]
    label_ids: list[int]
    source: Path
    text_column: str
    label_column: str
    split: str

    def to_dict(self) -> dict[str, Any]:
        return {"file": str(self.source), "split": self.split, "examples": len(self.texts),
                "text_column": self.text_column, "label_column": self.label_column}


def data_section(recipe: dict[str, Any] | None) -> dict[str, Any]:
    data = (recipe or {}).get("data")
    return dict(data) if isinstance(data, dict) else {}


def data_folder(recipe: dict[str, Any] | None, data_dir: Path | None = None) -> Path:
    """The local folder to read: `data_dir`, else the recipe's data.path; DataError when neither is one."""
    if data_dir is not None:
        folder = Path(data_dir)
        if not folder.is_dir():
            raise DataError(f"data folder {folder} does not exist", "pass --data DIR with the eval split file")
        return folder
    path = data_section(recipe).get("path")
    if not path:
        raise DataError("no eval data is recorded (the recipe has no data.path)", "pass --data DIR")
    if not Path(path).is_dir():
        raise DataError(f"the recipe's data {path!r} is not a local folder here",
                        "pass --data DIR with the eval split file (tsv, csv or jsonl)")
    return Path(path)


def label_ids(raw: Sequence[str], raw_labels: Sequence[str], where: Path | str) -> list[int]:
    """Raw label values -> ids through train's `raw_labels`; DataError naming a value it never saw."""
    if not raw_labels:
        raise DataError("the checkpoint records no raw label values (raw_labels)", _NO_RAW)
    index = {str(value): i for i, value in enumerate(raw_labels)}
    unseen = sorted({v for v in raw if v not in index})
    if unseen:
        raise DataError(f"{where}: label {unseen[0]!r} is not one the model was trained on "
                        f"{list(raw_labels)}", "check data.label_column, or pass --data with the model's labels")
    return [index[v] for v in raw]


def load_eval_set(recipe: dict[str, Any] | None, raw_labels: Sequence[str], data_dir: Path | None = None,
                  limit: int | None = None) -> EvalSet:
    """The recipe's eval split (from `data_dir` when given) with gold ids; `limit` overrides data.eval_limit."""
    data = data_section(recipe)
    folder = data_folder(recipe, data_dir)
    split = data.get("eval_split") or "dev"
    text_column, label_column = data.get("text_column", "sentence"), data.get("label_column", "label")
    limit = limit if limit is not None else data.get("eval_limit")
    file = find_split(folder, split)
    examples = read_examples(file, text_column, label_column, limit=limit)
    return EvalSet(examples.texts, label_ids(examples.labels, raw_labels, file), file, text_column,
                   label_column, split)


def calibration_texts(recipe: dict[str, Any] | None, data_dir: Path | None, n: int) -> list[str] | None:
    """Up to `n` sentences of the recipe's training split (int8-static calibration); None when absent."""
    data = data_section(recipe)
    try:
        file = find_split(data_folder(recipe, data_dir), data.get("train_split") or "train")
        return read_examples(file, data.get("text_column", "sentence"), data.get("label_column", "label"), n).texts
    except DataError:
        return None


def split_files(recipe: dict[str, Any] | None) -> dict[str, Path]:
    """{split: file} of the recipe's local train and eval splits that exist (for up-to-date checks)."""
    data = data_section(recipe)
    out = {}
    try:
        folder = data_folder(recipe)
    except DataError:
        return out
    for key, default in (("train_split", "train"), ("eval_split", "dev")):
        split = data.get(key) or default
        try:
            out[split] = find_split(folder, split)
        except DataError:
            continue
    return out
