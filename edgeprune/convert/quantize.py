"""int8 through `onnxruntime.quantization`; the modes a bundle can ask for.

- `int8-dynamic`: int8 weights (MatMul, fused Attention, and the embedding Gathers), activations
  quantized at run time (DynamicQuantizeLinear + MatMulInteger). No calibration data needed.
- `int8-dynamic-per-channel`: the same with one scale per output channel (better accuracy when a
  pruned matrix has rows of very different magnitude).
- `int8-static`: activations calibrated on N training sentences, QDQ format, per-channel weights. It
  runs on the unfused graph: ORT's static quantizer cannot calibrate through the fused contrib ops.
"""

from __future__ import annotations

from pathlib import Path

MODES = ("none", "int8-dynamic", "int8-dynamic-per-channel", "int8-static")
INT8_OPS = {"MatMulInteger", "DynamicQuantizeLinear", "QAttention", "QEmbedLayerNormalization",
            "QLinearMatMul", "QuantizeLinear", "DequantizeLinear", "QGemm", "QLinearAdd"}


def needs_unfused(mode: str) -> bool:
    return mode == "int8-static"


def quantize(src: Path, dst: Path, mode: str, calibration_feeds: list[dict] | None = None,
             exclude: list[str] | None = None) -> dict:
    """Write the quantized model to `dst`; return what was done, for the manifest.

    `exclude`: node names left alone (the word-embedding lookup when it is stored in 4 bits instead)."""
    import logging

    logging.disable(logging.WARNING)  # "consider pre-processing" advice; accuracy is measured instead
    try:
        return _quantize(src, dst, mode, calibration_feeds, list(exclude or []))
    finally:
        logging.disable(logging.NOTSET)


def _quantize(src: Path, dst: Path, mode: str, calibration_feeds: list[dict] | None, exclude: list[str]) -> dict:
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic,
                                          quantize_static)

    # fused contrib ops carry no inferred types; their outputs are float
    extra = {"DefaultTensorType": onnx.TensorProto.FLOAT}
    if mode in ("int8-dynamic", "int8-dynamic-per-channel"):
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8,
                         per_channel=mode.endswith("per-channel"), nodes_to_exclude=exclude, extra_options=extra)
        return {"mode": mode, "weights": "int8 symmetric", "activations": "dynamic uint8",
                "per_channel": mode.endswith("per-channel")}
    if mode == "int8-static":
        feeds = list(calibration_feeds or [])

        class Reader(CalibrationDataReader):
            def __init__(self):
                self._it = iter(feeds)

            def get_next(self):
                return next(self._it, None)

        quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8, nodes_to_exclude=exclude,
                        extra_options=extra)
        return {"mode": mode, "weights": "int8 symmetric per-channel", "activations": "static uint8 (QDQ)",
                "per_channel": True, "calibration_batches": len(feeds)}
    raise ValueError(mode)


def int8_ops(path: Path) -> dict[str, int]:
    import collections

    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return dict(collections.Counter(n.op_type for n in model.graph.node if n.op_type in INT8_OPS))
