"""`benchmark`: measure a bundle on this host for one target, beside its baselines, and write the report.

Order of work: resolve the target and judge this host against it (a GPU target without a CUDA device
stops here, exit 2); load and verify the bundle with the torch-free runtime; read the eval set; build
the baselines when the source checkpoint is at hand; then for the bundle and each baseline measure
accuracy always, and latency and peak memory only when this host measures them honestly for the target.
The report folder is written atomically; the figures are then recorded in the bundle's manifest under
`measured[target][host_id]` (manifest.json is outside the hashed file table, so the bundle's identity
does not change).
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..atomic import atomic_dir, atomic_write_text, check_output_free
from ..host import HostInfo, detect_host, match, runtime_kind_for
from ..targets import TargetProfile, resolve_target
from .accuracy import EvalSet, accuracy, load_eval_set
from .baselines import build_baselines, source_checkpoint
from .latency import LatencyResult, make_batches, measure_latency
from .memory import MemoryResult, measure_peak_rss
from .runners import Runner, bundle_runner

MEMORY_PROBE_SENTENCES = 64


@dataclass
class Measurement:
    """What was measured for one runner; None = not measured (see the report for why)."""

    name: str
    description: str
    accuracy: float | None = None
    latency: LatencyResult | None = None
    memory: MemoryResult | None = None
    size_mb: float | None = None


@dataclass
class BenchSettings:
    runs: int = 200
    warmup: int = 20
    eval_limit: int | None = None
    baselines: bool = True
    plots: bool = True
    extra_files: dict[str, str] = field(default_factory=dict)  # name -> text, written into the report folder


def _measure(runner: Runner, profile: TargetProfile, eval_set: EvalSet, settings: BenchSettings,
             honest: dict[str, bool], providers: list[str], max_length: int) -> Measurement:
    m = Measurement(runner.name, runner.description, size_mb=runner.size_mb)
    m.accuracy = accuracy(runner.predict_ids, eval_set, batch_size=32)
    workload = profile.workload
    if honest["latency"]:
        batches, seq = make_batches(runner.encode, eval_set.texts, workload.batch_size, workload.sequence_length,
                                    max_length, runner.pad_id)
        m.latency = measure_latency(runner.run, batches, seq, warmup=settings.warmup, min_runs=settings.runs,
                                    progress=f"latency {runner.name}")
    if honest["memory"]:
        m.memory = measure_peak_rss(runner.memory_kind, runner.memory_path,
                                    eval_set.texts[:MEMORY_PROBE_SENTENCES], threads=profile.threads,
                                    providers=providers, batch_size=workload.batch_size)
    return m


def benchmark(bundle_dir: Path, target: str | TargetProfile, out_dir: Path, *, data_dir: Path | None = None,
              checkpoint_dir: Path | None = None, overwrite: bool = False, settings: BenchSettings | None = None,
              host: HostInfo | None = None) -> dict[str, Any]:
    from ..runtime import Bundle, bundle_digest
    from . import plots, report

    settings = settings or BenchSettings()
    out_dir = Path(out_dir)
    check_output_free(out_dir, overwrite)
    profile = resolve_target(target)
    host = host or detect_host()
    host_match = match(profile, host)
    host_match.require_runnable()
    kind = runtime_kind_for(profile)

    bundle = Bundle.load(Path(bundle_dir), threads=profile.threads, providers=host_match.providers)
    digest = bundle_digest(bundle.manifest)
    eval_set = load_eval_set(bundle.manifest, bundle.labels, data_dir, settings.eval_limit)
    checkpoint, no_checkpoint_why = source_checkpoint(bundle.manifest, checkpoint_dir)

    started = time.time()
    runners, notes = [bundle_runner(bundle)], []
    dense_reference: Measurement | None = None
    with tempfile.TemporaryDirectory(prefix=".edgeprune-baselines-", dir=out_dir.parent if out_dir.parent.exists()
                                     else None) as scratch:
        if checkpoint is not None and settings.baselines:
            baselines, notes = build_baselines(checkpoint, Path(scratch), threads=profile.threads,
                                               providers=host_match.providers, encode=bundle.encode,
                                               torch_device=kind.torch_device, data_dir=eval_set.source.parent)
            runners += baselines
        elif checkpoint is not None:  # no speed baselines, but the dense reference accuracy still counts
            from .runners import torch_runner

            reference = torch_runner(checkpoint, profile.threads, bundle.encode, kind.torch_device)
            dense_reference = Measurement(reference.name, reference.description,
                                          accuracy=accuracy(reference.predict_ids, eval_set))
        measurements = [_measure(r, profile, eval_set, settings, host_match.honest, host_match.providers,
                                 bundle.max_length) for r in runners]
    wanted = profile.workload.sequence_length
    if measurements[0].latency is not None and wanted != measurements[0].latency.sequence_length:
        notes.append(f"the profile's sequence length {wanted} exceeds the bundle's max_length "
                     f"{bundle.max_length}: latency was measured at {measurements[0].latency.sequence_length} tokens")
    if dense_reference is None:
        dense_reference = next((m for m in measurements if m.name == "pytorch-eager"), None)

    data = report.build_report(
        profile=profile, host=host, host_match=host_match, bundle=bundle, bundle_sha256=digest,
        eval_set=eval_set, measurements=measurements, dense_reference=dense_reference,
        checkpoint=checkpoint, no_checkpoint_why=no_checkpoint_why, settings=settings,
        seconds=time.time() - started, notes=notes,
    )
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        report.write_report(tmp, data)
        if settings.plots:
            plots.write_plots(tmp, data, measurements)
        for name, text in settings.extra_files.items():
            (tmp / name).write_text(text)
    record_in_manifest(Path(bundle.path), profile.name, host.host_id, report.manifest_entry(data))
    return data


def record_in_manifest(bundle_dir: Path, target: str, host_id: str, entry: dict[str, Any]) -> None:
    """manifest.json: measured[target][host_id] = entry (rewritten atomically; not part of the file hashes)."""
    file = bundle_dir / "manifest.json"
    manifest = json.loads(file.read_text(encoding="utf-8"))
    manifest.setdefault("measured", {}).setdefault(target, {})[host_id] = entry
    atomic_write_text(file, json.dumps(manifest, indent=2) + "\n")
