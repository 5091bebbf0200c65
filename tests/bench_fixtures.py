"""Fixtures for the targets/host/gate/bench/run tests: fake hosts, hand-made reports, a tiny bundle.

The tiny checkpoint comes from tests/convert_fixtures.py (BERT, hidden 32, 2 layers, 4 heads,
intermediate 37) and is converted with the real converter.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from convert_fixtures import make_checkpoint, make_model, make_tokenizer, write_data

from edgeprune.host import HostInfo

X86_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni")


def fake_host(**changes: Any) -> HostInfo:
    values = dict(arch="x86_64", cpu_model="Fake Xeon 8480", isa_flags=X86_FLAGS, cores=8, ort_version="1.32.0",
                  ort_providers=("CPUExecutionProvider",), gpu_name=None, gpu_capability=None)
    values.update(changes)
    return HostInfo(**values)


def write_target(folder: Path, name: str = "test-kiosk", *, arch: str = "x86_64", threads: int = 1,
                 budget: str = "", extra: str = "", workload: str = "batch_size = 1\nsequence_length = 16") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    file = folder / f"{name}.toml"
    file.write_text(f'name = "{name}"\ndescription = "test"\narch = "{arch}"\nproviders = ["CPUExecutionProvider"]\n'
                    f'threads = {threads}\nformats = ["structured", "csr"]\nquantization = "int8-dynamic"\n{extra}\n'
                    f"[workload]\n{workload}\n[budget]\n{budget}\n")
    return file


BASE_REPORT: dict[str, Any] = {
    "schema_version": 1,
    "target": {"name": "test-kiosk"},
    "host": {"host_id": "x86_64-fake-0000", "arch": "x86_64"},
    "bundle": {"sha256": "ab" * 32, "path": "/nowhere"},
    "metrics": {
        "latency_ms": {"measured": True, "p50": 4.0, "p95": 5.0, "p99": 7.0},
        "throughput_per_s": {"measured": True, "value": 200.0},
        "peak_rss_mb": {"measured": True, "value": 120.0},
        "bundle_mb": {"measured": True, "value": 20.0},
        "accuracy": {"measured": True, "value": 0.90, "batch_size": 1},
        "dense_accuracy": {"measured": True, "value": 0.91},
    },
}


def make_report(**metric_changes: dict[str, Any]) -> dict[str, Any]:
    report = copy.deepcopy(BASE_REPORT)
    for name, entry in metric_changes.items():
        report["metrics"][name] = entry
    return report


def unmeasured(reason: str = "the target is aarch64 but this host is x86_64") -> dict[str, Any]:
    return {"measured": False, "value": None, "reason": reason}


def build_tiny_bundle(root: Path) -> tuple[Path, Path, Path]:
    """(checkpoint, bundle, data folder) under `root`: a pruned tiny BERT converted for cpu-kiosk."""
    from edgeprune.convert import convert_checkpoint

    data = write_data(root / "data")
    checkpoint = make_checkpoint(root / "checkpoint", heads={0: [1]}, neurons={1: [0, 3, 5]}, data_dir=data)
    bundle = convert_checkpoint(checkpoint, root / "bundle", target="cpu-kiosk", progress=False)
    return checkpoint, Path(bundle), data


def write_dense_reference(folder: Path, seed: int = 3) -> Path:
    """A plain save_pretrained classifier (no masks, no pruning state): what a dense fine-tuned reference
    or a distillation teacher looks like. Another seed than the pruned model, so its accuracy differs."""
    tokenizer, vocab_size = make_tokenizer()
    make_model(vocab_size, seed=seed).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
