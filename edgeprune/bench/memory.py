"""Peak resident memory of a fresh process that only loads a model and runs it.

The parent starts `python -m edgeprune.bench.memory` with a JSON spec on stdin; the child loads the bundle with the
torch-free runtime (or, for the PyTorch eager baseline, the source checkpoint with transformers), runs
the given sentences through it, and prints its high-water mark (VmHWM from /proc/self/status, falling
back to getrusage) as JSON. Measuring in a fresh process keeps the bench's own memory (torch, the
baselines, the eval set) out of the figure. A bundle probe also reports whether torch got imported, so
a runtime that drags torch in shows up.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import BundleError

MB = 1024 * 1024  # sizes and memory are reported in MiB, written "MB"


@dataclass(frozen=True)
class MemoryResult:
    peak_rss_mb: float
    torch_imported: bool

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.peak_rss_mb, "torch_imported": self.torch_imported}


def peak_rss_bytes() -> int:
    """This process's peak resident set size."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def measure_peak_rss(kind: str, path: Path, texts: list[str], *, threads: int, providers: list[str],
                     batch_size: int, repeats: int = 3, timeout: float = 600.0) -> MemoryResult:
    """Run the probe for `kind` ("bundle" or "torch") in a fresh interpreter and read its peak RSS."""
    spec = {"kind": kind, "path": str(path), "texts": list(texts), "threads": threads,
            "providers": list(providers), "batch_size": batch_size, "repeats": repeats}
    package_root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    proc = subprocess.run([sys.executable, "-m", "edgeprune.bench.memory"], input=json.dumps(spec),
                          capture_output=True, text=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise BundleError(f"the memory probe for {path} failed ({tail})",
                          "check that the bundle loads with `edgeprune predict`")
    try:
        result = json.loads((proc.stdout.strip().splitlines() or [""])[-1])
        return MemoryResult(float(result["peak_rss_bytes"]) / MB, bool(result["torch_imported"]))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"the memory probe for {path} printed no result ({str(proc.stdout)[-120:]!r})",
                          "check that the bundle loads with `edgeprune predict`") from exc


def _run_bundle(spec: dict[str, Any]) -> None:
    from ..runtime import Bundle

    bundle = Bundle.load(spec["path"], threads=spec["threads"], providers=spec["providers"] or None)
    for _ in range(spec["repeats"]):
        bundle.predict(spec["texts"], batch_size=spec["batch_size"])


def _run_torch(spec: dict[str, Any]) -> None:
    import torch

    from ..checkpoint import load_checkpoint

    torch.set_num_threads(spec["threads"])
    model, tokenizer, _, state = load_checkpoint(Path(spec["path"]))
    texts, bs = spec["texts"], spec["batch_size"]
    with torch.inference_mode():
        for _ in range(spec["repeats"]):
            for i in range(0, len(texts), bs):
                model(**tokenizer(texts[i:i + bs], padding=True, truncation=True,
                                  max_length=state.max_length, return_tensors="pt"))


PROBES = {"bundle": _run_bundle, "torch": _run_torch}


def main() -> int:
    spec = json.loads(sys.stdin.read())
    PROBES[spec["kind"]](spec)
    print(json.dumps({"peak_rss_bytes": peak_rss_bytes(), "torch_imported": "torch" in sys.modules}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
