"""`benchmark`: measure a bundle on this host for one target, beside its baselines, and write the report.

Order of work: resolve the target and judge this host against it (a GPU target without a CUDA device
stops here, exit 2); load and verify the bundle with the torch-free runtime; read the eval set; build
the baselines when the source checkpoint is at hand; then for the bundle and each baseline measure
accuracy always, and latency and peak memory only when this host measures them honestly for the target.
The report folder is written atomically; the figures are then recorded in the bundle's manifest under
`measured[target][host_id]` (the one manifest field outside the bundle's digest, so its identity does
not change). Only a bundle *folder* is recorded into: a packed archive is unpacked to a temporary folder
and a record there would be lost, so the report says it was not recorded; a folder bench cannot write
is refused before any measuring (pass `--no-record` to bench it anyway).

Every accuracy bench measures is scored in batches of the target workload's batch size, as the device will be fed: dynamic
int8 takes its activation scale over the whole batch, padding included, so a batch-1 kiosk's accuracy is
only the one measured a sentence at a time. Accuracy figures: `accuracy` (the bundle through the kiosk runtime), `checkpoint_accuracy` (PyTorch eager
on the pruned source checkpoint) and `conversion_drop` (their difference: what export and quantization
cost), `dense_accuracy` (the dense reference: `--dense-checkpoint`, else the dense-teacher accuracy train
recorded, else not measured) and `accuracy_drop` (dense - bundle: what pruning *and* conversion cost,
the figure gate's max_accuracy_drop limits). The pruned checkpoint is never relabelled as dense.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..atomic import atomic_dir, atomic_write_text, check_output_free
from ..host import HostInfo, detect_host, match, runtime_kind_for
from ..targets import TargetProfile, resolve_target
from ..errors import BundleError, CheckpointError
from ..eval_data import EvalSet
from .accuracy import load_eval_set
from .baselines import build_baselines, source_checkpoint
from .latency import LatencyResult, make_batches, measure_latency
from .memory import MemoryResult, measure_peak_rss
from .runners import Runner, bundle_runner, torch_runner

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
    record: bool = True  # record the figures in the bundle folder's manifest.json
    extra_files: dict[str, str] = field(default_factory=dict)  # name -> text, written into the report folder


def _measure(runner: Runner, profile: TargetProfile, eval_set: EvalSet, settings: BenchSettings,
             honest: dict[str, bool], providers: list[str], max_length: int) -> Measurement:
    m = Measurement(runner.name, runner.description, size_mb=runner.size_mb)
    workload = profile.workload
    m.accuracy = runner.score(eval_set.texts, eval_set.label_ids, workload.batch_size)
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


def _check_recordable(bundle_dir: Path) -> str | None:
    """None when the figures can be recorded in the bundle, else why not (an archive); a folder bench
    cannot write is refused up front, before minutes of measuring."""
    if bundle_dir.is_file():
        return (f"figures not recorded in the bundle: {bundle_dir} is a packed archive (bench unpacks it to a "
                "temporary folder); bench the bundle folder to record them")
    manifest = bundle_dir / "manifest.json"
    if manifest.is_file() and not (os.access(bundle_dir, os.W_OK) and os.access(manifest, os.W_OK)):
        raise BundleError(f"cannot record the figures in {manifest}: the bundle folder is read-only",
                          "make it writable, or pass --no-record")
    return None


def _recorded_dense(bundle, eval_set: EvalSet, checkpoint: Path | None, data_dir: Path | None,
                    limit: int | None) -> tuple[float | None, str]:
    """(train's dense-teacher accuracy, source) when it was measured on the data this bench scores on,
    else (None, why not)."""
    from .accuracy import recorded_recipe

    source = bundle.manifest.get("source") or {}
    value, where = source.get("dense_accuracy"), "the manifest's source.dense_accuracy"
    if value is None and checkpoint is not None:
        from ..checkpoint import read_pruning_state

        value = read_pruning_state(checkpoint).metrics.get("dense_accuracy")
        where = f"{checkpoint}/pruning_state.json metrics.dense_accuracy"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None, ("no dense reference: pass --dense-checkpoint DIR or train with a distillation teacher "
                      "(the pruned checkpoint is not a dense reference)")
    data = recorded_recipe(bundle.manifest).get("data") or {}
    same_folder = data_dir is None or (data.get("path") and Path(data_dir).resolve() == Path(data["path"]).resolve())
    same_limit = limit is None or limit == data.get("eval_limit")
    if not (same_folder and same_limit):
        return None, (f"the dense accuracy train recorded ({where}) is on the recipe's eval data, not on "
                      f"{eval_set.source} with this bench's limit; pass --dense-checkpoint DIR")
    return float(value), f"dense teacher accuracy recorded by train ({where})"


def benchmark(bundle_dir: Path, target: str | TargetProfile, out_dir: Path, *, data_dir: Path | None = None,
              checkpoint_dir: Path | None = None, dense_checkpoint: Path | None = None, overwrite: bool = False,
              settings: BenchSettings | None = None, host: HostInfo | None = None) -> dict[str, Any]:
    from ..runtime import Bundle
    from . import plots, report

    settings = settings or BenchSettings()
    out_dir = Path(out_dir)
    bundle_dir = Path(bundle_dir)
    check_output_free(out_dir, overwrite)
    profile = resolve_target(target)
    host = host or detect_host()
    host_match = match(profile, host)
    host_match.require_runnable()
    kind = runtime_kind_for(profile)
    if dense_checkpoint is not None and not Path(dense_checkpoint).is_dir():
        raise CheckpointError(f"--dense-checkpoint {dense_checkpoint} is not a folder",
                              "pass a dense fine-tuned classifier folder (save_pretrained), e.g. the teacher")
    not_recorded = _check_recordable(bundle_dir) if settings.record else "figures not recorded (--no-record)"

    bundle = Bundle.load(bundle_dir, threads=profile.threads, providers=host_match.providers)
    digest = bundle.digest
    eval_set = load_eval_set(bundle.manifest, bundle.labels, data_dir, settings.eval_limit)
    checkpoint, no_checkpoint_why = source_checkpoint(bundle.manifest, checkpoint_dir)

    started = time.time()
    runners, notes = [bundle_runner(bundle)], []
    checkpoint_accuracy: float | None = None
    with tempfile.TemporaryDirectory(prefix=".edgeprune-baselines-", dir=out_dir.parent if out_dir.parent.exists()
                                     else None) as scratch:
        if checkpoint is not None and settings.baselines:
            baselines, notes = build_baselines(checkpoint, Path(scratch), threads=profile.threads,
                                               providers=host_match.providers, encode=bundle.encode,
                                               max_length=bundle.max_length, torch_device=kind.torch_device,
                                               data_dir=eval_set.source.parent)
            runners += baselines
        measurements = [_measure(r, profile, eval_set, settings, host_match.honest, host_match.providers,
                                 bundle.max_length) for r in runners]
    eager = next((m for m in measurements if m.name == "pytorch-eager"), None)
    if eager is not None:
        checkpoint_accuracy = eager.accuracy
    elif checkpoint is not None:  # no speed baselines, but the pruned checkpoint's accuracy still counts
        pruned = torch_runner(checkpoint, profile.threads, bundle.encode, bundle.max_length, kind.torch_device)
        checkpoint_accuracy = pruned.score(eval_set.texts, eval_set.label_ids, profile.workload.batch_size)
    if dense_checkpoint is not None:
        reference = torch_runner(Path(dense_checkpoint), profile.threads, bundle.encode, bundle.max_length,
                                 kind.torch_device, name="dense-reference")
        dense = (reference.score(eval_set.texts, eval_set.label_ids, profile.workload.batch_size),
                 f"PyTorch eager on the dense reference {Path(dense_checkpoint).resolve()}")
    else:
        dense = _recorded_dense(bundle, eval_set, checkpoint, data_dir, settings.eval_limit)
    wanted = profile.workload.sequence_length
    if measurements[0].latency is not None and wanted != measurements[0].latency.sequence_length:
        notes.append(f"the profile's sequence length {wanted} exceeds the bundle's max_length "
                     f"{bundle.max_length}: latency was measured at {measurements[0].latency.sequence_length} tokens")
    if not_recorded:
        notes.append(not_recorded)

    data = report.build_report(
        profile=profile, host=host, host_match=host_match, bundle=bundle, bundle_sha256=digest,
        eval_set=eval_set, measurements=measurements, dense=dense, checkpoint_accuracy=checkpoint_accuracy,
        checkpoint=checkpoint, no_checkpoint_why=no_checkpoint_why, settings=settings,
        seconds=time.time() - started, notes=notes,
    )
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        report.write_report(tmp, data)
        if settings.plots:
            plots.write_plots(tmp, data, measurements)
        for name, text in settings.extra_files.items():
            (tmp / name).write_text(text)
    if not not_recorded:
        record_in_manifest(bundle_dir, profile.name, host.host_id, report.manifest_entry(data))
    return data


def record_in_manifest(bundle_dir: Path, target: str, host_id: str, entry: dict[str, Any]) -> None:
    """manifest.json: measured[target][host_id] = entry (rewritten atomically; not part of the file hashes)."""
    file = Path(bundle_dir) / "manifest.json"
    try:
        manifest = json.loads(file.read_text(encoding="utf-8"))
        measured = manifest.get("measured")
        if not isinstance(measured, dict):
            measured = manifest["measured"] = {}
        per_target = measured.get(target)
        if not isinstance(per_target, dict):
            per_target = measured[target] = {}
        per_target[host_id] = entry
        atomic_write_text(file, json.dumps(manifest, indent=2) + "\n")
    except (OSError, ValueError) as exc:
        raise BundleError(f"the report was written, but recording its figures in {file} failed ({exc})",
                          "make the bundle folder writable, or bench with --no-record") from exc
