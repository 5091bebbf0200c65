"""onnxruntime's transformer graph fusions (attention, LayerNorm, GELU), kept only where they verify.

`num_heads=0, hidden_size=0` makes the fusion read each layer's head count from its own Reshape (the
export writes explicit per-layer counts), which is what a model with heads pruned unevenly needs.

On CPU the residual Add and LayerNorm stay two ops: onnxruntime's CPU `SkipLayerNormalization` kernel
measured slower than the Add + `LayerNormalization` it replaces, and the gap grows with the sentence
(onnxruntime 1.32, 2 threads, hidden 384: 41 against 23 us at 25 tokens, 82 against 36 us at 64). Two
fusions make that op, so two switches keep it out: this offline optimizer's (`skip_layer_norm=False`)
and onnxruntime's own at session load (`SkipLayerNormFusion`), which the bundle's manifest asks the
runtime to disable (`CPU_DISABLED_OPTIMIZERS`, read by `edgeprune.runtime.make_session`). In one
interleaved run on the kiosk student (4-bit lookup already by stock ops) turning off the session-level
fusion as well took p50 from 0.89 to 0.72 ms, and ORT fp32 dense's from 3.61 to 3.35 ms.
GPU targets keep the fused op. Attention, GELU and embedding fusions are unaffected. A
fused graph that does not reproduce the unfused one within `ATOL` (relative to the logits' size beyond
1, `verify.logit_tolerance`) is thrown away and the unfused graph is used; the manifest records which
happened and why.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .verify import logit_tolerance

ATOL = 1e-4
CPU_DISABLED_OPTIMIZERS = ("SkipLayerNormFusion",)  # onnxruntime session-level fusions a CPU bundle turns off


def runtime_config(gpu: bool) -> dict:
    """The manifest's `runtime` section: what the runtime must set up for the graph convert measured."""
    return {} if gpu else {"disabled_optimizers": list(CPU_DISABLED_OPTIMIZERS)}


@dataclass
class OptimizeResult:
    path: Path
    fused: bool
    fused_ops: dict[str, int] = field(default_factory=dict)
    max_abs_diff: float | None = None
    reason: str = ""

    def to_json(self) -> dict:
        return {"fused": self.fused, "fused_ops": self.fused_ops, "max_abs_diff": self.max_abs_diff,
                "atol": ATOL, "reason": self.reason}


def run_logits(path_or_session, feeds: list[dict]) -> list[np.ndarray]:
    import onnxruntime as ort

    sess = path_or_session
    if not isinstance(sess, ort.InferenceSession):
        sess = ort.InferenceSession(str(path_or_session), providers=["CPUExecutionProvider"])
    names = {i.name for i in sess.get_inputs()}
    return [sess.run(None, {k: v for k, v in f.items() if k in names})[0] for f in feeds]


def optimize(src: Path, dst: Path, feeds: list[dict], model_type: str = "bert",
             skip_layer_norm: bool = False) -> OptimizeResult:
    from onnxruntime.transformers import optimizer
    from onnxruntime.transformers.fusion_options import FusionOptions

    options = FusionOptions(model_type)
    options.enable_skip_layer_norm = skip_layer_norm
    options.enable_bias_skip_layer_norm = skip_layer_norm

    # ORT's fusion modules log under bare names (fusion_attention, ...), warning about the per-layer
    # head counts that are exactly what we want; the verification below is the real check
    logging.disable(logging.WARNING)
    try:
        model = optimizer.optimize_model(str(src), model_type=model_type, num_heads=0, hidden_size=0,
                                         opt_level=0, use_gpu=False, optimization_options=options)
        stats = {k: int(v) for k, v in model.get_fused_operator_statistics().items() if v}
        model.save_model_to_file(str(dst))
    except Exception as exc:  # noqa: BLE001 - any fusion failure means: ship the unfused graph
        return OptimizeResult(Path(src), False, reason=f"fusion failed: {type(exc).__name__}: {exc}"[:300])
    finally:
        logging.disable(logging.NOTSET)
    try:
        unfused = run_logits(src, feeds)
        diff = max(float(np.abs(a - b).max()) for a, b in zip(unfused, run_logits(dst, feeds)))
    except Exception as exc:  # noqa: BLE001
        return OptimizeResult(Path(src), False, stats,
                              reason=f"fused graph does not run: {type(exc).__name__}: {exc}"[:300])
    tolerance = logit_tolerance(unfused, ATOL)
    if not diff <= tolerance:
        return OptimizeResult(Path(src), False, stats, diff,
                              reason=f"fused graph differs from unfused by {diff:.3g} > {tolerance:.3g} "
                                     f"({ATOL:g} x max(1, |logit|))")
    return OptimizeResult(Path(dst), True, stats, diff, reason="fused graph verified")
