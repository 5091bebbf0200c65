"""Torch-free reading of local text-classification files (train/dev as TSV, CSV or JSONL).

Shared by training (through `edgeprune.data`) and by bench, which scores bundles with the kiosk runtime
and must not need torch or `datasets` to read its eval sentences.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from .errors import DataError

EXTENSIONS = (".tsv", ".csv", ".jsonl")
# names a split may go by on disk, in order of preference
SPLIT_ALIASES = {
    "train": ("train",),
    "dev": ("dev", "validation", "valid", "val", "test"),
}


@dataclass(frozen=True)
class Examples:
    texts: list[str]
    labels: list[str]  # raw label values as strings; mapping to ids is the caller's business
    source: Path


def find_split(folder: Path, split: str) -> Path:
    """The file holding `split` in `folder`, e.g. dev.tsv or validation.jsonl."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"data folder {folder} does not exist",
                        "set data.path to a folder with train/dev files, or to a hub dataset id")
    for stem in SPLIT_ALIASES.get(split, (split,)):
        for ext in EXTENSIONS:
            candidate = folder / f"{stem}{ext}"
            if candidate.is_file():
                return candidate
    wanted = ", ".join(f"{s}{{{','.join(EXTENSIONS)}}}" for s in SPLIT_ALIASES.get(split, (split,)))
    raise DataError(f"no {split} file in {folder}", f"add one of: {wanted}")


def read_examples(file: Path, text_column: str, label_column: str, limit: int | None = None) -> Examples:
    file = Path(file)
    rows = list(_rows(file))
    if not rows:
        raise DataError(f"{file} has no rows", "point data.path at a folder with non-empty train/dev files")
    for column in (text_column, label_column):
        if column not in rows[0]:
            raise DataError(
                f"{file} has no column {column!r} (columns: {sorted(rows[0])})",
                f"set data.{'text' if column == text_column else 'label'}_column to one of them",
            )
    if limit is not None:
        rows = rows[:limit]
    texts, labels = [], []
    for i, row in enumerate(rows):
        text, label = row.get(text_column), row.get(label_column)
        if text is None or label is None or str(label).strip() == "":
            raise DataError(f"{file} row {i + 1} lacks {text_column!r} or {label_column!r}",
                            "fix or remove that row")
        texts.append(str(text))
        labels.append(str(label).strip())
    return Examples(texts, labels, file)


def _rows(file: Path):
    suffix = file.suffix.lower()
    if suffix == ".jsonl":
        with open(file, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    try:
                        yield json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise DataError(f"{file} line {n} is not JSON ({exc.msg})", "fix that line") from exc
        return
    delimiter = "\t" if suffix == ".tsv" else ","
    with open(file, encoding="utf-8", newline="") as f:
        # SST-2's TSV has quotes inside sentences; only CSV uses quoting
        reader = csv.DictReader(f, delimiter=delimiter,
                                quoting=csv.QUOTE_NONE if suffix == ".tsv" else csv.QUOTE_MINIMAL)
        yield from reader
