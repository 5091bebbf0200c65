"""Accuracy on the eval split of a local data folder, scored the same way for the bundle and its baselines.

The eval data defaults to the recipe recorded in the bundle's manifest (`source.recipe.data`), so a
bundle is scored on the data its model was trained for; `--data DIR` overrides the folder. Raw label
values map to the bundle's label ids by name ("positive") or, failing that, by index ("1").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from ..data_files import find_split, read_examples
from ..errors import DataError


@dataclass(frozen=True)
class EvalSet:
    texts: list[str]
    label_ids: list[int]
    source: Path
    text_column: str
    label_column: str

    def to_dict(self) -> dict[str, Any]:
        return {"file": str(self.source), "examples": len(self.texts), "text_column": self.text_column,
                "label_column": self.label_column}


def recorded_recipe(manifest: dict[str, Any]) -> dict[str, Any]:
    """The training recipe behind a bundle: in the manifest's source, or in its source checkpoint's
    pruning_state.json when the manifest only records the checkpoint."""
    source = manifest.get("source") or {}
    if isinstance(source.get("recipe"), dict):
        return source["recipe"]
    checkpoint = source.get("checkpoint")
    if checkpoint and Path(checkpoint).is_dir():
        from ..checkpoint import read_pruning_state

        return read_pruning_state(Path(checkpoint)).recipe
    return {}


def data_spec(manifest: dict[str, Any], data_dir: Path | None) -> tuple[Path, str, str]:
    """(folder, text column, label column): the recipe's data unless `data_dir` overrides the folder."""
    data = recorded_recipe(manifest).get("data") or {}
    text_column = data.get("text_column", "sentence")
    label_column = data.get("label_column", "label")
    if data_dir is not None:
        return Path(data_dir), text_column, label_column
    path = data.get("path")
    if not path:
        raise DataError("no eval data is recorded for this bundle (no recipe data.path in its manifest or "
                        "source checkpoint)",
                        "pass --data DIR with a dev file")
    if not Path(path).is_dir():
        raise DataError(f"the recipe's data {path!r} is not a local folder here",
                        "bench reads local files: pass --data DIR with a dev.tsv/csv/jsonl")
    return Path(path), text_column, label_column


def label_ids(raw: Sequence[str], labels: Sequence[str], where: Path) -> list[int]:
    by_name = {str(name): i for i, name in enumerate(labels)}
    out = []
    for value in raw:
        if value in by_name:
            out.append(by_name[value])
            continue
        try:
            index = int(float(value))
        except ValueError:
            index = -1
        if not 0 <= index < len(labels):
            raise DataError(f"{where}: label {value!r} is neither a label of the bundle {list(labels)} nor an "
                            f"index below {len(labels)}", "pass --data with the model's labels")
        out.append(index)
    return out


def load_eval_set(manifest: dict[str, Any], labels: Sequence[str], data_dir: Path | None = None,
                  limit: int | None = None) -> EvalSet:
    folder, text_column, label_column = data_spec(manifest, data_dir)
    file = find_split(folder, "dev")
    examples = read_examples(file, text_column, label_column, limit=limit)
    return EvalSet(examples.texts, label_ids(examples.labels, labels, file), file, text_column, label_column)


def accuracy(predict_ids: Callable[[list[str]], Sequence[int]], eval_set: EvalSet, batch_size: int = 32) -> float:
    """Share of eval examples whose predicted label id equals the gold one."""
    correct = 0
    for i in range(0, len(eval_set.texts), batch_size):
        predicted = predict_ids(eval_set.texts[i:i + batch_size])
        correct += sum(int(p == g) for p, g in zip(predicted, eval_set.label_ids[i:i + batch_size]))
    return correct / len(eval_set.texts)
