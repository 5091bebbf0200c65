"""The report's PNGs (matplotlib, headless): latency distribution, accuracy against latency for the bundle
and its baselines, and each budgeted figure against its limit."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

PLOTS = ("latency.png", "accuracy_vs_latency.png", "budgets.png")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _not_measured(ax, why: str) -> None:
    ax.text(0.5, 0.5, f"not measured:\n{why}", ha="center", va="center", wrap=True, transform=ax.transAxes)
    ax.set_axis_off()


def plot_latency(ax, measurements: Sequence[Any], report: dict[str, Any]) -> None:
    timed = [m for m in measurements if m.latency is not None]
    if not timed:
        _not_measured(ax, report["metrics"]["latency_ms"].get("reason", ""))
        return
    for m in timed:
        ax.hist(m.latency.samples_ms, bins=50, alpha=0.5, label=f"{m.name} (p95 {m.latency.p95:.3g} ms)")
    main = timed[0]
    for q, style in (("p50", ":"), ("p95", "--"), ("p99", "-.")):
        ax.axvline(getattr(main.latency, q), color="black", linestyle=style, linewidth=1, label=f"bundle {q}")
    ax.set_xlabel("latency per batch (ms)")
    ax.set_ylabel("runs")
    ax.set_title(f"latency, batch {main.latency.batch_size}, sequence {main.latency.sequence_length}")
    ax.legend(fontsize="small")


def plot_accuracy_vs_latency(ax, measurements: Sequence[Any], report: dict[str, Any]) -> None:
    points = [m for m in measurements if m.latency is not None and m.accuracy is not None]
    if not points:
        _not_measured(ax, report["metrics"]["latency_ms"].get("reason", ""))
        return
    for m in points:
        ax.scatter([m.latency.p50], [m.accuracy], s=60, marker="*" if m.name == "bundle" else "o")
        ax.annotate(m.name, (m.latency.p50, m.accuracy), textcoords="offset points", xytext=(5, 5))
    dense = report["metrics"]["dense_accuracy"]
    if dense["measured"]:
        ax.axhline(dense["value"], color="grey", linestyle="--", linewidth=1, label="dense reference")
        ax.legend(fontsize="small")
    ax.set_xlabel("latency p50 (ms)")
    ax.set_ylabel("accuracy")
    ax.set_title("accuracy against latency")


def plot_budgets(ax, report: dict[str, Any]) -> None:
    from ..gate import evaluate
    from ..targets import TargetProfile

    verdict = evaluate(report, TargetProfile.from_dict(report["target"]["profile"], source="report"))
    names, ratios, colors = [], [], []
    for c in verdict.checks:
        names.append(f"{c.budget}\n{c.reason}")
        if c.status in ("unset", "unmeasured") or c.value is None:
            ratios.append(0.0)
            colors.append("lightgrey")
        else:
            ratios.append(c.value / c.limit if c.limit else 0.0)
            colors.append("tab:green" if c.passed else "tab:red")
    ax.barh(names, ratios, color=colors)
    ax.axvline(1.0, color="black", linewidth=1)
    ax.set_xlabel("measured / limit (max budgets pass left of 1, min budgets right of 1; grey: no figure or limit)")
    ax.set_title(f"budgets of {report['target']['name']}")
    ax.tick_params(axis="y", labelsize="small")


def write_plots(folder: Path, report: dict[str, Any], measurements: Sequence[Any]) -> list[Path]:
    plt = _pyplot()
    folder = Path(folder)
    written = []
    for name, draw, size in (("latency.png", lambda ax: plot_latency(ax, measurements, report), (8, 5)),
                             ("accuracy_vs_latency.png",
                              lambda ax: plot_accuracy_vs_latency(ax, measurements, report), (7, 5)),
                             ("budgets.png", lambda ax: plot_budgets(ax, report), (10, 5))):
        fig, ax = plt.subplots(figsize=size)
        try:
            draw(ax)
            fig.tight_layout()
            fig.savefig(folder / name, dpi=90)
        finally:
            plt.close(fig)
        written.append(folder / name)
    return written
