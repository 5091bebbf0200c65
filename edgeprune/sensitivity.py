"""Per-layer sensitivity: prune each selected layer alone at several sparsities and measure the drop.

Layers differ a lot in how much pruning they tolerate; a global threshold ignores that. This analysis
shows it, and turns it into `sparsity_overrides` (the highest sparsity per layer whose accuracy drop
stays within a tolerance) that a magnitude modifier can use directly.
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from . import masks as M
from .evaluate import torch_accuracy


@dataclass(frozen=True)
class SensitivityRow:
    layer: str
    sparsity: float
    accuracy: float
    drop: float


def layer_sensitivity(model, tokenizer, texts, label_ids, layers: list[str], sparsities: list[float],
                      max_length: int, progress=None) -> tuple[float, list[SensitivityRow]]:
    """(baseline accuracy, one row per layer x sparsity); the model is restored after each trial."""
    params = dict(model.named_parameters())
    baseline = torch_accuracy(model, tokenizer, texts, label_ids, max_length)
    rows = []
    for layer in layers:
        weight = params[f"{layer}.weight"]
        original = weight.detach().clone()
        alive = original != 0
        for s in sparsities:
            with torch.no_grad():
                weight.mul_(M.magnitude_mask(original, s, alive).to(weight.dtype))
            acc = torch_accuracy(model, tokenizer, texts, label_ids, max_length)
            rows.append(SensitivityRow(layer, s, acc, round(baseline - acc, 6)))
            with torch.no_grad():
                weight.copy_(original)
            if progress is not None:
                progress.update(1)
    return baseline, rows


def overrides_from(rows: list[SensitivityRow], tolerance: float) -> dict[str, float]:
    """The highest tested sparsity per layer whose drop is within `tolerance` (layers with none: omitted)."""
    best: dict[str, float] = {}
    for row in rows:
        if row.drop <= tolerance and row.sparsity > best.get(row.layer, 0.0):
            best[row.layer] = row.sparsity
    return best


def write_report(folder: Path, baseline: float, rows: list[SensitivityRow], tolerance: float,
                 source: str) -> dict:
    import yaml

    overrides = overrides_from(rows, tolerance)
    report = {"source": source, "baseline_accuracy": baseline, "tolerance": tolerance,
              "rows": [asdict(r) for r in rows], "sparsity_overrides": overrides}
    (folder / "sensitivity.json").write_text(json.dumps(report, indent=2))
    with open(folder / "sensitivity.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["layer", "sparsity", "accuracy", "drop"])
        for r in rows:
            writer.writerow([r.layer, r.sparsity, f"{r.accuracy:.6f}", f"{r.drop:.6f}"])
    (folder / "overrides.yaml").write_text(
        "# paste under a magnitude modifier of the recipe (highest sparsity per layer with drop <= "
        f"{tolerance})\n" + yaml.safe_dump({"sparsity_overrides": overrides}, sort_keys=True))
    _plot(folder / "sensitivity.png", rows, baseline)
    return report


def _plot(path: Path, rows: list[SensitivityRow], baseline: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    layers = sorted({r.layer for r in rows}, key=lambda name: [int(t) if t.isdigit() else t for t in name.split(".")])
    sparsities = sorted({r.sparsity for r in rows})
    grid = np.zeros((len(layers), len(sparsities)))
    for r in rows:
        grid[layers.index(r.layer), sparsities.index(r.sparsity)] = r.drop * 100
    fig, ax = plt.subplots(figsize=(2 + 1.1 * len(sparsities), 1.5 + 0.28 * len(layers)))
    im = ax.imshow(grid, aspect="auto", cmap="Reds", vmin=0, vmax=max(1.0, float(grid.max())))
    ax.set_xticks(range(len(sparsities)), [f"{s:.0%}" for s in sparsities])
    ax.set_yticks(range(len(layers)), [name.split("encoder.")[-1] for name in layers], fontsize=7)
    for i in range(len(layers)):
        for j in range(len(sparsities)):
            ax.text(j, i, f"{grid[i, j]:.1f}", ha="center", va="center", fontsize=6)
    ax.set_xlabel("sparsity of this layer alone")
    ax.set_title(f"accuracy drop (points) vs dense {baseline:.3f}")
    fig.colorbar(im, ax=ax, label="drop, points")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
