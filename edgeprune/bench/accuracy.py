"""Which eval set a bundle is scored on, and scoring through its runtime.

The eval data and the label mapping are those train used, read through `edgeprune.eval_data` (the one
helper convert uses too): the recipe recorded in the manifest (`source.recipe`; for older bundles, the
source checkpoint's pruning_state.json), its `data.eval_split` and `data.eval_limit`, and the manifest's
`raw_labels` (id -> label value as written in the data files). `--data DIR` overrides only the folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

from ..errors import DataError
from ..eval_data import EvalSet
from ..eval_data import load_eval_set as _load


def _source_state(manifest: dict[str, Any]):
    checkpoint = (manifest.get("source") or {}).get("checkpoint")
    if checkpoint and Path(checkpoint).is_dir():
        from ..checkpoint import read_pruning_state

        return read_pruning_state(Path(checkpoint))
    return None


def recorded_recipe(manifest: dict[str, Any]) -> dict[str, Any]:
    """The training recipe behind a bundle: in the manifest's source, else in its source checkpoint."""
    source = manifest.get("source") or {}
    if isinstance(source.get("recipe"), dict):
        return source["recipe"]
    state = _source_state(manifest)
    return state.recipe if state is not None else {}


def recorded_raw_labels(manifest: dict[str, Any]) -> list[str]:
    raw = manifest.get("raw_labels")
    if isinstance(raw, list) and raw:
        return [str(v) for v in raw]
    state = _source_state(manifest)
    return list(state.raw_labels) if state is not None else []


def load_eval_set(manifest: dict[str, Any], labels: Sequence[str] | None = None, data_dir: Path | None = None,
                  limit: int | None = None) -> EvalSet:
    """The bundle's eval set; `labels` (the bundle's label names), when given, must be one per raw label."""
    raw = recorded_raw_labels(manifest)
    if labels is not None and raw and len(labels) != len(raw):
        raise DataError(f"the bundle has {len(labels)} labels but its recorded raw label values are {raw}",
                        "re-run `edgeprune convert` on the checkpoint")
    return _load(recorded_recipe(manifest), raw, data_dir, limit)


def accuracy(predict_ids: Callable[[list[str]], Sequence[int]], texts: Sequence[str] | EvalSet,
             label_ids: Sequence[int] | int | None = None, batch_size: int = 32) -> float:
    """Share of examples whose predicted label id equals the gold one (`texts` may be an EvalSet)."""
    if isinstance(texts, EvalSet):
        if isinstance(label_ids, int):  # accuracy(predict_ids, eval_set, 32)
            batch_size, label_ids = label_ids, None
        texts, label_ids = texts.texts, texts.label_ids
    correct = 0
    for i in range(0, len(texts), batch_size):
        predicted = predict_ids(list(texts[i:i + batch_size]))
        correct += sum(int(p == g) for p, g in zip(predicted, label_ids[i:i + batch_size]))
    return correct / max(1, len(texts))
