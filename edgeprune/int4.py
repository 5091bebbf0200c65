"""The 4-bit grid word embeddings are stored on, shared by train and convert.

convert stores the word table with onnxruntime's block quantizer (asymmetric, 4 bits, one scale and zero
point per block of `BLOCK_SIZE` hidden units). Rounding a table the network never saw costs accuracy: on
the kiosk student (SST-2 dev, scored one sentence at a time, int8 per tensor elsewhere) 0.8956 with int8
embeddings against 0.8865 with the table rounded to 4 bits after training. So train can snap the
table onto exactly that grid before the student trains and freeze it there: the rest of the network
learns around the values the kiosk will hold, and convert's quantizer then finds every value already on
its grid (re-quantizing a snapped block gives back the same scale, zero point and values).

The grid is onnxruntime's own `quant_slice_asymmetric`, not a copy of it, so the two cannot drift apart.
The grid needs only numpy and onnxruntime; `snap_and_freeze_word_embeddings` takes a torch model.
"""

from __future__ import annotations

import numpy as np

BLOCK_SIZE = 64  # blocks of 32 measured no more accurate on SST-2 and cost 0.8 MB more (scales are fp32)
BITS = 4
MAX_PASSES = 16
FIXED_POINT_ATOL = 1e-6  # float rounding of (q - zero) * scale; a 4-bit step is ~1e-2 on MiniLM's table


def round_trip(table: np.ndarray, block_size: int = BLOCK_SIZE) -> np.ndarray:
    """`table` (rows x hidden) as convert's quantizer stores it, dequantized: one pass of onnxruntime's
    asymmetric 4-bit rounding in blocks along the hidden axis. A block of zeros stays zero."""
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantizer

    table = np.asarray(table, dtype=np.float32)
    if table.ndim != 2:
        raise ValueError(f"expected a 2-D embedding table, got shape {table.shape}")
    out = np.empty_like(table)
    with np.errstate(divide="ignore", invalid="ignore"):  # an all-zero block divides by its zero scale
        for start in range(0, table.shape[1], block_size):
            q, scale, zero = DefaultWeightOnlyQuantizer.quant_slice_asymmetric(table[:, start:start + block_size])
            out[:, start:start + block_size] = (q.astype(np.float32) - zero.astype(np.float32)) * scale
    return out


def snap_to_grid(table: np.ndarray, block_size: int = BLOCK_SIZE) -> np.ndarray:
    """The nearest table convert's quantizer stores unchanged: `round_trip` repeated to a fixed point.

    One pass is not always enough: a block whose range straddles zero evenly (zero point 7.5) rounds to
    levels 0..14, and the quantizer would then pick a smaller scale for it a second time (105 of MiniLM's
    11.7M values moved by up to 0.011 that way). Two or three passes settle every block."""
    out = round_trip(table, block_size)
    for _ in range(MAX_PASSES):
        again = round_trip(out, block_size)
        if np.allclose(again, out, rtol=0, atol=FIXED_POINT_ATOL):
            return out
        out = again
    raise ValueError(f"the 4-bit grid did not settle within {MAX_PASSES} passes")


def is_on_grid(table: np.ndarray, block_size: int = BLOCK_SIZE, atol: float = FIXED_POINT_ATOL) -> bool:
    """Whether convert's 4-bit quantizer would store `table` without changing it (beyond float rounding)."""
    table = np.asarray(table, dtype=np.float32)
    return bool(np.allclose(round_trip(table, block_size), table, rtol=0, atol=atol))


def snap_and_freeze_word_embeddings(model, block_size: int = BLOCK_SIZE) -> float:
    """Snap a transformers model's word-embedding table onto the grid and stop it training; returns the
    largest change made (float rounding only when it was on the grid already). On resume the base model
    is snapped the same way and the Trainer then loads the checkpoint's table, which is that very table.

    Frozen, not fake-quantized: a table that kept training would leave the grid again, and the rounding
    convert then applies is what this exists to take out of the kiosk's accuracy."""
    import torch

    from .errors import ModelError

    try:
        module = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    except NotImplementedError:
        module = None
    weight = getattr(module, "weight", None)
    if weight is None or weight.dim() != 2:
        raise ModelError(f"model {type(model).__name__} has no 2-D word-embedding table to snap to 4 bits",
                         "set training.embeddings: train for this model")
    before = weight.detach().cpu().float().numpy()
    snapped = snap_to_grid(before, block_size)
    with torch.no_grad():
        weight.copy_(torch.from_numpy(snapped))
    weight.requires_grad_(False)
    return float(np.abs(snapped - before).max()) if before.size else 0.0
