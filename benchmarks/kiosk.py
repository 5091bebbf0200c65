"""The cpu-kiosk bar (issue 6): the kiosk bundle against the dense fine-tuned reference, in one run.

    python benchmarks/kiosk.py --recipe recipes/kiosk.yaml --work DIR [--dense-checkpoint DIR]
        [--kiosk-out DIR] [--unstructured-out DIR] [--unstructured-sparsity 0.8] [--extra NAME=DIR ...]
        [--eval-limit N] [--runs N] [--deepsparse-python PY] [--out benchmarks/results/kiosk]

What it builds (each one reused when already there and up to date):
- the dense fine-tuned reference: the recipe with no pruning and no distillation teacher, same training
  budget (WORK/dense; reused when its pruning_state.json records the same recipe hash), or --dense-checkpoint;
- the kiosk bundle: `edgeprune run RECIPE --target cpu-kiosk` into WORK/kiosk, or --kiosk-out (a run OUT
  folder, a bundle folder, or a checkpoint to convert for cpu-kiosk);
- the best unstructured-sparse bundle of the same recipe family: the recipe with its pruning replaced by
  one global magnitude modifier at --unstructured-sparsity, trained, converted to csr + the target's int8
  mode (WORK/unstructured), or --unstructured-out (a bundle, run OUT folder or checkpoint);
- the dense baselines (PyTorch eager, ORT fp32 dense, ORT int8 dense) with `edgeprune.bench.baselines`.

What it measures, all in this one process run on the target's workload (batch 1, 2 threads, real dev
sentences of the recipe's data): dev accuracy, p50/p95/p99 latency, bundle MB, and peak RSS of a fresh
process that only loads and runs the model (`edgeprune.bench.memory`). Latency rounds are interleaved
across the models (A B C D E, A B C D E, ...) so host noise hits them alike. DeepSparse runs twice, each
in its own process (this script's interpreter when `deepsparse` imports here, else --deepsparse-python),
timed in rounds interleaved with the others: on the unstructured-sparse model exported to plain fp32 ONNX
(its zeros kept, what DeepSparse's sparse kernels are for), and on the kiosk's own student in fp32 with its
pruned heads and neurons removed, the DeepSparse model of the kiosk's accuracy. The bar compares the kiosk
with the fastest of them within 1 point of its accuracy; where DeepSparse cannot run, the rows say why.

Writes OUT/kiosk.md, OUT/kiosk.json (every figure, ratios against ORT fp32 dense, the bar checks, the
host fingerprint, the date) and OUT/kiosk.png (accuracy against p95 latency).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TARGET = "cpu-kiosk"
FP32 = "ort-fp32-dense"
EAGER = "pytorch-eager"
KIOSK = "kiosk-bundle"
UNSTRUCTURED = "unstructured-sparse"
DEEPSPARSE = "deepsparse-sparse"
DEEPSPARSE_KIOSK = "deepsparse-kiosk"
MEMORY_PROBE_SENTENCES = 64

# the bar of issue 6; every figure is a ratio measured side by side in this run
BAR = {"min_accuracy": 0.90, "max_accuracy_drop": 0.01, "min_p95_speedup": 4.0, "max_bundle_ratio": 1 / 8,
       "max_rss_ratio": 1 / 3}

DEEPSPARSE_PINS = ("deepsparse==1.8.0", "onnx==1.14.1", "numpy<2")


def say(line: str) -> None:
    print(f"kiosk: {line}", file=sys.stderr, flush=True)


# --- building (or reusing) what is measured ----------------------------------------------------------

def dense_recipe(recipe):
    """The dense fine-tuned reference: same model, data and training budget, no pruning, no teacher."""
    return recipe.dense_reference()


def unstructured_recipe(recipe, sparsity: float, dense_teacher: Path | None = None):
    """The same recipe with its pruning replaced by one global magnitude modifier at `sparsity`, on the
    layers (and with the schedule) of its own magnitude modifier when it has one, else every encoder Linear.
    A `teacher: dense` becomes `dense_teacher` when given: the dense reference this run already measures is
    that very model (same recipe, no pruning), so it is not trained a second time. The unstructured model
    keeps the full depth: a `layers` cut is structure, which is what this row is the alternative to."""
    from edgeprune.recipe import DENSE_TEACHER, ModifierConfig

    mods = list(recipe.pruning)
    base = next((m for m in mods if m.kind == "magnitude"), None)
    # schedule keys from a modifier that has a schedule (a `layers` cut has none)
    timing = base or next((m for m in mods if m.kind != "layers"), ModifierConfig())
    mod = ModifierConfig(kind="magnitude", schedule=timing.schedule if timing.schedule != "oneshot" else "cubic",
                         initial_sparsity=0.0, final_sparsity=float(sparsity), start=timing.start, end=timing.end,
                         frequency=timing.frequency, scope="global",
                         params=list(base.params) if base else [], ignore=list(base.ignore) if base else [])
    distillation = recipe.distillation
    if distillation.teacher == DENSE_TEACHER and dense_teacher is not None:
        # an ensemble's further members are not retrained for this row (two dozen minutes each): it
        # distils from the dense reference alone, which the kiosk's first teacher is
        distillation = dataclasses.replace(distillation, teacher=str(Path(dense_teacher).resolve()), ensemble=1)
    # its bundle keeps int8 embeddings (csr + int8, no 4-bit table), so its table trains as usual
    training = dataclasses.replace(recipe.training, embeddings="train")
    return dataclasses.replace(recipe, pruning=[mod], distillation=distillation, training=training)


def checkpoint_is(folder: Path, recipe) -> bool:
    from edgeprune.checkpoint import read_pruning_state
    from edgeprune.errors import EdgepruneError

    try:
        return read_pruning_state(folder).recipe_sha256 == recipe.sha256()
    except EdgepruneError:
        return False


def ensure_checkpoint(recipe, out: Path, what: str) -> Path:
    """`out` trained from `recipe`, reused when its pruning_state.json records the same recipe hash, and
    continued from its last step checkpoint when an earlier run of the same recipe was interrupted."""
    from edgeprune.train import can_resume, train

    out = Path(out)
    if checkpoint_is(out, recipe):
        say(f"{what}: reusing {out} (same recipe)")
        return out
    resume = can_resume(recipe, out)
    say(f"{what}: {'resuming an interrupted run' if resume else 'training'} into {out}")
    train(recipe, out, resume=resume, overwrite=True, report=say)
    return out


def share_kiosk_soft_teacher(recipe, kiosk_bundle: Path, checkpoint: Path) -> None:
    """Seed the unstructured row's soft-teacher cache with the kiosk's logits (same teacher, data and seed),
    so that row does not fine-tune and run the large teacher a second time."""
    if recipe.distillation.soft_teacher is None:
        return
    from edgeprune.bench.baselines import source_checkpoint
    from edgeprune.runtime import open_bundle
    from edgeprune.soft_teacher import share_cached

    # the manifest alone: Bundle.load would hash every file and start an ORT session to read one field
    src, _ = source_checkpoint(open_bundle(kiosk_bundle)[1], None)
    if src is not None and share_cached(src, checkpoint):
        say(f"unstructured-sparse: soft-teacher logits copied from the kiosk's ({src}.soft-teacher)")


def find_bundle(path: Path) -> Path | None:
    """A bundle folder given itself or an `edgeprune run` OUT folder; None when `path` holds neither."""
    path = Path(path)
    for candidate in (path, path / "bundle"):
        if (candidate / "manifest.json").is_file():
            return candidate
    return None


def ensure_converted(checkpoint: Path, out: Path, *, target, fmt, quantize, structured=True,
                     data_dir: Path | None = None) -> Path:
    """`checkpoint` converted into `out`, reused when `out`'s manifest records the same checkpoint hash,
    format and quantization, written by this converter version (a newer one may build a faster graph)."""
    from edgeprune.convert import convert_checkpoint
    from edgeprune.convert.bundle import CONVERTER_VERSION
    from edgeprune.hashing import sha256_json, sha256_tree

    out, checkpoint = Path(out), Path(checkpoint)
    want = sha256_json(sha256_tree(checkpoint))
    if (out / "manifest.json").is_file():
        m = json.loads((out / "manifest.json").read_text())
        if (m.get("source", {}).get("checkpoint_sha256") == want and m.get("converter_version") == CONVERTER_VERSION
                and (fmt is None or m.get("format") == fmt)
                and (quantize is None or m.get("quantization", {}).get("mode") == quantize)):
            say(f"reusing bundle {out}")
            return out
    say(f"converting {checkpoint} -> {out}")
    convert_checkpoint(checkpoint, out, target=target, fmt=fmt, quantize=quantize, structured=structured,
                       overwrite=True, data_dir=data_dir, eval_limit=256, progress=False)
    return out


def bundle_or_convert(path: Path, out: Path, **convert) -> Path:
    """A bundle from a bundle folder, a run OUT folder, or a checkpoint (converted into `out`)."""
    bundle = find_bundle(path)
    if bundle is not None:
        return bundle
    if (Path(path) / "pruning_state.json").is_file():
        return ensure_converted(Path(path), out, **convert)
    from edgeprune.errors import BundleError

    raise BundleError(f"{path} holds neither a bundle (manifest.json), an `edgeprune run` OUT folder (bundle/) "
                      "nor a checkpoint (pruning_state.json)", "pass one of those")


def build_kiosk(recipe_path: Path, overrides: Sequence[str], work: Path, runs: int, eval_limit: int | None,
                target: str = TARGET) -> Path:
    from edgeprune.bench.benchmark import BenchSettings
    from edgeprune.chain import run_chain

    out = Path(work) / "kiosk"
    say(f"kiosk bundle: edgeprune run {recipe_path} --target {target} -o {out}")
    settings = BenchSettings(runs=runs, eval_limit=eval_limit, baselines=False, plots=False)
    run_chain(recipe_path, target, out, overrides=list(overrides), settings=settings, say=say)
    return out / "bundle"


# --- DeepSparse ----------------------------------------------------------------------------------------

DEEPSPARSE_WORKER = r'''
import json, sys, time
import numpy as np
spec = json.loads(sys.stdin.readline())
from deepsparse import compile_model, __version__
data = np.load(spec["feeds"])
names = spec["inputs"]
lengths = [int(n) for n in data["lengths"]]  # DeepSparse compiles static shapes: one engine per length
batches = sorted({int(data["time_" + names[0]].shape[1]), int(data["acc_" + names[0]].shape[1])})
engines, compile_s = {}, 0.0
for b in batches:
    for n in lengths:
        t = time.perf_counter()
        engines[b, n] = compile_model(spec["model"], batch_size=b, num_cores=spec["threads"],
                                      input_shapes=[[b, n] for _ in names])
        compile_s += time.perf_counter() - t
        if sorted(engines[b, n].input_names) != sorted(names):
            sys.exit(f"the ONNX inputs {engines[b, n].input_names} are not the feeds {names}")
order = engines[batches[0], lengths[0]].input_names  # the graph's own order: engine.run takes a list

def feeds(prefix, i, n):  # sample i cut to n tokens (its own tokens, then padding), in the graph's order
    return [np.ascontiguousarray(data[prefix + name][i][:, :n], dtype=np.int64) for name in order]

# DeepSparse's time is not monotone in the length (its kernels favour some shapes), so a sample runs on
# the fastest compiled length that holds it: each engine's median over a few runs decides
speed = {}
for (b, n), engine in engines.items():
    prefix = "time_" if int(data["time_" + names[0]].shape[1]) == b else "acc_"
    x = feeds(prefix, 0, n)
    for _ in range(5):
        engine.run(x)
    runs = []
    for _ in range(25):
        t = time.perf_counter_ns(); engine.run(x); runs.append(time.perf_counter_ns() - t)
    speed[b, n] = float(np.median(runs)) / 1e6

def route(b, need, exact):
    fits = [n for n in lengths if n == need] if exact else [n for n in lengths if n >= need]
    return min(fits, key=lambda n: (speed[b, n], n))

def sample(prefix, i, exact=False):
    b = int(data[prefix + names[0]].shape[1])
    n = route(b, int(data[prefix + "length"][i]), exact)
    return n, engines[b, n], feeds(prefix, i, n)

pool = [sample("time_", i, bool(data["time_exact"])) for i in range(len(data["time_length"]))]
print(json.dumps({"ready": True, "version": __version__, "compiled": [list(k) for k in engines],
                  "compile_s": round(compile_s, 1), "timed_lengths": [n for n, _, _ in pool],
                  "engine_ms": {f"{b}x{n}": round(v, 3) for (b, n), v in speed.items()}}), flush=True)
pos = 0
for line in sys.stdin:
    cmd = json.loads(line)
    if cmd["op"] == "time":
        for _ in range(cmd.get("warmup", 0)):
            _, engine, x = pool[pos % len(pool)]; pos += 1
            engine.run(x)
        out = []
        for _ in range(cmd["n"]):
            _, engine, x = pool[pos % len(pool)]; pos += 1
            t = time.perf_counter_ns(); engine.run(x); out.append((time.perf_counter_ns() - t) / 1e6)
        reply = {"samples": out}
    elif cmd["op"] == "predict":
        pred = []
        for i in range(len(data["acc_length"])):
            _, engine, x = sample("acc_", i)
            logits = engine.run(x)[0]  # the only output, (1, labels)
            pred.append(int(np.argmax(logits[0])))
        reply = {"pred": pred}
    elif cmd["op"] == "rss":
        hwm = [l for l in open("/proc/self/status").read().splitlines() if l.startswith("VmHWM:")]
        reply = {"peak_rss_bytes": int(hwm[0].split()[1]) * 1024, "torch_imported": "torch" in sys.modules}
    else:
        break
    print(json.dumps(reply), flush=True)
'''

# DeepSparse compiles one static shape per engine. The worker compiles the multiples of this up to the
# longest sample (as DeepSparse's own transformers pipeline does with its sequence_length buckets) and runs
# each sample on the fastest of those lengths that holds it; a fixed-length workload runs at that length.
DEEPSPARSE_BUCKET = 16


def deepsparse_lengths(needs: Sequence[int], max_length: int, step: int = DEEPSPARSE_BUCKET,
                       fixed: int | None = None) -> list[int]:
    """The sequence lengths to compile DeepSparse for: every multiple of `step` up to the one that holds the
    longest of `needs` (capped at `max_length`), plus `fixed` (a fixed-length workload's own length)."""
    top = min(-(-max(int(n) for n in needs) // step) * step, int(max_length))
    return sorted(set(range(step, top, step)) | {top} | ({int(fixed)} if fixed is not None else set()))


def deepsparse_feeds(encode: Callable[[list[str]], dict[str, np.ndarray]], texts: Sequence[str], names: list[str],
                     *, batch_size: int, sequence_length: int | str, max_length: int, pad_id: int,
                     step: int = DEEPSPARSE_BUCKET) -> dict[str, np.ndarray]:
    """What the DeepSparse worker reads: `time_<input>` (pool, batch, L) over the very batches the ORT rows
    time (`edgeprune.bench.latency.make_batches`), `acc_<input>` (sentences, 1, L) for accuracy, padded to
    the longest compiled length L; `time_length` / `acc_length`: the tokens each sample needs (its own
    length; for a fixed workload the fixed length, `time_exact`); `lengths`: the lengths to compile. Token
    ids are int64, as the exported graph declares them."""
    from edgeprune.bench.latency import fix_length, make_batches

    batches, fixed = make_batches(encode, list(texts), batch_size, sequence_length, max_length, pad_id)
    acc = [encode([t]) for t in texts]  # whole sentences, as the ORT rows score them
    needs = {"time_": [b["input_ids"].shape[1] for b in batches], "acc_": [a["input_ids"].shape[1] for a in acc]}
    lengths = deepsparse_lengths(needs["time_"] + needs["acc_"], max_length, step,
                                 None if fixed == "dataset" else int(fixed))
    out: dict[str, np.ndarray] = {"lengths": np.asarray(lengths, dtype=np.int64),
                                  "time_exact": np.asarray(fixed != "dataset")}
    for prefix, samples in (("time_", batches), ("acc_", acc)):
        padded = [fix_length(s, lengths[-1], pad_id) for s in samples]
        out |= {prefix + n: np.stack([p[n] for p in padded]).astype(np.int64) for n in names}
        out[prefix + "length"] = np.asarray(needs[prefix], dtype=np.int64)
    return out


def checkpoint_encoder(checkpoint: Path, max_length: int) -> tuple[Callable[[list[str]], dict[str, np.ndarray]], int]:
    """(encode, pad id) of the checkpoint's own tokenizer: the feeds of its export must use its vocabulary,
    not a bundle's (a bundle may trim and renumber the vocabulary, `vocabulary = "train"`)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(checkpoint))

    def encode(texts: list[str]) -> dict[str, np.ndarray]:
        enc = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="np")
        return {k: np.asarray(v, dtype=np.int64) for k, v in enc.items()}

    return encode, int(tokenizer.pad_token_id or 0)


def deepsparse_python(explicit: str | None) -> tuple[str | None, str]:
    """(interpreter with deepsparse importable, "") or (None, why not)."""
    import importlib.util

    if importlib.util.find_spec("deepsparse") is not None:
        return sys.executable, ""
    explicit = explicit or os.environ.get("EDGEPRUNE_DEEPSPARSE_PYTHON")
    if explicit:
        probe = subprocess.run([explicit, "-c", "import deepsparse; print(deepsparse.__version__)"],
                               capture_output=True, text=True, timeout=300)
        if probe.returncode == 0:
            return explicit, ""
        return None, f"deepsparse does not import under {explicit} ({(probe.stderr.strip().splitlines() or ['?'])[-1]})"
    return None, ("deepsparse is not installed in this environment, and cannot be: its last real release "
                  "(1.8.0, cp38-cp311 x86-64 wheels) pins onnx<1.15 while edgeprune needs a newer onnx, and 1.9.0 "
                  "is an end-of-life stub whose install exits with an error (DeepSparse reached end of life in "
                  "June 2025). Install it into a separate venv (pip install " + " ".join(DEEPSPARSE_PINS) +
                  ") and pass --deepsparse-python VENV/bin/python")


class DeepSparseProcess:
    """DeepSparse compiled on a plain fp32 ONNX in its own interpreter, driven over stdin/stdout; timing
    happens inside that process, so no pipe overhead is counted."""

    def __init__(self, python: str, model: Path, inputs: list[str], feeds_file: Path, threads: int):
        import tempfile

        # stderr to a file: DeepSparse logs as it compiles each engine, and a pipe nobody drains would
        # fill and stall the worker
        self.log = tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen([python, "-c", DEEPSPARSE_WORKER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.log, text=True)
        ready = self._ask({"model": str(model), "inputs": inputs, "feeds": str(feeds_file), "threads": threads})
        self.version = ready["version"]
        self.compiled = [tuple(s) for s in ready["compiled"]]  # (batch, sequence length) of each engine
        self.compile_s = ready["compile_s"]
        self.engine_ms = ready["engine_ms"]  # "BxN": the engine's median ms in the worker's calibration
        self.timed_lengths = ready["timed_lengths"]  # the compiled length each timed sample runs at

    def _ask(self, cmd: dict[str, Any]) -> dict[str, Any]:
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
            self.log.seek(0)
            err = self.log.read().strip().splitlines()
            raise RuntimeError(f"the DeepSparse process died ({err[-1] if err else 'no output'})")
        return json.loads(line)

    def time(self, n: int, warmup: int = 0) -> list[float]:
        return self._ask({"op": "time", "n": n, "warmup": warmup})["samples"]

    def predict(self) -> list[int]:
        return self._ask({"op": "predict"})["pred"]

    def rss(self) -> dict[str, Any]:
        return self._ask({"op": "rss"})

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
        self.log.close()


def export_plain_onnx(checkpoint: Path, out: Path, max_length: int, remove_structure: bool = False) -> list[str]:
    """The sparse checkpoint as a plain fp32 ONNX (zeros kept, no ORT-only fused ops): what DeepSparse reads.
    `remove_structure` first cuts the pruned heads and neurons out, as convert does: zero rows would only
    be skipped work for DeepSparse, a smaller matrix is less work for any engine."""
    from edgeprune.checkpoint import load_checkpoint
    from edgeprune.convert.export import export_onnx
    from edgeprune.layout import encoder_layout

    model, tokenizer, _, state = load_checkpoint(Path(checkpoint))
    layout = None
    if remove_structure and (state.heads_pruned or state.neurons_pruned):
        from edgeprune.convert.structure import remove_structure as cut

        layout = encoder_layout(model)  # before removal: a shrunk layer may no longer match the map
        cut(model, state.heads_pruned, state.neurons_pruned)
    return export_onnx(model, tokenizer, out, ["the film was a delight", "a slow and muddled story"], max_length,
                       layout)


# --- measuring ------------------------------------------------------------------------------------------

@dataclass
class Row:
    name: str
    description: str
    role: str                                   # baseline | kiosk | unstructured | extra | deepsparse
    source: str = ""
    runner: Any = None                          # edgeprune.bench.runners.Runner (None for DeepSparse)
    accuracy: float | None = None
    latency: Any = None                         # edgeprune.bench.latency.LatencyResult
    peak_rss_mb: float | None = None
    torch_imported: bool | None = None
    bundle_mb: float | None = None
    model_onnx_mb: float | None = None
    format: str | None = None
    quantization: str | None = None
    global_sparsity: float | None = None
    sequence_length: int | str | None = None  # DeepSparse: the fixed length it was compiled for
    available: bool = True
    reason: str = ""
    notes: list[str] = field(default_factory=list)
    engine: Any = None                          # DeepSparseProcess of a DeepSparse row


def _bundle_facts(row: Row, bundle) -> Row:
    from edgeprune.bench.runners import MB

    m = bundle.manifest
    row.model_onnx_mb = (m.get("sizes") or {}).get("model_onnx_bytes", 0) / MB or None
    row.format = m.get("format")
    row.quantization = (m.get("quantization") or {}).get("mode")
    row.global_sparsity = (m.get("sparsity") or {}).get("global")
    return row


REWARM = 5  # untimed runs at every later visit
SETTLE_S = 0.3  # idle pause before every visit: lets the previous model's spinning threads go to sleep


def interleaved_latency(timers: dict[str, Callable[[int, int], list[float]]], runs: int, warmup: int,
                        chunk: int) -> dict[str, list[float]]:
    """Timed runs per model, in rounds of `chunk` runs visiting every model in turn (A B C, A B C, ...);
    each model's first visit starts with `warmup` untimed runs, every later one with `REWARM`.

    The re-warm matters: ONNX Runtime's pool threads spin for a while after a run, so the first runs
    after switching sessions compete with the previous session's spinning threads, and PyTorch's OpenMP
    workers spin far longer (up to ~0.2 s) after each forward pass. Measured here with one run per visit
    (no re-warm), every model looked ~10x slower at p50 than measured alone; with a re-warm of 5 runs but
    no pause, the small models' p95 was ~5x their p50. Each visit therefore starts with a `SETTLE_S`
    idle pause, then the re-warm."""
    samples: dict[str, list[float]] = {name: [] for name in timers}
    first = True
    while any(len(s) < runs for s in samples.values()):
        for name, timer in timers.items():
            n = min(chunk, runs - len(samples[name]))
            if n > 0:
                time.sleep(SETTLE_S)
                samples[name] += list(timer(n, warmup if first else REWARM))
        first = False
    return samples


def runner_timer(runner, batches: list) -> Callable[[int, int], list[float]]:
    """A timer over `edgeprune.bench.latency.measure_latency` that walks on through the batch pool from
    one round to the next, so every round times other sentences."""
    from edgeprune.bench.latency import measure_latency

    state = {"pos": 0}

    def timer(n: int, warmup: int) -> list[float]:
        k = state["pos"] % len(batches)
        pool = batches[k:] + batches[:k]
        result = measure_latency(runner.run, pool, "fixed", warmup=warmup, min_runs=n, max_runs=n)
        state["pos"] += warmup + n
        return list(result.samples_ms)

    return timer


def measure(rows: list[Row], eval_set, profile, *, runs: int, warmup: int, chunk: int, providers: list[str],
            max_length: int) -> None:
    """Fill in accuracy, interleaved latency and fresh-process peak RSS for every available row."""
    from edgeprune.bench.latency import LatencyResult, make_batches
    from edgeprune.bench.memory import MB, measure_peak_rss

    workload = profile.workload
    timers, seqs = {}, {}
    for row in rows:
        if not row.available:
            continue
        if row.runner is None:  # DeepSparse: its own process
            say(f"accuracy {row.name}")
            pred = row.engine.predict()
            row.accuracy = sum(int(p == g) for p, g in zip(pred, eval_set.label_ids)) / len(eval_set.label_ids)
            timers[row.name] = row.engine.time
            seqs[row.name] = row.sequence_length
            continue
        say(f"accuracy {row.name}")
        # as the kiosk is fed: dynamic int8 scales each batch by its own values, padding included
        row.accuracy = row.runner.score(eval_set.texts, eval_set.label_ids, workload.batch_size)
        batches, seq = make_batches(row.runner.encode, eval_set.texts, workload.batch_size, workload.sequence_length,
                                    max_length, row.runner.pad_id)
        timers[row.name], seqs[row.name] = runner_timer(row.runner, batches), seq
    say(f"latency: {runs} runs each over {len(timers)} models, interleaved in rounds of {chunk}")
    samples = interleaved_latency(timers, runs, warmup, chunk)
    for row in rows:
        if row.name in samples:
            row.latency = LatencyResult(tuple(samples[row.name]), workload.batch_size, seqs[row.name], warmup)
    for row in rows:
        if not row.available:
            continue
        say(f"peak RSS {row.name}")
        if row.runner is None:
            rss = row.engine.rss()
            row.peak_rss_mb, row.torch_imported = rss["peak_rss_bytes"] / MB, rss["torch_imported"]
            row.notes.append("peak RSS of the DeepSparse process after its accuracy and latency runs")
            continue
        mem = measure_peak_rss(row.runner.memory_kind, row.runner.memory_path,
                               eval_set.texts[:MEMORY_PROBE_SENTENCES], threads=profile.threads,
                               providers=providers, batch_size=workload.batch_size)
        row.peak_rss_mb, row.torch_imported = mem.peak_rss_mb, mem.torch_imported


# --- ratios, bar, outputs --------------------------------------------------------------------------------

def _ratio(a, b):
    return a / b if a is not None and b not in (None, 0) else None


def row_dict(row: Row, fp32: Row | None, dense_accuracy: float | None) -> dict[str, Any]:
    lat = row.latency.to_dict() if row.latency is not None else None
    f_lat = fp32.latency if fp32 is not None else None
    return {
        "name": row.name, "description": row.description, "role": row.role, "source": row.source,
        "available": row.available, "reason": row.reason or None,
        "accuracy": row.accuracy,
        "accuracy_delta_vs_dense": (row.accuracy - dense_accuracy
                                    if row.accuracy is not None and dense_accuracy is not None else None),
        "latency_ms": lat,
        "throughput_per_s": row.latency.throughput_per_s if row.latency is not None else None,
        "peak_rss_mb": row.peak_rss_mb, "torch_imported": row.torch_imported,
        "bundle_mb": row.bundle_mb, "model_onnx_mb": row.model_onnx_mb,
        "format": row.format, "quantization": row.quantization, "global_sparsity": row.global_sparsity,
        "vs_ort_fp32_dense": {  # speedups: fp32 / row; size and RSS: row / fp32
            "speedup_p50": _ratio(f_lat and f_lat.p50, row.latency and row.latency.p50),
            "speedup_p95": _ratio(f_lat and f_lat.p95, row.latency and row.latency.p95),
            "speedup_p99": _ratio(f_lat and f_lat.p99, row.latency and row.latency.p99),
            "size_ratio": _ratio(row.bundle_mb, fp32 and fp32.bundle_mb),
            "size_ratio_vs_fp32_onnx": _ratio(row.bundle_mb, fp32 and fp32.model_onnx_mb),
            "rss_ratio": _ratio(row.peak_rss_mb, fp32 and fp32.peak_rss_mb),
        },
        "notes": row.notes,
    }


def _check(name: str, value, limit, passed, how: str, reason: str | None = None) -> dict[str, Any]:
    return {"check": name, "value": value, "limit": limit, "how": how,
            "status": "not measured" if passed is None else ("pass" if passed else "fail"),
            "passed": passed, **({"reason": reason} if reason else {})}


def bar_checks(rows: dict[str, dict[str, Any]], dense_accuracy: float | None) -> list[dict[str, Any]]:
    k, f = rows.get(KIOSK), rows.get(FP32)
    checks = []
    acc = k and k["accuracy"]
    checks.append(_check("kiosk dev accuracy >= 0.90", acc, BAR["min_accuracy"],
                         None if acc is None else acc >= BAR["min_accuracy"], "kiosk accuracy"))
    drop = None if acc is None or dense_accuracy is None else dense_accuracy - acc
    checks.append(_check("at most 1 point below the dense fine-tuned reference", drop, BAR["max_accuracy_drop"],
                         None if drop is None else drop <= BAR["max_accuracy_drop"] + 1e-12,
                         "dense reference accuracy (PyTorch eager, this run) - kiosk accuracy"))
    ratios = (k or {}).get("vs_ort_fp32_dense") or {}
    sp = ratios.get("speedup_p95")
    checks.append(_check("p95 >= 4x faster than ORT fp32 dense", sp, BAR["min_p95_speedup"],
                         None if sp is None else sp >= BAR["min_p95_speedup"], "ORT fp32 dense p95 / kiosk p95"))
    size = ratios.get("size_ratio_vs_fp32_onnx")
    checks.append(_check("bundle <= 1/8 of the dense fp32 ONNX's bytes", size, BAR["max_bundle_ratio"],
                         None if size is None else size <= BAR["max_bundle_ratio"],
                         "kiosk bundle bytes (every shipped file) / dense fp32 model.onnx bytes"))
    rss = ratios.get("rss_ratio")
    checks.append(_check("peak RSS <= 1/3 of ORT fp32 dense's", rss, BAR["max_rss_ratio"],
                         None if rss is None else rss <= BAR["max_rss_ratio"],
                         "kiosk runtime peak RSS / ORT fp32 dense peak RSS (fresh processes)"))
    # DeepSparse's best sparse model of equal accuracy: the fastest DeepSparse row within 1 point of the
    # kiosk's accuracy; with none that close, the most accurate one, flagged as not like-for-like
    ds_rows = [r for r in rows.values() if r["role"] == "deepsparse"]
    timed = [r for r in ds_rows if r["available"] and r["latency_ms"] is not None and r["accuracy"] is not None]
    how = ("kiosk p95 < p95 of the fastest DeepSparse model within 1 point of the kiosk's accuracy (else the most "
           "accurate one)")
    if not timed or k is None or k["latency_ms"] is None or acc is None:
        reasons = "; ".join(f"{r['name']}: {r['reason']}" for r in ds_rows if r.get("reason"))
        checks.append(_check("faster than DeepSparse's best sparse model", None, None, None, how,
                             reason=reasons or "DeepSparse was not measured"))
    else:
        equal = [r for r in timed if r["accuracy"] >= acc - BAR["max_accuracy_drop"]]
        ds = (min(equal, key=lambda r: r["latency_ms"]["p95"]) if equal
              else max(timed, key=lambda r: r["accuracy"]))
        k95, d95 = k["latency_ms"]["p95"], ds["latency_ms"]["p95"]
        checks.append(_check("faster than DeepSparse's best sparse model", _ratio(d95, k95), 1.0, k95 < d95,
                             how + f"; value = {ds['name']} p95 / kiosk p95",
                             reason=(f"against {ds['name']} ({ds['accuracy']:.4f} vs the kiosk's {acc:.4f})" if equal
                                     else f"no DeepSparse model within 1 point: the most accurate, {ds['name']}, "
                                          f"scored {ds['accuracy']:.4f} vs {acc:.4f}, not a like-for-like "
                                          "comparison")))
    return checks




def format_markdown(result: dict[str, Any]) -> str:
    from edgeprune.bench.report import _fmt

    host = result["host"]
    w = result["workload"]
    seq = next((r["latency_ms"]["sequence_length"] for r in result["rows"] if r["latency_ms"]), w["sequence_length"])
    lines = [f"# cpu-kiosk bar: {result['recipe']}", "",
             f"{result['created']} on {host['host_id']} ({host['cpu_model']}, {host['cores']} cores, "
             f"onnxruntime {host['ort_version']}); batch {w['batch_size']}, sequence {seq} tokens, "
             f"{w['threads']} threads, {w['runs']} timed runs per model interleaved in rounds of {w['chunk']}, "
             f"{result['data']['examples']} dev sentences from {result['data']['file']}.", "",
             "| model | dev accuracy | p50 / p95 / p99 ms | x ORT fp32 dense (p95) | bundle MB | peak RSS MB |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in result["rows"]:
        if not r["available"]:
            lines.append(f"| {r['name']} | not available: {r['reason']} | | | | |")
            continue
        lat = r["latency_ms"] or {}
        lines.append(f"| {r['name']} | {_fmt(r['accuracy'])} | {_fmt(lat.get('p50'), 3)} / {_fmt(lat.get('p95'), 3)} / "
                     f"{_fmt(lat.get('p99'), 3)} | {_fmt(r['vs_ort_fp32_dense']['speedup_p95'], 3)} | "
                     f"{_fmt(r['bundle_mb'], 3)} | {_fmt(r['peak_rss_mb'], 4)} |")
    lines += ["", f"dense fine-tuned reference accuracy: {_fmt(result['dense_accuracy'])} "
                  f"({result['dense_accuracy_source']})", "", "| bar | value | limit | status |", "|---|---:|---:|---|"]
    for c in result["bar"]:
        reason = c.get("reason")
        if reason and c["status"] == "not measured" and "DeepSparse" in c["check"]:
            reason = "see the DeepSparse rows"
        status = c["status"] + (f" ({reason})" if reason else "")
        lines.append(f"| {c['check']} | {_fmt(c['value'])} | {_fmt(c['limit'])} | {status} |")
    lines += ["", f"**bar: {'PASS' if result['bar_passed'] else 'FAIL'}** (PASS = every measured check passes; "
                  "a check not measured is listed, not counted)"]
    if result["steps"]:
        lines += ["", "## steps", "", "| step | dev accuracy | vs dense | x ORT fp32 dense (p95) | bundle MB | "
                                    "size vs fp32 bundle |", "|---|---:|---:|---:|---:|---:|"]
        for s in result["steps"]:
            lines.append(f"| {s['name']} | {_fmt(s['accuracy'])} | {_fmt(s['accuracy_delta_vs_dense'], 3)} | "
                         f"{_fmt(s['speedup_p95'], 3)} | {_fmt(s['bundle_mb'], 3)} | {_fmt(s['size_ratio'], 3)} |")
    if result["notes"]:
        lines += ["", "notes:"] + [f"- {n}" for n in result["notes"]]
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], file: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5))
    try:
        for r in result["rows"]:
            if r["latency_ms"] is None or r["accuracy"] is None:
                continue
            x, y = r["latency_ms"]["p95"], r["accuracy"]
            ax.scatter([x], [y], s=90 if r["role"] == "kiosk" else 50, marker="*" if r["role"] == "kiosk" else "o")
            ax.annotate(r["name"], (x, y), textcoords="offset points", xytext=(5, 5), fontsize="small")
        if result["dense_accuracy"] is not None:
            ax.axhline(result["dense_accuracy"] - BAR["max_accuracy_drop"], color="grey", linestyle="--",
                       linewidth=1, label="dense reference - 1 point")
        ax.axhline(BAR["min_accuracy"], color="grey", linestyle=":", linewidth=1, label="0.90")
        fp32 = next((r for r in result["rows"] if r["name"] == FP32 and r["latency_ms"]), None)
        if fp32 is not None:
            ax.axvline(fp32["latency_ms"]["p95"] / BAR["min_p95_speedup"], color="tab:red", linestyle="--",
                       linewidth=1, label="ORT fp32 dense p95 / 4")
        ax.set_xscale("log")
        ax.set_xlabel("p95 latency (ms, log scale; batch 1, 2 threads)")
        ax.set_ylabel("dev accuracy")
        ax.set_title("cpu-kiosk: accuracy against p95 latency (upper left is better)")
        ax.legend(fontsize="small", loc="lower right")
        fig.tight_layout()
        fig.savefig(file, dpi=90)
    finally:
        plt.close(fig)


def start_deepsparse(row: Row, python: str, src: Path, scratch: Path, profile, eval_set, threads: int, *,
                     remove_structure: bool, sparsity: float | None) -> None:
    """Export `src` to plain fp32 ONNX and compile it in a DeepSparse process held in `row.engine`; on any
    failure the row says why instead of stopping the run."""
    from edgeprune.checkpoint import read_pruning_state

    try:
        onnx_file = scratch / "model.onnx"
        onnx_file.parent.mkdir(parents=True, exist_ok=True)
        # the checkpoint's own tokenizer and length: the kiosk bundle's encoder may use another
        # (trimmed, renumbered) vocabulary, whose ids mean nothing to this model
        max_length = read_pruning_state(src).max_length
        inputs = export_plain_onnx(src, onnx_file, max_length, remove_structure)
        encode, pad_id = checkpoint_encoder(src, max_length)
        bs, workload_length = profile.workload.batch_size, profile.workload.sequence_length
        feeds = deepsparse_feeds(encode, eval_set.texts, inputs, batch_size=bs,
                                 sequence_length=workload_length, max_length=max_length, pad_id=pad_id)
        np.savez(scratch / "feeds.npz", **feeds)
        say(f"compiling {src} with DeepSparse ({row.name})")
        row.engine = DeepSparseProcess(python, onnx_file, inputs, scratch / "feeds.npz", threads)
        proc = row.engine
        row.description += f", deepsparse {proc.version}"
        run_at = np.asarray(proc.timed_lengths)  # the compiled length each timed batch ran at
        used = "/".join(f"{n}" for n in sorted(set(run_at.tolist())))
        row.source = str(src)
        row.sequence_length = (int(run_at[0]) if workload_length != "dataset"
                               else f"dataset, padded up to the compiled lengths {used}")
        row.global_sparsity = sparsity
        row.format = "onnx fp32 (" + ("pruned heads and neurons removed" if remove_structure else "zeros kept") + ")"
        row.quantization = "none"
        row.model_onnx_mb = row.bundle_mb = onnx_file.stat().st_size / 1024 / 1024
        if workload_length == "dataset":
            counts = ", ".join(f"{int((run_at == n).sum())} at {n}" for n in sorted(set(run_at.tolist())))
            row.notes.append(
                f"DeepSparse compiles static shapes: batch {bs}, the same {run_at.size * bs} dev sentences "
                f"as the ORT rows, each batch padded up to the fastest compiled length that holds it "
                f"({counts}): {run_at.mean():.1f} tokens on average where the ORT rows run each batch at "
                f"its own length ({feeds['time_length'].mean():.1f} on average)")
        else:
            row.notes.append(f"fixed shape batch {bs} x {int(run_at[0])}, as the ORT rows")
        row.notes.append(
            f"{len(proc.compiled)} engine{'s' * (len(proc.compiled) != 1)} compiled in "
            f"{proc.compile_s:.0f} s, median ms per run in "
            "the worker's calibration: " + ", ".join(f"{k}: {v:.2f}" for k, v in proc.engine_ms.items())
            + " (batch x length; DeepSparse's time is not monotone in the length); accuracy runs each dev "
            "sentence whole on the fastest engine that holds it; peak RSS holds every engine")
        row.notes.append("DeepSparse binds and spins its worker threads: on a host shared with other "
                         "work its latency suffers more than ORT's; compare it on an idle host")
    except Exception as exc:  # noqa: BLE001 - a third-party engine fails in many ways; the row says how
        row.available, row.reason = False, f"DeepSparse failed: {type(exc).__name__}: {exc}"[:300]
        if row.engine is not None:
            row.engine.close()
        row.engine = None


# --- the core: everything measured in one run -----------------------------------------------------------

def run_kiosk_benchmark(*, dense_checkpoint: Path, kiosk_bundle: Path, unstructured_bundle: Path | None,
                        extras: Sequence[tuple[str, Path]] = (), scratch: Path, data_dir: Path | None = None,
                        target: str = TARGET, runs: int = 200, warmup: int = 20, chunk: int = 25,
                        eval_limit: int | None = None, deepsparse_py: str | None = None,
                        deepsparse: bool = True, recipe_name: str = "", notes: Sequence[str] = ()) -> dict[str, Any]:
    """Measure every row side by side and return the result (what kiosk.json holds)."""
    from edgeprune.bench.accuracy import load_eval_set
    from edgeprune.bench.baselines import build_baselines
    from edgeprune.bench.runners import bundle_mb, bundle_runner
    from edgeprune.host import detect_host, match
    from edgeprune.runtime import Bundle
    from edgeprune.targets import resolve_target

    started = time.time()
    notes = list(notes)
    profile = resolve_target(target)
    host = detect_host()
    host_match = match(profile, host)
    host_match.require_runnable()
    notes += host_match.reasons
    providers, threads = host_match.providers, profile.threads
    scratch = Path(scratch)
    scratch.mkdir(parents=True, exist_ok=True)

    kiosk = Bundle.load(kiosk_bundle, threads=threads, providers=providers)
    eval_set = load_eval_set(kiosk.manifest, kiosk.labels, data_dir, eval_limit)
    say(f"eval set: {len(eval_set.texts)} sentences from {eval_set.source}")

    runners, base_notes = build_baselines(Path(dense_checkpoint), scratch / "baselines", threads=threads,
                                          providers=providers, encode=kiosk.encode, data_dir=eval_set.source.parent)
    notes += base_notes
    rows: list[Row] = []
    for r in runners:
        row = Row(r.name, r.description + (" (dense fine-tuned reference)" if r.name == EAGER else ""), "baseline",
                  str(dense_checkpoint if r.name == EAGER else r.memory_path), r, bundle_mb=r.size_mb)
        if r.name != EAGER:
            _bundle_facts(row, Bundle.load(r.memory_path))
        rows.append(row)

    def add_bundle(name: str, description: str, role: str, path: Path) -> None:
        b = kiosk if Path(path) == Path(kiosk_bundle) else Bundle.load(path, threads=threads, providers=providers)
        if list(b.labels) != list(kiosk.labels):
            raise SystemExit(f"kiosk: {path} has labels {b.labels}, the kiosk bundle {kiosk.labels}")
        rows.append(_bundle_facts(Row(name, description, role, str(Path(path).resolve()), bundle_runner(b, name),
                                      bundle_mb=bundle_mb(b.manifest)), b))

    add_bundle(KIOSK, "the kiosk bundle (recipe's structured pruning, cpu-kiosk conversion)", "kiosk", kiosk_bundle)
    if unstructured_bundle is not None:
        add_bundle(UNSTRUCTURED, "best unstructured-sparse bundle of the recipe family (ORT)", "unstructured",
                   unstructured_bundle)
    for name, path in extras:
        add_bundle(name, f"extra bundle {path}", "extra", path)

    if deepsparse:
        from edgeprune.bench.baselines import source_checkpoint
        from edgeprune.runtime import open_bundle

        python, why = deepsparse_python(deepsparse_py)
        sources = []
        if unstructured_bundle is not None:
            manifest = open_bundle(unstructured_bundle)[1]  # the manifest alone: no hashing, no ORT session
            sources.append((DEEPSPARSE, "DeepSparse on the unstructured-sparse model (plain fp32 ONNX)", manifest,
                            False, "no unstructured-sparse checkpoint at hand to export for DeepSparse"))
        else:
            rows.append(Row(DEEPSPARSE, "DeepSparse on the unstructured-sparse model", "deepsparse", available=False,
                            reason=why or "no unstructured-sparse checkpoint at hand to export for DeepSparse"))
        sources.append((DEEPSPARSE_KIOSK, "DeepSparse on the kiosk's student in fp32, pruned heads and neurons "
                        "removed (plain ONNX)", kiosk.manifest, True, "no kiosk checkpoint at hand to export"))
        for name, description, manifest, remove, missing in sources:
            src, no_src = source_checkpoint(manifest, None)
            row = Row(name, description, "deepsparse")
            if python is None:
                row.available, row.reason = False, why
            elif src is None:
                row.available, row.reason = False, f"{missing} ({no_src})"
            else:
                start_deepsparse(row, python, Path(src), scratch / name, profile, eval_set, threads,
                                 remove_structure=remove,
                                 sparsity=(manifest.get("sparsity") or {}).get("global"))
            rows.append(row)

    try:
        measure(rows, eval_set, profile, runs=runs, warmup=warmup, chunk=chunk, providers=providers,
                max_length=kiosk.max_length)
    finally:
        for row in rows:
            if row.engine is not None:
                row.engine.close()

    by_name = {r.name: r for r in rows}
    fp32 = by_name.get(FP32)
    eager = by_name.get(EAGER)
    dense_acc = eager.accuracy if eager is not None else (fp32.accuracy if fp32 is not None else None)
    dense_source = ("PyTorch eager on the dense fine-tuned checkpoint, this run, same eval set" if eager is not None
                    else "ORT fp32 dense, this run")
    out_rows = [row_dict(r, fp32, dense_acc) for r in rows]
    named = {r["name"]: r for r in out_rows}
    checks = bar_checks(named, dense_acc)
    steps = [{"name": r["name"], "accuracy": r["accuracy"], "accuracy_delta_vs_dense": r["accuracy_delta_vs_dense"],
              "speedup_p95": r["vs_ort_fp32_dense"]["speedup_p95"], "bundle_mb": r["bundle_mb"],
              "size_ratio": r["vs_ort_fp32_dense"]["size_ratio"], "peak_rss_mb": r["peak_rss_mb"]}
             for r in out_rows if r["role"] in ("extra", "kiosk")] if extras else []
    if host_match.honest.get("latency") is False:
        notes.append("latency on this host is not honest for the target: " + (host_match.reason_for("latency") or ""))
    if any(r.torch_imported for r in rows if r.role in ("kiosk", "unstructured", "extra")):
        notes.append("a bundle's memory probe imported torch; the kiosk runtime should not")
    notes.append("x ORT fp32 dense (p95) = ORT fp32 dense p95 / the row's p95; size and RSS ratios in the JSON are "
                 "row / ORT fp32 dense. Bundle MB counts every shipped file of the bundle (tokenizer included).")
    return {
        "schema": "edgeprune-kiosk-benchmark/1",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(time.time() - started, 1),
        "recipe": recipe_name,
        "target": profile.name,
        "host": host.fingerprint() | {"host_id": host.host_id},
        "host_match": host_match.to_dict(),
        "workload": {"batch_size": profile.workload.batch_size, "sequence_length": profile.workload.sequence_length,
                     "threads": threads, "runs": runs, "warmup": warmup, "chunk": chunk,
                     "interleaved": True, "torch_threads": threads},
        "data": eval_set.to_dict(),
        "dense_accuracy": dense_acc,
        "dense_accuracy_source": dense_source,
        "inputs": {"dense_checkpoint": str(Path(dense_checkpoint).resolve()),
                   "kiosk_bundle": str(Path(kiosk_bundle).resolve()),
                   "unstructured_bundle": str(Path(unstructured_bundle).resolve()) if unstructured_bundle else None,
                   "extras": {n: str(Path(p).resolve()) for n, p in extras}},
        "rows": out_rows,
        "bar": checks,
        "bar_passed": all(c["passed"] for c in checks if c["passed"] is not None),
        "steps": steps,
        "notes": notes,
    }


def write_outputs(result: dict[str, Any], out: Path) -> str:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    md = format_markdown(result)
    (out / "kiosk.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "kiosk.md").write_text(md)
    plot(result, out / "kiosk.png")
    return md


def parse_extra(items: Sequence[str]) -> list[tuple[str, Path]]:
    out = []
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise SystemExit(f"kiosk: --extra {item!r}: write NAME=BUNDLE_DIR")
        out.append((name, Path(path)))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", required=True, type=Path, help="the kiosk recipe YAML")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="recipe override, as for `edgeprune run` (repeatable)")
    parser.add_argument("--work", required=True, type=Path, help="folder for what this script builds (reused)")
    parser.add_argument("--dense-checkpoint", type=Path, help="reuse this dense fine-tuned checkpoint")
    parser.add_argument("--kiosk-out", type=Path, help="reuse this kiosk bundle (run OUT, bundle or checkpoint)")
    parser.add_argument("--unstructured-out", type=Path,
                        help="reuse this unstructured-sparse model (bundle, run OUT, or checkpoint to convert csr+int8)")
    parser.add_argument("--unstructured-sparsity", type=float, default=0.8, help="default: 0.8")
    parser.add_argument("--no-unstructured", action="store_true", help="leave the unstructured-sparse row out")
    parser.add_argument("--extra", action="append", default=[], metavar="NAME=BUNDLE_DIR",
                        help="another bundle to measure as a row and a step (repeatable)")
    parser.add_argument("--data", type=Path, help="dev data folder (default: the recipe's)")
    parser.add_argument("--eval-limit", type=int, help="score only the first N dev sentences")
    parser.add_argument("--runs", type=int, default=300, help="timed runs per model (default: 300)")
    parser.add_argument("--warmup", type=int, default=20, help="untimed runs per model first (default: 20)")
    parser.add_argument("--chunk", type=int, default=25, help="runs per model per interleaved round (default: 25)")
    parser.add_argument("--target", default=TARGET, help="target profile (default: cpu-kiosk)")
    parser.add_argument("--deepsparse-python", help="an interpreter with deepsparse installed (a separate venv)")
    parser.add_argument("--no-deepsparse", action="store_true", help="leave the DeepSparse row out")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "kiosk")
    args = parser.parse_args(argv)

    from edgeprune.errors import EdgepruneError
    from edgeprune.recipe import load_recipe
    from edgeprune.targets import resolve_target

    try:
        recipe = load_recipe(args.recipe, args.overrides)
        # the target's int8 mode (resolved before anything trains), so the unstructured row differs from the
        # kiosk only in its sparsity form; a target without one (fp16 GPU) gets ORT's default int8
        mode = resolve_target(args.target).quantization
        int8 = mode if mode.startswith("int8") else "int8-dynamic"
        work = args.work.resolve()
        work.mkdir(parents=True, exist_ok=True)
        data_dir = args.data or (Path(recipe.data.path) if Path(recipe.data.path).is_dir() else None)
        notes = []
        dense = args.dense_checkpoint or ensure_checkpoint(dense_recipe(recipe), work / "dense", "dense reference")
        if args.dense_checkpoint is not None:
            from edgeprune.checkpoint import read_pruning_state

            state = read_pruning_state(dense)
            if state.global_sparsity > 0 or state.heads_pruned or state.neurons_pruned:
                notes.append(f"--dense-checkpoint {dense} is not dense (global sparsity {state.global_sparsity:.3f})")
            if state.recipe_sha256 != dense_recipe(recipe).sha256():
                notes.append(f"--dense-checkpoint {dense} was trained from another recipe than {args.recipe} "
                             "without pruning (a different training budget, data or model?)")
        if args.kiosk_out is not None:
            kiosk = bundle_or_convert(args.kiosk_out, work / "kiosk-bundle", target=args.target, fmt=None,
                                      quantize=None, data_dir=data_dir)
        else:
            kiosk = build_kiosk(args.recipe, args.overrides, work, args.runs, args.eval_limit, args.target)
        unstructured = None
        if not args.no_unstructured:
            if args.unstructured_out is not None:
                unstructured = bundle_or_convert(args.unstructured_out, work / "unstructured" / "bundle", target=None,
                                                 fmt="csr", quantize=int8, structured=False,
                                                 data_dir=data_dir)
            else:
                ck_dir = work / "unstructured" / "checkpoint"
                share_kiosk_soft_teacher(recipe, kiosk, ck_dir)
                ck = ensure_checkpoint(unstructured_recipe(recipe, args.unstructured_sparsity, dense),
                                       ck_dir, "unstructured-sparse")
                unstructured = ensure_converted(ck, work / "unstructured" / "bundle", target=None, fmt="csr",
                                                quantize=int8, structured=False, data_dir=data_dir)
        result = run_kiosk_benchmark(
            dense_checkpoint=dense, kiosk_bundle=kiosk, unstructured_bundle=unstructured,
            extras=parse_extra(args.extra), scratch=work / "scratch", data_dir=data_dir, target=args.target,
            runs=args.runs, warmup=args.warmup, chunk=args.chunk, eval_limit=args.eval_limit,
            deepsparse_py=args.deepsparse_python, deepsparse=not args.no_deepsparse,
            recipe_name=str(args.recipe), notes=notes)
    except EdgepruneError as exc:
        print(f"kiosk: error: {exc}", file=sys.stderr)
        return 2
    print(write_outputs(result, args.out))
    say(f"wrote {args.out}/kiosk.md, kiosk.json, kiosk.png")
    return 0 if result["bar_passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
