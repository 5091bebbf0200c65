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
    err = capsys.readouterr().err
    warning = "2:4 gives no speed-up without an sm80+ GPU"
    assert f"convert: warning: {warning}" in err and any(n.startswith(warning) for n in m["notes"])
    assert "format 2:4 is not among what pays off on cpu-kiosk" in err
    # scored as the batch-1 kiosk is fed: one sentence at a time, so dynamic int8 scales see no padding
    from edgeprune.bench.accuracy import accuracy, load_eval_set

    acc, bundle = m["accuracy"], Bundle.load(out)
    assert acc["batch_size"] == target.workload.batch_size == 1
    one_by_one = accuracy(lambda texts: [p.label_id for p in bundle.predict(texts, batch_size=1)],
                          load_eval_set(m), 1)
    assert acc["bundle"] == pytest.approx(one_by_one)


def test_without_a_target_accuracy_is_scored_in_convert_batches(tmp_path, structured_ckpt):
    from edgeprune.convert.pipeline import BATCH

    m = manifest(convert_checkpoint(structured_ckpt, tmp_path / "b", quantize="int8-dynamic", progress=False))
    assert m["accuracy"]["measured"] and m["accuracy"]["batch_size"] == BATCH


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


def test_distilbert_converts_dense_unstructured_and_structured(tmp_path):
    from convert_fixtures import make_distilbert_checkpoint

    dense = make_distilbert_checkpoint(tmp_path / "dense")
    ref = checkpoint_logits_no_types(dense, SENTENCES)
    for name, kwargs in (("structured-default", {}), ("unstructured", {"structured": False})):
        out = convert_checkpoint(dense, tmp_path / name, progress=False, **kwargs)  # nothing pruned: no removal
        m = manifest(out)
        assert m["structure"] == [] and m["inputs"] == ["input_ids", "attention_mask"]
        np.testing.assert_allclose(Bundle.load(out).logits(SENTENCES), ref, atol=1e-4)
    pruned = make_distilbert_checkpoint(tmp_path / "pruned", heads={0: [1, 2], 1: [0, 1, 2, 3]},
                                        neurons={0: [0, 4, 36], 1: list(range(37))})
    out = convert_checkpoint(pruned, tmp_path / "shrunk", progress=False)
    m = manifest(out)
    assert [(s["heads_kept"], s["neurons_kept"]) for s in m["structure"]] == [(2, 34), (0, 0)]
    np.testing.assert_allclose(Bundle.load(out).logits(SENTENCES), checkpoint_logits_no_types(pruned, SENTENCES),
                               atol=1e-4)


def checkpoint_logits_no_types(ckpt, texts):
    model, tok, _, _ = load_checkpoint(ckpt)
    enc = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits.numpy()


def test_eval_split_and_limit_of_the_recipe_are_used(tmp_path):
    from convert_fixtures import LABELS

    data = tmp_path / "data"
    data.mkdir()
    rows = "".join(f"{s}\t{lab}\n" for s, lab in zip(SENTENCES, LABELS))
    (data / "train.tsv").write_text("sentence\tlabel\n" + rows)
    (data / "dev.tsv").write_text("sentence\tlabel\nnot this split\t7\n")  # unreadable labels: must not be used
    (data / "heldout.tsv").write_text("sentence\tlabel\n" + rows)
    ck = make_checkpoint(tmp_path / "ck", data_dir=data, data_extra={"eval_split": "heldout", "eval_limit": 5})
    m = manifest(convert_checkpoint(ck, tmp_path / "b", progress=False))
    acc = m["accuracy"]
    assert acc["measured"] and acc["examples"] == 5 and acc["data"].endswith("heldout.tsv")
    assert acc["split"] == "heldout"
    from edgeprune.bench.accuracy import load_eval_set

    eval_set = load_eval_set(m)  # bench scores on the same split, through the same helper
    assert eval_set.source.name == "heldout.tsv" and len(eval_set.texts) == 5


def test_a_label_the_model_never_saw_is_a_data_error_naming_it(tmp_path):
    from edgeprune.errors import DataError

    data = tmp_path / "data"
    data.mkdir()
    (data / "dev.tsv").write_text("sentence\tlabel\nthe movie was great\t1\na boring film\tneutral\n")
    ck = make_checkpoint(tmp_path / "ck", data_dir=data)
    with pytest.raises(DataError, match="label 'neutral' is not one the model was trained on"):
        convert_checkpoint(ck, tmp_path / "b", progress=False)
    assert not (tmp_path / "b").exists()


def test_int8_verification_limits_are_options_not_the_release_budget(tmp_path, structured_ckpt):
    from edgeprune.convert.options import resolve_options
    from edgeprune.targets import replace_budget, resolve_target

    assert resolve_options(None, None, None).int8_max_drop == 0.03
    target = resolve_target("cpu-kiosk")
    # the budget is gate's to judge (exit 1), not a reason to refuse the conversion (exit 2)
    assert resolve_options(replace_budget(target, max_accuracy_drop=0.005), None, None).int8_max_drop == 0.03
    assert resolve_options(target, None, None, int8_max_drop=0.2).int8_max_drop == 0.2
    out = convert_checkpoint(structured_ckpt, tmp_path / "lenient", quantize="int8-dynamic", progress=False,
                             int8_min_agreement=0.25, int8_max_drop=0.5)
    details = [c["detail"] for c in manifest(out)["verification"]["checks"]]
    assert any("(>= 25%)" in d for d in details) and any("(<= 0.5)" in d for d in details)
