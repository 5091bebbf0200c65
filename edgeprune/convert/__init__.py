"""checkpoint -> kiosk bundle. `convert_checkpoint` is the API; the stages live in small modules:
structure (head/neuron removal), export, optimize (ORT fusions), quantize, embeddings (4-bit word
table), formats, verify, bundle.

Importing this package stays cheap (no torch/onnx): the runtime reads `formats` from here.
"""

from __future__ import annotations

from pathlib import Path


def convert_checkpoint(checkpoint_dir, out_dir, *, target=None, fmt=None, quantize=None, structured=True,
                       overwrite=False, data_dir=None, eval_limit=None, progress=True,
                       int8_min_agreement=None, int8_max_drop=None, vocabulary=None,
                       embeddings=None, warn_int8_mismatch=True) -> Path:
    """Turn a pruned checkpoint into a verified bundle; see `edgeprune.convert.pipeline`."""
    from .pipeline import convert_checkpoint as run

    return run(checkpoint_dir, out_dir, target=target, fmt=fmt, quantize=quantize, structured=structured,
               overwrite=overwrite, data_dir=data_dir, eval_limit=eval_limit, progress=progress,
               int8_min_agreement=int8_min_agreement, int8_max_drop=int8_max_drop, vocabulary=vocabulary,
               embeddings=embeddings, warn_int8_mismatch=warn_int8_mismatch)


__all__ = ["convert_checkpoint"]
