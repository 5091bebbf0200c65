"""4-bit word embeddings: keep the whole vocabulary in a fraction of int8's bytes.

The word-embedding table is most of a pruned MiniLM's bytes (30522 x 384: 11.7 MB even in int8), and
trimming the vocabulary instead changes how unseen words are split, which costs accuracy. ONNX Runtime
serves a block-quantized table directly (`GatherBlockQuantized`, com.microsoft): 4-bit values with one
scale and zero point per block of `BLOCK_SIZE` hidden units, so only the looked-up rows are dequantized and
the full-precision table never exists in memory.

`GatherBlockQuantized` itself is slow on CPU, though: on the kiosk student it took ~0.12 ms of a ~1 ms
sentence (onnxruntime 1.32, 2 threads, 25 tokens), four times a plain fp32 Gather. So `unpack_gather`
rewrites it into stock ops over the same values: a uint8 Gather of packed nibble pairs (hidden unit j in
the low nibble, j + hidden/2 in the high one, so unpacking is an And, a Shift and a Concat, no
interleave), Gathers of the looked-up rows' scales and zero points, and a blocked `DequantizeLinear`
(opset 21). Same bytes to within the zero points (stored one per byte), same values exactly, and the
embedding front end measured 58 against 141 us.

ORT's BERT fusion folds the lookup into `EmbedLayerNormalization`, which takes the table as a plain float
(or int8) input. `unfuse_embeddings` rewrites that one node back into its parts (word/position/segment
Gathers, Adds, LayerNormalization, and the mask's per-row length that the fused Attention reads) so the
word Gather can be quantized by onnxruntime's own `MatMulNBitsQuantizer`. The rewrite is exact; convert
verifies it against the fused graph before quantizing.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ModelError
from ..int4 import BITS, BLOCK_SIZE  # the grid train can snap a student's table onto (edgeprune.int4)

PREFIX = "edgeprune/embeddings/"
WORD_GATHER = PREFIX + "word_gather"


def _is_word_table(name: str) -> bool:
    return "word_embeddings" in name


def unfuse_embeddings(model) -> str:
    """Rewrite `EmbedLayerNormalization` into plain ops, in place; return the word Gather's node name.

    A graph without the fused node (unfused export) is searched for its word-embedding Gather instead."""
    from onnx import TensorProto, helper

    graph = model.graph
    fused = [i for i, n in enumerate(graph.node) if n.op_type == "EmbedLayerNormalization"]
    if not fused:
        inits = {t.name for t in graph.initializer}
        plain = [n for n in graph.node if n.op_type == "Gather" and n.input[0] in inits and _is_word_table(n.input[0])]
        if len(plain) != 1:
            raise ModelError(f"found {len(plain)} word-embedding lookups in the graph, expected 1",
                             "convert with --embeddings same for this architecture")
        return plain[0].name
    if len(fused) > 1:
        raise ModelError("the graph has more than one EmbedLayerNormalization", "convert with --embeddings same")
    index = fused[0]
    node = graph.node[index]
    ids, segment_ids, word, position, segment, gamma, beta, mask, position_ids = \
        (list(node.input) + [""] * 9)[:9]
    epsilon = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-12)
    outputs = list(node.output) + ["", ""]
    p = PREFIX
    graph.initializer.extend([helper.make_tensor(p + "zero", TensorProto.INT64, [], [0]),
                              helper.make_tensor(p + "one", TensorProto.INT64, [], [1]),
                              helper.make_tensor(p + "axis1", TensorProto.INT64, [1], [1])])
    nodes = [helper.make_node("Gather", [word, ids], [p + "word"], name=WORD_GATHER)]
    if not position_ids:  # positions 0..S-1, broadcast over the batch
        nodes += [helper.make_node("Shape", [ids], [p + "shape"], name=p + "shape"),
                  helper.make_node("Gather", [p + "shape", p + "one"], [p + "length"], name=p + "length", axis=0),
                  helper.make_node("Range", [p + "zero", p + "length", p + "one"], [p + "positions"],
                                   name=p + "positions")]
        position_ids = p + "positions"
    nodes += [helper.make_node("Gather", [position, position_ids], [p + "position"], name=p + "position_gather"),
              helper.make_node("Add", [p + "word", p + "position"], [p + "sum"], name=p + "add_position")]
    total = p + "sum"
    if segment and segment_ids:
        nodes += [helper.make_node("Gather", [segment, segment_ids], [p + "segment"], name=p + "segment_gather"),
                  helper.make_node("Add", [total, p + "segment"], [p + "sum_segment"], name=p + "add_segment")]
        total = p + "sum_segment"
    nodes.append(helper.make_node("LayerNormalization", [total, gamma, beta], [outputs[0]], name=p + "layer_norm",
                                  axis=-1, epsilon=epsilon))
    if outputs[1]:  # mask_index: real tokens per row, what the fused Attention expects
        if not mask:
            raise ModelError("EmbedLayerNormalization returns a mask index without a mask input",
                             "convert with --embeddings same")
        nodes.append(helper.make_node("ReduceSum", [mask, p + "axis1"], [outputs[1]], name=p + "mask_index",
                                      keepdims=0))
    if outputs[2]:
        nodes.append(helper.make_node("Identity", [total], [outputs[2]], name=p + "embedding_sum"))
    del graph.node[index]
    for offset, new in enumerate(nodes):
        graph.node.insert(index + offset, new)
    return WORD_GATHER


def quantize_word_embeddings(src: Path, dst: Path, word_gather: str, block_size: int = BLOCK_SIZE,
                             unpack: bool = True) -> dict:
    """Replace the word Gather in `src` by onnxruntime's 4-bit `GatherBlockQuantized`, then (`unpack`, the
    CPU default) by the same values in stock ops (`unpack_gather`); write `dst`; say what was done. GPU
    targets keep the contrib op: the CPU measurement behind the rewrite says nothing about CUDA kernels."""
    import logging

    import numpy as np
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer

    model = onnx.load(str(src))
    others = [n.name for n in model.graph.node if n.name != word_gather]
    gather = next((n for n in model.graph.node if n.name == word_gather), None)
    table = next((t for t in model.graph.initializer if gather is not None and t.name == gather.input[0]), None)
    if table is None:
        raise ModelError(f"the graph has no word-embedding lookup {word_gather!r} on a stored table",
                         "convert with --embeddings same")
    from ..int4 import round_trip

    values = onnx.numpy_helper.to_array(table)
    # 0 when train snapped the table (training.embeddings: int4): the kiosk then holds what was trained
    rounding = float(np.abs(round_trip(values, block_size) - values).max()) if values.size else 0.0
    config = DefaultWeightOnlyQuantConfig(block_size=block_size, is_symmetric=False, bits=BITS,
                                          op_types_to_quantize=("Gather",), quant_axes=(("Gather", 1),))
    # the quantizer logs one line per node it skips, warns that int4 needs IR 10 (it upgrades), and
    # divides by the zero scale of an all-zero block before choosing the fallback for it
    logging.disable(logging.WARNING)
    try:
        with np.errstate(divide="ignore", invalid="ignore"):
            quantizer = MatMulNBitsQuantizer(model, nodes_to_exclude=others, algo_config=config)
            quantizer.process()
    finally:
        logging.disable(logging.NOTSET)
    quantized = quantizer.model.model
    if not any(n.op_type == "GatherBlockQuantized" for n in quantized.graph.node):
        raise ModelError("onnxruntime did not quantize the word embeddings", "convert with --embeddings same")
    unpacked = unpack and unpack_gather(quantized)
    onnx.save(quantized, str(dst))
    return {"mode": "int4", "bits": BITS, "block_size": block_size, "symmetric": False,
            "op": UNPACKED_OP if unpacked else "GatherBlockQuantized",
            "quantizer": "onnxruntime MatMulNBitsQuantizer", "max_rounding": rounding}


UNPACKED_OP = "Gather+DequantizeLinear (4-bit pairs in uint8, blocked)"
PAIRS_SUFFIX = "_Q4_pairs"  # an initializer holding two 4-bit levels per byte (store_tensors records it as uint4)


def unpack_gather(model) -> bool:
    """Replace the one `GatherBlockQuantized` in `model` by stock ops over the same 4-bit values, in place
    (see the module docstring for why); False, and the graph untouched, for a table of odd width, which has
    no nibble pairs (the contrib op then serves it). The graph must be opset 21, as the quantizer leaves it."""
    import numpy as np
    from onnx import helper, numpy_helper

    graph = model.graph
    found = [(i, n) for i, n in enumerate(graph.node) if n.op_type == "GatherBlockQuantized"]
    if len(found) != 1:
        raise ModelError(f"expected one 4-bit embedding lookup, found {len(found)}", "convert with --embeddings same")
    index, node = found[0]
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    block = int(attrs.get("block_size", 128))
    if attrs.get("gather_axis", 0) != 0 or attrs.get("quantize_axis", 1) != 1 or attrs.get("bits", 4) != 4 \
            or len(node.input) < 4:
        raise ModelError(f"unexpected 4-bit lookup layout {attrs}", "convert with --embeddings same")
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < 21:
        raise ModelError(f"blocked DequantizeLinear needs opset 21, the graph is opset {opset}",
                         "convert with --embeddings same")
    inits = {t.name: t for t in graph.initializer}
    table_name, ids, scales_name, zeros_name = node.input[:4]
    width = int(inits[table_name].dims[1])
    if width % 2:
        return False
    values = numpy_helper.to_array(inits[table_name]).astype(np.uint8)
    zeros = numpy_helper.to_array(inits[zeros_name]).astype(np.uint8)
    half = width // 2
    packed = (values[:, :half] | (values[:, half:] << 4)).astype(np.uint8)
    p = PREFIX + "word_"
    pairs_name = table_name.removesuffix("_Q4") + PAIRS_SUFFIX
    new_inits = [numpy_helper.from_array(packed, pairs_name), numpy_helper.from_array(zeros, p + "zero_points"),
                 numpy_helper.from_array(np.array(0x0F, np.uint8), p + "low_mask"),
                 numpy_helper.from_array(np.array(4, np.uint8), p + "shift")]
    nodes = [helper.make_node("Gather", [pairs_name, ids], [p + "pairs"], name=p + "gather_pairs", axis=0),
             helper.make_node("BitwiseAnd", [p + "pairs", p + "low_mask"], [p + "low"], name=p + "low"),
             helper.make_node("BitShift", [p + "pairs", p + "shift"], [p + "high"], name=p + "high",
                              direction="RIGHT"),
             helper.make_node("Concat", [p + "low", p + "high"], [p + "levels"], name=p + "levels", axis=-1),
             helper.make_node("Gather", [scales_name, ids], [p + "scales"], name=p + "gather_scales", axis=0),
             helper.make_node("Gather", [p + "zero_points", ids], [p + "zeros"], name=p + "gather_zeros", axis=0),
             helper.make_node("DequantizeLinear", [p + "levels", p + "scales", p + "zeros"], list(node.output[:1]),
                              name=p + "dequantize", axis=-1, block_size=block)]
    del graph.node[index]
    for offset, new in enumerate(nodes):
        graph.node.insert(index + offset, new)
    keep = [t for t in graph.initializer if t.name not in (table_name, zeros_name)]
    del graph.initializer[:]
    graph.initializer.extend(keep + new_inits)
    return True
