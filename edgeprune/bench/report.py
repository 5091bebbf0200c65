"""The bench report: `report.json` (read by gate; format below), `report.md` (the human table) and the
compact entry recorded in the bundle's manifest.

report.json:
  schema_version, edgeprune_version, created (UTC ISO time), seconds
  target: {name, sha256, source, profile}     the profile as measured (gate refuses a stale report)
  host: fingerprint + host_id                  CPU model, ISA flags, cores, ORT version and providers, GPU
  host_match: {matches, honest, reasons, providers, runtime}
  bundle: {path, sha256, format, quantization}
  data: {file, examples, text_column, label_column}
  metrics: each figure {measured: true/false, reason when false, value or its parts}:
    latency_ms {p50, p95, p99, mean, runs, warmup, batch_size, sequence_length}, throughput_per_s,
    peak_rss_mb, bundle_mb, accuracy (the bundle), checkpoint_accuracy (PyTorch eager on the pruned
    source checkpoint), conversion_drop (checkpoint - bundle), dense_accuracy {source} (a dense
    reference: --dense-checkpoint, or the dense teacher's accuracy recorded by train; never the pruned
    model), accuracy_drop (dense - bundle: pruning + conversion, what max_accuracy_drop limits)
  baselines: {name: {description, accuracy, latency_ms, throughput_per_s, peak_rss_mb, bundle_mb}}
  ratios: {baseline: {speedup_p50, speedup_p95, throughput_ratio, rss_ratio, size_ratio, accuracy_delta}}
  notes: [...]
Sizes and memory are MiB, written "MB".
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .. import __version__
from ..gate import REPORT_FILE, REPORT_SCHEMA_VERSION


def figure(value: Any = None, reason: str | None = None, **parts: Any) -> dict[str, Any]:
    """One report figure: measured with its value (or parts), or not measured with the reason."""
    if reason is not None:
        return {"measured": False, "value": None, "reason": reason}
    return {"measured": True, **({"value": value} if value is not None else {}), **parts}


def _latency_figures(m, reason: str | None) -> tuple[dict, dict]:
    if m.latency is None:
        return figure(reason=reason or "not measured"), figure(reason=reason or "not measured")
    return figure(**m.latency.to_dict()), figure(m.latency.throughput_per_s)


def _ratios(bundle_m, baselines) -> dict[str, dict[str, float | None]]:
    def ratio(a, b):
        return a / b if a is not None and b not in (None, 0) else None

    out = {}
    for b in baselines:
        out[b.name] = {
            "speedup_p50": ratio(b.latency and b.latency.p50, bundle_m.latency and bundle_m.latency.p50),
            "speedup_p95": ratio(b.latency and b.latency.p95, bundle_m.latency and bundle_m.latency.p95),
            "throughput_ratio": ratio(bundle_m.latency and bundle_m.latency.throughput_per_s,
                                      b.latency and b.latency.throughput_per_s),
            "rss_ratio": ratio(bundle_m.memory and bundle_m.memory.peak_rss_mb, b.memory and b.memory.peak_rss_mb),
            "size_ratio": ratio(bundle_m.size_mb, b.size_mb),
            "accuracy_delta": (bundle_m.accuracy - b.accuracy
                               if bundle_m.accuracy is not None and b.accuracy is not None else None),
        }
    return out


def _baseline_entry(m) -> dict[str, Any]:
    return {
        "description": m.description,
        "accuracy": m.accuracy,
        "latency_ms": m.latency.to_dict() if m.latency else None,
        "throughput_per_s": m.latency.throughput_per_s if m.latency else None,
        "peak_rss_mb": m.memory.peak_rss_mb if m.memory else None,
        "bundle_mb": m.size_mb,
    }


def build_report(*, profile, host, host_match, bundle, bundle_sha256, eval_set, measurements, dense,
                 checkpoint_accuracy, checkpoint, no_checkpoint_why, settings, seconds, notes=()) -> dict[str, Any]:
    """`dense` is (dense reference accuracy, its source) or (None, why there is none)."""
    main, baselines = measurements[0], measurements[1:]
    latency, throughput = _latency_figures(main, host_match.reason_for("latency"))
    if main.memory is not None:
        rss = figure(main.memory.peak_rss_mb, torch_imported=main.memory.torch_imported)
    else:
        rss = figure(reason=host_match.reason_for("memory") or "not measured")
    accuracy = figure(main.accuracy, examples=len(eval_set.texts), batch_size=profile.workload.batch_size)
    dense_value, dense_source = dense
    dense = (figure(dense_value, source=dense_source) if dense_value is not None
             else figure(reason=dense_source))
    drop = (figure(dense_value - main.accuracy) if dense_value is not None
            else figure(reason=dense_source))
    if checkpoint_accuracy is not None:
        ckpt_figure = figure(checkpoint_accuracy, source=f"PyTorch eager on the pruned checkpoint {checkpoint}")
        conversion = figure(checkpoint_accuracy - main.accuracy)
    else:
        ckpt_figure = figure(reason=no_checkpoint_why or "the source checkpoint is not at hand")
        conversion = figure(reason=no_checkpoint_why or "the source checkpoint is not at hand")
    notes = list(host_match.reasons) + list(notes)
    if checkpoint is None:
        notes.append(f"no baselines: {no_checkpoint_why}")
    elif not settings.baselines:
        notes.append("baselines skipped (--no-baselines); speed and memory claims have no reference")
    if main.memory is not None and main.memory.torch_imported:
        notes.append("the runtime imported torch while loading the bundle; the kiosk runtime should not")
    manifest = bundle.manifest
    return {
        "schema_version": REPORT_SCHEMA_VERSION,
        "edgeprune_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(seconds, 2),
        "target": {"name": profile.name, "sha256": profile.sha256(), "source": profile.source,
                   "profile": profile.to_dict()},
        "host": host.fingerprint() | {"host_id": host.host_id},
        "host_match": host_match.to_dict(),
        "bundle": {"path": str(Path(bundle.path).resolve()), "sha256": bundle_sha256,
                   "format": manifest.get("format"), "quantization": manifest.get("quantization"),
                   "target": manifest.get("target")},
        "data": eval_set.to_dict(),
        "metrics": {
            "latency_ms": latency,
            "throughput_per_s": throughput,
            "peak_rss_mb": rss,
            "bundle_mb": figure(main.size_mb),
            "accuracy": accuracy,
            "checkpoint_accuracy": ckpt_figure,
            "conversion_drop": conversion,
            "dense_accuracy": dense,
            "accuracy_drop": drop,
        },
        "baselines": {b.name: _baseline_entry(b) for b in baselines},
        "ratios": _ratios(main, baselines),
        "notes": notes,
    }


def manifest_entry(report: dict[str, Any]) -> dict[str, Any]:
    """What the bundle keeps of a bench: when, where, and the figures (with their measured flags)."""
    return {"created": report["created"], "target_sha256": report["target"]["sha256"],
            "host": report["host"], "metrics": report["metrics"], "ratios": report["ratios"]}


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def format_table(report: dict[str, Any]) -> str:
    """The human summary: the bundle's figures, the baselines beside it, and the notes."""
    m = report["metrics"]
    lines = [f"# bench: {report['target']['name']} on {report['host']['host_id']}", "",
             f"bundle `{report['bundle']['sha256'][:16]}` ({report['bundle']['path']}), "
             f"{report['data']['examples']} eval examples from {report['data']['file']}", "",
             "| figure | value | measured |", "|---|---|---|"]

    def row(name: str, entry: dict[str, Any], value: Any) -> None:
        lines.append(f"| {name} | {_fmt(value)} | {'yes' if entry['measured'] else 'no: ' + entry['reason']} |")

    lat = m["latency_ms"]
    for q in ("p50", "p95", "p99"):
        row(f"latency {q} (ms)", lat, lat.get(q))
    row("throughput (/s)", m["throughput_per_s"], m["throughput_per_s"].get("value"))
    row("peak RSS (MB)", m["peak_rss_mb"], m["peak_rss_mb"].get("value"))
    row("bundle (MB)", m["bundle_mb"], m["bundle_mb"].get("value"))
    row("accuracy", m["accuracy"], m["accuracy"].get("value"))
    if "checkpoint_accuracy" in m:
        row("checkpoint accuracy (pruned, PyTorch)", m["checkpoint_accuracy"], m["checkpoint_accuracy"].get("value"))
        row("conversion drop", m["conversion_drop"], m["conversion_drop"].get("value"))
    row("dense accuracy", m["dense_accuracy"], m["dense_accuracy"].get("value"))
    row("accuracy drop", m["accuracy_drop"], m["accuracy_drop"].get("value"))
    if report["baselines"]:
        lines += ["", "| runner | accuracy | p50 ms | p95 ms | throughput /s | peak RSS MB | MB | "
                      "speedup p50 | RSS ratio | size ratio |", "|---|---|---|---|---|---|---|---|---|---|"]
        lines.append(f"| bundle | {_fmt(m['accuracy'].get('value'))} | {_fmt(lat.get('p50'))} | "
                     f"{_fmt(lat.get('p95'))} | {_fmt(m['throughput_per_s'].get('value'))} | "
                     f"{_fmt(m['peak_rss_mb'].get('value'))} | {_fmt(m['bundle_mb'].get('value'))} | 1 | 1 | 1 |")
        for name, b in report["baselines"].items():
            r, bl = report["ratios"][name], b["latency_ms"] or {}
            lines.append(f"| {name} | {_fmt(b['accuracy'])} | {_fmt(bl.get('p50'))} | {_fmt(bl.get('p95'))} | "
                         f"{_fmt(b['throughput_per_s'])} | {_fmt(b['peak_rss_mb'])} | {_fmt(b['bundle_mb'])} | "
                         f"{_fmt(r['speedup_p50'], 3)} | {_fmt(r['rss_ratio'], 3)} | {_fmt(r['size_ratio'], 3)} |")
        lines.append("")
        lines.append("speedup = baseline latency / bundle latency; RSS and size ratios = bundle / baseline.")
    if report["notes"]:
        lines += ["", "notes:"] + [f"- {n}" for n in report["notes"]]
    return "\n".join(lines) + "\n"


def write_report(folder: Path, report: dict[str, Any]) -> None:
    folder = Path(folder)
    (folder / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (folder / "report.md").write_text(format_table(report), encoding="utf-8")
