"""4-bit word embeddings: the fused embedding node is unfused exactly, the table is stored in 4-bit blocks,
and the bundle still runs (torch-free runtime) with the labels verified."""

import json

import numpy as np
import onnx
import pytest

from convert_fixtures import make_checkpoint
from edgeprune.convert import convert_checkpoint
from edgeprune.convert.options import ConvertOptionError, resolve_options
from edgeprune.runtime import Bundle


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("emb") / "ck", heads={0: [1]}, neurons={1: [0, 5]})


def _ops(bundle):
    return [n.op_type for n in onnx.load(str(bundle / "model.onnx"), load_external_data=False).graph.node]


def _word_record(bundle):
    manifest = json.loads((bundle / "manifest.json").read_text())
    from edgeprune.convert.embeddings import PAIRS_SUFFIX

    word = [t for t in manifest["tensors"] if t["name"].endswith(PAIRS_SUFFIX)
            or ("word_embeddings.weight" in t["name"] and not t["name"].endswith(("_scale", "_scales", "_zero_points")))]
    assert len(word) == 1, [t["name"] for t in manifest["tensors"]]
    return manifest, word[0]


@pytest.mark.parametrize("quantize", ["none", "int8-dynamic"])
def test_int4_embeddings_bundle_is_verified_and_smaller(ckpt, tmp_path, quantize):
    same = convert_checkpoint(ckpt, tmp_path / "same", quantize=quantize, progress=False,
                              int8_min_agreement=0.5, int8_max_drop=1.0)
    int4 = convert_checkpoint(ckpt, tmp_path / "int4", quantize=quantize, embeddings="int4", progress=False,
                              int8_min_agreement=0.5, int8_max_drop=1.0)
    ops = _ops(int4)
    assert "GatherBlockQuantized" not in ops and "DequantizeLinear" in ops  # stock ops (see unpack_gather)
    assert "EmbedLayerNormalization" not in ops and "QEmbedLayerNormalization" not in ops
    manifest, word = _word_record(int4)
    _, word_same = _word_record(same)
    assert word["dtype"] == "uint4" and word["bytes"] == (int(np.prod(word["shape"])) + 1) // 2
    assert word["bytes"] < word_same["bytes"] / 1.9   # half of int8, an eighth of fp32
    assert manifest["quantization"]["embeddings"]["bits"] == 4
    checks = {c["name"]: c for c in manifest["verification"]["checks"]}
    unfused = checks["embeddings unfused (fp32)"]
    assert unfused["passed"] and unfused["max_abs_diff"] <= 1e-4  # the rewrite is the same maths
    assert any(name.startswith("bundle (") and "int4 embeddings" in name for name in checks)
    sentences = ["the film was great", "a dull , boring story that never ends"]
    a, b = Bundle.load(same).predict(sentences), Bundle.load(int4).predict(sentences)
    assert np.abs(np.array([p.scores for p in a]) - np.array([p.scores for p in b])).max() < 0.2
    from edgeprune.cli import main

    assert main(["inspect", str(int4)]) == 0  # 4-bit tables carry no zero share: shown as "-"


def test_unfused_embeddings_reproduce_the_fused_node_with_padding(ckpt, tmp_path):
    """Rows of different lengths: positions, segments and the mask index (real tokens per row) must all
    match the fused EmbedLayerNormalization."""
    import onnxruntime as ort

    from edgeprune.checkpoint import load_checkpoint
    from edgeprune.convert.embeddings import WORD_GATHER, unfuse_embeddings
    from edgeprune.convert.export import export_onnx
    from edgeprune.convert.optimize import optimize
    from edgeprune.layout import encoder_layout

    model, tokenizer, _, _ = load_checkpoint(ckpt)
    texts = ["great", "a dull story that goes on and on", "the film"]
    export_onnx(model, tokenizer, tmp_path / "export.onnx", texts, 32, encoder_layout(model))
    enc = tokenizer(texts, padding=True, return_tensors="np")
    feeds = {k: enc[k].astype(np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")}
    fused = optimize(tmp_path / "export.onnx", tmp_path / "fused.onnx", [feeds])
    graph = onnx.load(str(fused.path))
    assert "EmbedLayerNormalization" in [n.op_type for n in graph.graph.node]
    assert "SkipLayerNormalization" not in [n.op_type for n in graph.graph.node]  # CPU default
    gpu = optimize(tmp_path / "export.onnx", tmp_path / "fused-gpu.onnx", [feeds], skip_layer_norm=True)
    assert "SkipLayerNormalization" in [n.op_type for n in onnx.load(str(gpu.path)).graph.node]
    assert unfuse_embeddings(graph) == WORD_GATHER
    assert "EmbedLayerNormalization" not in [n.op_type for n in graph.graph.node]
    onnx.save(graph, str(tmp_path / "unfused.onnx"))
    run = lambda p: ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    assert np.abs(run(fused.path) - run(tmp_path / "unfused.onnx")).max() <= 1e-5


def test_embeddings_option_is_validated_and_taken_from_the_target():
    from edgeprune.targets import TargetError, resolve_target

    with pytest.raises(ConvertOptionError, match="embeddings"):
        resolve_options(None, None, None, embeddings="int2")
    kiosk = resolve_target("cpu-kiosk")
    assert resolve_options(kiosk, None, None).embeddings == kiosk.embeddings
    assert resolve_options(kiosk, None, None, embeddings="same").embeddings == "same"
    from edgeprune.targets import TargetProfile

    with pytest.raises(TargetError, match="embeddings"):
        TargetProfile.from_dict({**kiosk.to_dict(), "embeddings": "int3"})


def test_unpacked_lookup_gives_exactly_the_block_quantized_rows(tmp_path):
    """unpack_gather swaps GatherBlockQuantized for stock ops: the same values, bit for bit, for a batch of
    rows of any id, including the last row and a repeated id."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from edgeprune.convert.embeddings import PAIRS_SUFFIX, quantize_word_embeddings, unpack_gather

    rng = np.random.default_rng(0)
    table = rng.normal(size=(50, 256)).astype(np.float32)
    ids = helper.make_tensor_value_info("ids", TensorProto.INT64, ["b", "s"])
    out = helper.make_tensor_value_info("rows", TensorProto.FLOAT, ["b", "s", 256])
    graph = helper.make_graph([helper.make_node("Gather", ["word_embeddings.weight", "ids"], ["rows"], name="g")],
                              "lookup", [ids], [out], [numpy_helper.from_array(table, "word_embeddings.weight")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "plain.onnx"))
    quantize_word_embeddings(tmp_path / "plain.onnx", tmp_path / "unpacked.onnx", "g")
    # the same quantizer's output before the rewrite, as onnxruntime serves it
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer

    config = DefaultWeightOnlyQuantConfig(block_size=64, is_symmetric=False, bits=4,
                                          op_types_to_quantize=("Gather",), quant_axes=(("Gather", 1),))
    quantizer = MatMulNBitsQuantizer(onnx.load(str(tmp_path / "plain.onnx")), algo_config=config)
    quantizer.process()
    blocked = quantizer.model.model
    assert "GatherBlockQuantized" in [n.op_type for n in blocked.graph.node]
    onnx.save(blocked, str(tmp_path / "blocked.onnx"))
    unpacked = onnx.load(str(tmp_path / "unpacked.onnx"))
    assert "GatherBlockQuantized" not in [n.op_type for n in unpacked.graph.node]
    pairs = next(t for t in unpacked.graph.initializer if t.name.endswith(PAIRS_SUFFIX))
    assert list(pairs.dims) == [50, 128] and pairs.data_type == TensorProto.UINT8
    feeds = {"ids": np.array([[0, 49, 7, 7], [3, 1, 2, 48]], np.int64)}
    run = lambda p: ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    expected, got = run(tmp_path / "blocked.onnx"), run(tmp_path / "unpacked.onnx")
    assert got.shape == (2, 4, 256) and np.array_equal(got, expected)
    assert np.abs(got - table[feeds["ids"]]).max() < 0.5  # and it is the table, to 4-bit rounding
    with pytest.raises(Exception, match="one 4-bit embedding lookup"):
        unpack_gather(unpacked)  # nothing left to rewrite: refused, not silently passed


def test_cpu_bundles_keep_residual_add_and_layernorm_apart(ckpt, tmp_path):
    """onnxruntime's CPU SkipLayerNormalization is slower than the Add + LayerNormalization it fuses
    (convert.optimize), so a CPU bundle keeps them apart; attention is still fused."""
    bundle = convert_checkpoint(ckpt, tmp_path / "b", quantize="none", progress=False)
    ops = _ops(bundle)
    assert "SkipLayerNormalization" not in ops and "LayerNormalization" in ops and "Attention" in ops


def test_gpu_bundles_keep_the_fused_ops_and_ask_the_runtime_for_nothing(ckpt, tmp_path):
    """The two CPU rewrites rest on CPU kernel timings: a GPU target keeps GatherBlockQuantized and
    SkipLayerNormalization, and its manifest turns no onnxruntime optimizer off."""
    bundle = convert_checkpoint(ckpt, tmp_path / "gpu", target="ampere-gpu", quantize="none", embeddings="int4",
                                progress=False, int8_min_agreement=0.5, int8_max_drop=1.0)
    ops = _ops(bundle)
    assert "GatherBlockQuantized" in ops and "SkipLayerNormalization" in ops
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["runtime"] == {} and manifest["quantization"]["embeddings"]["op"] == "GatherBlockQuantized"
    assert _word_record(bundle)[1]["dtype"] == "uint4"
