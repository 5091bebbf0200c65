"""training.quantize: the student trains through exactly the rounding the int8 bundle applies."""

import copy
import json

import numpy as np
import pytest
import torch

from conftest import tiny_bert, tiny_recipe_dict, tiny_tokenizer
from edgeprune.fake_int8 import Int8Aware, fake_quantize_activation, fake_quantize_weight
from edgeprune.recipe import recipe_from_dict

TEXTS = ["the movie was great and lovely", "bad awful dull film", "good fine",
         "the plot is very quite boring but charming acting", "tedious weak poor story"]


def _loud_tiny_bert():
    """Random weights scaled up so that int8 rounding moves the logits visibly (about 1e-2)."""
    model = tiny_bert(seed=3)
    with torch.no_grad():
        model.classifier.weight.mul_(30)
        for name, p in model.named_parameters():
            if p.dim() == 2 and "embeddings" not in name:
                p.mul_(3)
    return model


def _one_at_a_time(model, tok, texts):
    with torch.no_grad():
        return np.concatenate([model(**tok([t], return_tensors="pt")).logits.numpy() for t in texts])


@pytest.mark.parametrize("mode", ["int8-dynamic-per-channel", "int8-dynamic"])
def test_the_simulation_matches_onnxruntime_dynamic_int8_of_the_fused_graph(mode, tmp_path):
    import onnx

    from edgeprune.convert import optimize
    from edgeprune.convert import quantize as quant
    from edgeprune.convert.export import export_onnx
    from edgeprune.runtime import make_session  # noqa: F401 - the runtime's own ORT

    import onnxruntime as ort

    model, tok = _loud_tiny_bert(), tiny_tokenizer()
    fp32 = copy.deepcopy(model)
    export_onnx(model, tok, tmp_path / "e.onnx", TEXTS, 32)
    feeds = [{k: v.astype(np.int64) for k, v in tok([t], return_tensors="np").items()} for t in TEXTS]
    fused = optimize.optimize(tmp_path / "e.onnx", tmp_path / "f.onnx", feeds).path
    assert any(n.op_type == "EmbedLayerNormalization" for n in onnx.load(str(fused)).graph.node)
    quant.quantize(fused, tmp_path / "q.onnx", mode)  # convert's int8 with int8 embeddings (--embeddings same)
    ops = quant.int8_ops(tmp_path / "q.onnx")
    assert ops.get("MatMulInteger", 0) >= 6 and ops.get("QEmbedLayerNormalization") == 1
    session = ort.InferenceSession(str(tmp_path / "q.onnx"), providers=["CPUExecutionProvider"])
    bundle = np.concatenate([session.run(None, f)[0] for f in feeds])

    plain = _one_at_a_time(fp32, tok, TEXTS)
    Int8Aware(fp32, mode, word_table="int8")
    simulated = _one_at_a_time(fp32, tok, TEXTS)
    assert np.abs(plain - bundle).max() > 1e-3      # int8 does move these logits ...
    np.testing.assert_allclose(simulated, bundle, rtol=0, atol=1e-5)  # ... exactly as simulated


def test_a_padded_batch_rounds_each_sentence_as_alone_and_remove_restores_fp32():
    model, tok = _loud_tiny_bert(), tiny_tokenizer()
    plain = _one_at_a_time(model, tok, TEXTS)
    aware = Int8Aware(model, "int8-dynamic-per-channel")
    alone = _one_at_a_time(model, tok, TEXTS)
    with torch.no_grad():
        batched = model(**tok(TEXTS, padding=True, return_tensors="pt")).logits.numpy()
    np.testing.assert_allclose(batched, alone, rtol=0, atol=1e-5)  # padding does not widen any range
    assert np.abs(alone - plain).max() > 1e-3
    aware.remove()
    np.testing.assert_array_equal(_one_at_a_time(model, tok, TEXTS), plain)


def test_rounding_is_on_the_int8_grid_and_gradients_pass_straight_through():
    w = torch.randn(6, 10, requires_grad=True)
    with torch.no_grad():
        w[2] = 0.0  # a pruned row stays exactly zero
    q = fake_quantize_weight(w, per_channel=True)
    scale = w.detach().abs().amax(dim=1, keepdim=True) / 127
    steps = q.detach()[[0, 1, 3, 4, 5]] / scale[[0, 1, 3, 4, 5]]
    np.testing.assert_allclose(steps, steps.round(), atol=1e-4)
    assert not q.detach()[2].any()
    q.sum().backward()
    np.testing.assert_array_equal(w.grad.numpy(), np.ones((6, 10), dtype=np.float32))

    x = torch.randn(2, 5, 8, requires_grad=True)
    y = fake_quantize_activation(x)
    assert len(torch.unique(y.detach()[0])) <= 256 and not torch.equal(y.detach(), x.detach())
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), np.ones((2, 5, 8), dtype=np.float32))


@pytest.fixture(scope="module")
def int8_aware_checkpoint(tiny_model_dir, tiny_data_dir, tmp_path_factory):
    from edgeprune.train import train

    raw = tiny_recipe_dict(tiny_model_dir, tiny_data_dir, embeddings="int4", quantize="int8-dynamic-per-channel")
    out = tmp_path_factory.mktemp("int8-aware") / "ck"
    lines = []
    train(recipe_from_dict(raw), out, progress=False, report=lines.append)
    assert any(line.startswith("int8-aware:") for line in lines)
    return out


def test_the_kiosk_bundle_of_an_int8_aware_student_computes_what_it_trained(int8_aware_checkpoint, tmp_path):
    """Structured removal, fusion, int8 per channel and int4 embeddings: the bundle's logits are the
    trained network's own, rounding included, one sentence at a time as on the kiosk."""
    from edgeprune.checkpoint import load_checkpoint
    from edgeprune.convert import convert_checkpoint
    from edgeprune.runtime import Bundle

    out = convert_checkpoint(int8_aware_checkpoint, tmp_path / "b", quantize="int8-dynamic-per-channel",
                             embeddings="int4", progress=False, int8_min_agreement=0.5, int8_max_drop=1.0)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["structured"] and manifest["source"]["recipe"]["training"]["quantize"] == "int8-dynamic-per-channel"
    model, tok, _, _ = load_checkpoint(int8_aware_checkpoint)
    plain = _one_at_a_time(model, tok, TEXTS)
    Int8Aware(model, "int8-dynamic-per-channel", word_table="int4")
    trained = _one_at_a_time(model, tok, TEXTS)
    bundle = Bundle.load(out)
    got = np.concatenate([bundle.logits([t]) for t in TEXTS])
    np.testing.assert_allclose(got, trained, rtol=0, atol=1e-5)
    assert np.abs(got - plain).max() > np.abs(got - trained).max()


def test_converting_with_another_int8_than_the_one_trained_is_a_warning(int8_aware_checkpoint, tmp_path, capsys):
    from edgeprune.convert import convert_checkpoint

    convert_checkpoint(int8_aware_checkpoint, tmp_path / "t", quantize="int8-dynamic", embeddings="int4",
                       progress=False, int8_min_agreement=0.5, int8_max_drop=1.0)
    assert "trained through int8-dynamic-per-channel rounding but is converted with int8-dynamic" in \
        capsys.readouterr().err
    convert_checkpoint(int8_aware_checkpoint, tmp_path / "c", quantize="int8-dynamic-per-channel",
                       embeddings="int4", progress=False, int8_min_agreement=0.5, int8_max_drop=1.0)
    assert "trained through" not in capsys.readouterr().err


def test_bench_baselines_of_an_int8_aware_checkpoint_raise_no_false_alarm(int8_aware_checkpoint, tmp_path, capsys):
    """Bench's dense fp32 / per-tensor int8 baselines convert the student with another mode on purpose."""
    from edgeprune.bench.baselines import DENSE_BASELINES, build_baselines
    from edgeprune.checkpoint import load_classifier_folder

    _, tok = load_classifier_folder(int8_aware_checkpoint)
    encode = lambda texts: {k: v.astype(np.int64) for k, v in tok(texts, return_tensors="np").items()}  # noqa: E731
    runners, notes = build_baselines(int8_aware_checkpoint, tmp_path, threads=1, providers=["CPUExecutionProvider"],
                                     encode=encode, max_length=16)
    assert len(runners) == 1 + len(DENSE_BASELINES) and not notes
    assert "trained through" not in capsys.readouterr().err
