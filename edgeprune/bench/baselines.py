"""Baselines measured in the same run as the bundle, so every speed, memory and size claim is a ratio
against them: PyTorch eager on the source checkpoint, and dense ORT bundles of the same checkpoint in
fp32 and int8 (built with the converter into a scratch folder that bench removes afterwards).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from ..errors import CheckpointError, EdgepruneError
from .latency import Feeds
from .runners import Runner, bundle_runner, torch_runner

# name -> (quantization handed to the converter, description)
DENSE_BASELINES = {
    "ort-fp32-dense": ("none", "ORT fp32, dense, no structure removed"),
    "ort-int8-dense": ("int8-dynamic", "ORT int8 dynamic, dense, no structure removed"),
}


def source_checkpoint(manifest: dict[str, Any], override: Path | None) -> tuple[Path | None, str]:
    """(checkpoint folder, "") when at hand, else (None, why not)."""
    if override is not None:
        if not Path(override).is_dir():
            raise CheckpointError(f"--checkpoint {override} is not a folder",
                                  "pass the checkpoint the bundle was converted from")
        return Path(override), ""
    recorded = (manifest.get("source") or {}).get("checkpoint")
    if not recorded:
        return None, "the bundle's manifest records no source checkpoint; pass --checkpoint DIR"
    if not Path(recorded).is_dir():
        return None, f"the source checkpoint {recorded} is not on this machine; pass --checkpoint DIR"
    return Path(recorded), ""


def build_baselines(checkpoint: Path, scratch: Path, *, threads: int, providers: list[str],
                    encode: Callable[[list[str]], Feeds], max_length: int | None = None,
                    torch_device: str = "cpu", data_dir: Path | None = None) -> tuple[list[Runner], list[str]]:
    """(runners, notes): PyTorch eager first, then each dense ORT bundle the converter could build (one
    it refuses, e.g. an int8 model failing its verification, is left out with the reason in the notes)."""
    from ..convert import convert_checkpoint
    from ..runtime import Bundle

    runners, notes = [torch_runner(checkpoint, threads, encode, max_length, torch_device)], []
    for name, (quantize, description) in DENSE_BASELINES.items():
        try:
            # a baseline is measured, never shipped: its accuracy is reported, so conversion's accuracy
            # soundness limits must not keep it out of the comparison (export is still checked exactly); and
            # an int8-aware student converted to fp32 or per-tensor int8 here is the point, not a mistake
            out = convert_checkpoint(checkpoint, Path(scratch) / name, target=None, fmt="dense", quantize=quantize,
                                     structured=False, overwrite=True, data_dir=data_dir, eval_limit=64,
                                     progress=False, int8_min_agreement=0.0, int8_max_drop=1.0,
                                     warn_int8_mismatch=False)
        except EdgepruneError as exc:
            notes.append(f"baseline {name} not measured: the converter refused it ({exc})")
            continue
        bundle = Bundle.load(out, threads=threads, providers=providers)
        runners.append(bundle_runner(bundle, name, description))
    return runners, notes
