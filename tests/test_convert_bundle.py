import json

import numpy as np
import pytest
import torch

from convert_fixtures import SENTENCES, dense_bundle, make_checkpoint, structured_ckpt  # noqa: F401
from edgeprune.checkpoint import load_checkpoint
from edgeprune.convert import convert_checkpoint
from edgeprune.errors import OutputExistsError, VerificationError
from edgeprune.hashing import sha256_file
from edgeprune.runtime import Bundle, bundle_digest


def checkpoint_logits(ckpt, texts):
    model, tok, _, _ = load_checkpoint(ckpt)
    with torch.no_grad():
        return model(**tok(texts, padding=True, return_tensors="pt")).logits.numpy()


def manifest(path):
    return json.loads((path / "manifest.json").read_text())


def test_bundle_matches_checkpoint_and_describes_itself(dense_bundle, structured_ckpt):
    b = Bundle.load(dense_bundle)
    np.testing.assert_allclose(b.logits(SENTENCES), checkpoint_logits(structured_ckpt, SENTENCES), atol=1e-4)
    m = b.manifest
    assert m["schema_version"] == 1 and m["labels"] == ["negative", "positive"] and m["max_length"] == 32
    assert [(s["heads_kept"], s["neurons_kept"]) for s in m["structure"]] == [(2, 0), (0, 34)]
    assert m["verification"]["passed"] and m["accuracy"]["measured"] and m["measured"] == {}
    assert m["optimization"]["fused"] and m["optimization"]["fused_ops"].get("Attention") == 1
    assert "manifest.json" not in m["files"] and {"model.onnx", "tokenizer.json"} <= set(m["files"])
    for name, entry in m["files"].items():
        assert sha256_file(dense_bundle / name) == entry["sha256"]
    assert all(t["form"] == "dense" for t in m["tensors"])
    assert bundle_digest(m) == b.digest
    preds = b.predict(SENTENCES, batch_size=5)
    assert len(preds) == len(SENTENCES) and all(abs(sum(p.scores) - 1) < 1e-6 for p in preds)
    assert [p.label_id for p in preds] == list(checkpoint_logits(structured_ckpt, SENTENCES).argmax(-1))


def test_unstructured_keeps_dense_shapes(tmp_path, structured_ckpt):
    out = convert_checkpoint(structured_ckpt, tmp_path / "b", structured=False, progress=False)
    m = manifest(out)
    assert m["structure"] == [] and not m["structured"]
    np.testing.assert_allclose(Bundle.load(out).logits(SENTENCES),
                               checkpoint_logits(structured_ckpt, SENTENCES), atol=1e-4)


@pytest.mark.parametrize("mode,ops", [("int8-dynamic", {"MatMulInteger", "DynamicQuantizeLinear"}),
                                      ("int8-dynamic-per-channel", {"MatMulInteger"}),
                                      ("int8-static", {"QuantizeLinear", "DequantizeLinear"})])
def test_int8_bundles_hold_int8_ops_and_agree_on_labels(tmp_path, structured_ckpt, mode, ops):
    out = convert_checkpoint(structured_ckpt, tmp_path / mode, quantize=mode, progress=False)
    m = manifest(out)
    assert ops <= set(m["quantization"]["int8_ops"])
    labels = [c for c in m["verification"]["checks"] if "agree" in c["detail"]]
    assert labels and labels[0]["label_agreement"] >= 0.9
    assert m["accuracy"]["int8"] is not None and m["accuracy"]["fp32"] is not None
    int8_weights = [t for t in m["tensors"] if t["dtype"] in ("int8", "uint8")]
    assert int8_weights, "weights should be stored as int8"
    assert any("embeddings" in t["name"] for t in int8_weights), "embeddings are quantized too"


def test_sparse_forms_are_chosen_per_tensor_and_load(tmp_path):
    name = "bert.encoder.layer.0.intermediate.dense.weight"
    ck = make_checkpoint(tmp_path / "ck", magnitude={name: 0.9, "bert.encoder.layer.1.output.dense.weight": 0.5})
    ref = checkpoint_logits(ck, SENTENCES)
    for fmt, storage in (("csr", "weights.sparse.npz"), ("coo", "sparse_initializer")):
        out = convert_checkpoint(ck, tmp_path / fmt, fmt=fmt, progress=False)
        m = manifest(out)
        chosen = {t["form"] for t in m["tensors"]}
        assert fmt in chosen and "dense" in chosen  # dense weights stay dense
        sparse = [t for t in m["tensors"] if t["form"] == fmt]
        assert all(t["bytes"] < t["dense_bytes"] and t["storage"] == storage for t in sparse)
        np.testing.assert_allclose(Bundle.load(out).logits(SENTENCES), ref, atol=1e-4)
        assert any("download size" in n for n in m["notes"])
    assert (tmp_path / "csr" / "weights.sparse.npz").is_file()


def test_target_profile_chooses_forms_and_quantization(tmp_path, structured_ckpt, capsys):
    from edgeprune.targets import resolve_target

    target = resolve_target("cpu-kiosk")
    out = convert_checkpoint(structured_ckpt, tmp_path / "b", target=target, fmt="2:4", progress=False)
    m = manifest(out)
    assert m["target"] == "cpu-kiosk" and m["quantization"]["mode"] == target.quantization
    assert "2:4" in m["allowed_forms"]
    assert "cannot" in capsys.readouterr().err or any("sm80" in n for n in m["notes"])


def test_failed_verification_leaves_no_bundle(tmp_path, structured_ckpt, monkeypatch):
    from edgeprune.convert import verify

    monkeypatch.setattr(verify, "FP32_ATOL", -1.0)  # nothing can pass: every check must be reported
    with pytest.raises(VerificationError) as err:
        convert_checkpoint(structured_ckpt, tmp_path / "b", progress=False)
    assert "onnx export" in str(err.value) and "bundle" in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_existing_output_is_refused_before_work(tmp_path, structured_ckpt):
    (tmp_path / "b").mkdir()
    with pytest.raises(OutputExistsError):
        convert_checkpoint(structured_ckpt, tmp_path / "b", progress=False)


def test_missing_eval_data_is_recorded_not_invented(tmp_path, structured_ckpt):
    out = convert_checkpoint(structured_ckpt, tmp_path / "b", data_dir=tmp_path / "nowhere", progress=False)
    acc = manifest(out)["accuracy"]
    assert not acc["measured"] and "nowhere" in acc["reason"] and acc["fp32"] is None
