"""benchmarks/kiosk.py end to end on tiny models: every row and column, the ratio maths, the bar checks,
the outputs; and the recipes it derives (dense reference, unstructured-sparse) and their reuse."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest
import yaml
from bench_fixtures import build_tiny_bundle
from conftest import tiny_recipe_dict
from convert_fixtures import make_checkpoint

ROOT = Path(__file__).resolve().parents[1]


def _load_script():
    spec = importlib.util.spec_from_file_location("kiosk_benchmark", ROOT / "benchmarks" / "kiosk.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


kiosk = _load_script()

COLUMNS = {"name", "description", "role", "source", "available", "reason", "accuracy", "accuracy_delta_vs_dense",
           "latency_ms", "throughput_per_s", "peak_rss_mb", "torch_imported", "bundle_mb", "model_onnx_mb",
           "format", "quantization", "global_sparsity", "vs_ort_fp32_dense", "notes"}
RUNS = 12


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    """One CLI run over tiny prebuilt models (no training): dense checkpoint, kiosk run folder, an
    unstructured checkpoint that the script converts (csr + int8), and one extra step bundle."""
    root = tmp_path_factory.mktemp("kiosk")
    structured_ck, bundle, data = build_tiny_bundle(root)
    run_out = root / "run"  # an `edgeprune run` OUT folder layout
    run_out.mkdir()
    bundle.rename(run_out / "bundle")
    dense = make_checkpoint(root / "dense", data_dir=data)
    layer = "bert.encoder.layer.{}.{}.weight"
    unstructured = make_checkpoint(root / "unstructured-ck", data_dir=data, magnitude={
        layer.format(i, part): 0.5 for i in (0, 1) for part in ("intermediate.dense", "output.dense")})
    recipe = root / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"model": str(dense), "data": {"path": str(data), "max_length": 32}}))
    out = root / "results"
    os.environ.pop("EDGEPRUNE_DEEPSPARSE_PYTHON", None)
    code = kiosk.main(["--recipe", str(recipe), "--work", str(root / "work"), "--dense-checkpoint", str(dense),
                       "--kiosk-out", str(run_out), "--unstructured-out", str(unstructured),
                       "--extra", f"step-structured={run_out / 'bundle'}", "--runs", str(RUNS), "--warmup", "2",
                       "--chunk", "5", "--out", str(out)])
    return code, out, json.loads((out / "kiosk.json").read_text())


def test_every_row_and_column(measured):
    code, out, result = measured
    assert code in (0, 1)  # the bar's verdict; tiny random models need not pass it
    assert {p.name for p in out.iterdir()} == {"kiosk.json", "kiosk.md", "kiosk.png"}
    names = [r["name"] for r in result["rows"]]
    assert names == ["pytorch-eager", "ort-fp32-dense", "ort-int8-dense", "kiosk-bundle", "unstructured-sparse",
                     "step-structured", "deepsparse-sparse", "deepsparse-kiosk"]
    for row in result["rows"]:
        assert set(row) == COLUMNS, row["name"]
        if not row["available"]:
            assert row["role"] == "deepsparse" and row["reason"]
            continue
        lat = row["latency_ms"]
        # cpu-kiosk times real sentence lengths (no padding beyond the sentence)
        assert lat["runs"] == RUNS and lat["batch_size"] == 1 and lat["sequence_length"] == "dataset"
        assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"]
        assert 0 <= row["accuracy"] <= 1 and row["peak_rss_mb"] > 10
    by = {r["name"]: r for r in result["rows"]}
    assert by["pytorch-eager"]["bundle_mb"] is None and by["ort-fp32-dense"]["bundle_mb"] > 0
    assert by["kiosk-bundle"]["torch_imported"] is False and by["pytorch-eager"]["torch_imported"] is True
    from edgeprune.targets import resolve_target

    int8 = resolve_target("cpu-kiosk").quantization  # the target's mode, as the kiosk row's
    assert by["unstructured-sparse"]["format"] == "csr" and by["unstructured-sparse"]["quantization"] == int8
    assert by["kiosk-bundle"]["quantization"] == int8
    assert (Path(result["inputs"]["unstructured_bundle"]) / "manifest.json").is_file()
    assert result["workload"]["threads"] == 2 and result["workload"]["interleaved"] is True
    assert result["data"]["examples"] == 12 and result["host"]["host_id"] and result["created"]


def test_ratio_maths(measured):
    _, _, result = measured
    by = {r["name"]: r for r in result["rows"]}
    fp32 = by["ort-fp32-dense"]
    dense_acc = by["pytorch-eager"]["accuracy"]
    assert result["dense_accuracy"] == dense_acc
    for row in result["rows"]:
        if not row["available"]:
            continue
        r = row["vs_ort_fp32_dense"]
        for q in ("p50", "p95", "p99"):
            assert r[f"speedup_{q}"] == pytest.approx(fp32["latency_ms"][q] / row["latency_ms"][q])
        assert r["rss_ratio"] == pytest.approx(row["peak_rss_mb"] / fp32["peak_rss_mb"])
        if row["bundle_mb"] is not None:
            assert r["size_ratio"] == pytest.approx(row["bundle_mb"] / fp32["bundle_mb"])
            assert r["size_ratio_vs_fp32_onnx"] == pytest.approx(row["bundle_mb"] / fp32["model_onnx_mb"])
        assert row["accuracy_delta_vs_dense"] == pytest.approx(row["accuracy"] - dense_acc)
    assert fp32["vs_ort_fp32_dense"]["speedup_p95"] == pytest.approx(1.0)


def test_bar_checks(measured):
    code, out, result = measured
    k = next(r for r in result["rows"] if r["name"] == "kiosk-bundle")
    checks = {c["check"]: c for c in result["bar"]}
    assert len(checks) == 6
    acc = checks["kiosk dev accuracy >= 0.90"]
    assert acc["value"] == k["accuracy"] and acc["passed"] == (k["accuracy"] >= 0.90)
    drop = checks["at most 1 point below the dense fine-tuned reference"]
    assert drop["value"] == pytest.approx(result["dense_accuracy"] - k["accuracy"])
    speed = checks["p95 >= 4x faster than ORT fp32 dense"]
    assert speed["value"] == k["vs_ort_fp32_dense"]["speedup_p95"] and speed["passed"] == (speed["value"] >= 4)
    size = checks["bundle <= 1/8 of the dense fp32 ONNX's bytes"]
    assert size["limit"] == pytest.approx(0.125) and size["passed"] == (size["value"] <= 0.125)
    rss = checks["peak RSS <= 1/3 of ORT fp32 dense's"]
    assert rss["value"] == k["vs_ort_fp32_dense"]["rss_ratio"]
    ds = checks["faster than DeepSparse's best sparse model"]
    ds_rows = [r for r in result["rows"] if r["role"] == "deepsparse"]
    assert [r["name"] for r in ds_rows] == ["deepsparse-sparse", "deepsparse-kiosk"]
    if not any(r["available"] for r in ds_rows):
        assert ds["status"] == "not measured" and all(r["reason"] in ds["reason"] for r in ds_rows)
    measured_checks = [c for c in result["bar"] if c["passed"] is not None]
    assert result["bar_passed"] == all(c["passed"] for c in measured_checks)
    assert code == (0 if result["bar_passed"] else 1)
    md = (out / "kiosk.md").read_text()
    assert "| model | dev accuracy | p50 / p95 / p99 ms | x ORT fp32 dense (p95) | bundle MB | peak RSS MB |" in md
    assert "kiosk-bundle" in md and "## steps" in md and "step-structured" in md
    steps = {s["name"] for s in result["steps"]}
    assert steps == {"kiosk-bundle", "step-structured"}


def test_derived_recipes(tiny_model_dir, tiny_data_dir):
    from edgeprune.recipe import recipe_from_dict

    raw = tiny_recipe_dict(tiny_model_dir, tiny_data_dir)
    raw["distillation"] = {"teacher": str(tiny_model_dir), "alpha": 0.3}
    recipe = recipe_from_dict(raw)
    dense = kiosk.dense_recipe(recipe)
    assert dense.pruning == [] and dense.distillation.teacher is None
    assert dense.training == recipe.training and dense.data == recipe.data and dense.model == recipe.model
    un = kiosk.unstructured_recipe(recipe, 0.8)
    (mod,) = un.pruning
    magnitude = recipe.pruning[2]
    assert mod.kind == "magnitude" and mod.scope == "global" and mod.final_sparsity == 0.8
    assert mod.params == magnitude.params and (mod.start, mod.end) == (magnitude.start, magnitude.end)
    assert un.distillation == recipe.distillation and un.training == recipe.training
    bare = kiosk.unstructured_recipe(recipe.without_pruning(), 0.7)
    assert bare.pruning[0].params == [] and bare.pruning[0].final_sparsity == 0.7  # every encoder Linear
    # a `teacher: dense` recipe distils the unstructured model from the dense reference already at hand,
    # and a layers cut does not carry over (the row is the unstructured alternative to structure)
    raw["distillation"] = {"teacher": "dense", "init_student": True}
    raw["pruning"].append({"kind": "layers", "keep": [1]})
    cut = recipe_from_dict(raw)
    un = kiosk.unstructured_recipe(cut, 0.8, tiny_model_dir)
    assert un.distillation.teacher == str(tiny_model_dir.resolve()) and un.distillation.init_student
    assert un.kept_layers() is None and [m.kind for m in un.pruning] == ["magnitude"]
    raw["pruning"] = [{"kind": "layers", "keep": [1]},
                      {"kind": "heads", "start": 0.02, "end": 0.5, "frequency": 3, "schedule": "linear"}]
    (mod,) = kiosk.unstructured_recipe(recipe_from_dict(raw), 0.8).pruning
    assert (mod.start, mod.end, mod.frequency, mod.schedule) == (0.02, 0.5, 3, "linear")  # not the cut's
    assert kiosk.unstructured_recipe(cut, 0.8).distillation.teacher == "dense"
    # an ensemble kiosk: the row distils from the dense reference alone, not from teachers retrained for it
    raw["distillation"] = {"teacher": "dense", "init_student": True, "ensemble": 2}
    un = kiosk.unstructured_recipe(recipe_from_dict(raw), 0.8, tiny_model_dir)
    assert un.distillation.teacher == str(tiny_model_dir.resolve()) and un.distillation.ensemble == 1
    # a kiosk student's 4-bit table does not carry over either: that row's bundle stores int8 embeddings
    raw["training"]["embeddings"] = "int4"
    snapped = recipe_from_dict(raw)
    un = kiosk.unstructured_recipe(snapped, 0.8)
    assert un.training.embeddings == "train" and un.training.learning_rate == snapped.training.learning_rate


def test_checkpoint_reused_only_for_the_same_recipe(tmp_path, monkeypatch):
    from edgeprune.recipe import recipe_from_dict

    ck = make_checkpoint(tmp_path / "ck")
    recorded = json.loads((ck / "pruning_state.json").read_text())["recipe"]
    recipe = recipe_from_dict(recorded)
    state = json.loads((ck / "pruning_state.json").read_text())
    state["recipe_sha256"] = recipe.sha256()
    (ck / "pruning_state.json").write_text(json.dumps(state))
    trained = []
    monkeypatch.setattr("edgeprune.train.train", lambda r, out, **kw: trained.append(out))
    assert kiosk.ensure_checkpoint(recipe, ck, "dense") == ck and trained == []
    other = kiosk.unstructured_recipe(recipe, 0.5)
    kiosk.ensure_checkpoint(other, ck, "unstructured")
    assert trained == [ck]


def test_a_bundle_is_reused_only_from_the_same_checkpoint_and_converter(tmp_path, monkeypatch):
    from edgeprune.convert import bundle as bundle_mod

    ck = make_checkpoint(tmp_path / "ck")
    import edgeprune.convert as convert_pkg

    converted = []

    def fake_convert(checkpoint, out, **kw):
        converted.append(out)
        from edgeprune.hashing import sha256_json, sha256_tree

        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "manifest.json").write_text(json.dumps({
            "source": {"checkpoint_sha256": sha256_json(sha256_tree(checkpoint))}, "format": "dense",
            "quantization": {"mode": "none"}, "converter_version": bundle_mod.CONVERTER_VERSION}))
        return out

    monkeypatch.setattr(convert_pkg, "convert_checkpoint", fake_convert)
    args = dict(target=None, fmt="dense", quantize="none")
    kiosk.ensure_converted(ck, tmp_path / "b", **args)
    kiosk.ensure_converted(ck, tmp_path / "b", **args)
    assert len(converted) == 1
    monkeypatch.setattr(bundle_mod, "CONVERTER_VERSION", bundle_mod.CONVERTER_VERSION + 1)
    kiosk.ensure_converted(ck, tmp_path / "b", **args)
    assert len(converted) == 2  # an older converter's bundle is rebuilt, not reused


def test_an_interrupted_row_is_resumed_only_for_the_same_recipe(tmp_path, monkeypatch):
    from edgeprune.pruner import STATE_JSON
    from edgeprune.recipe import recipe_from_dict
    from edgeprune.train import WORK_RECIPE, work_dir_for

    ck = make_checkpoint(tmp_path / "ck")
    recipe = kiosk.unstructured_recipe(
        recipe_from_dict(json.loads((ck / "pruning_state.json").read_text())["recipe"]), 0.8)
    out = tmp_path / "row" / "checkpoint"
    work = work_dir_for(out)
    step = work / "checkpoint-500"
    step.mkdir(parents=True)
    (step / "trainer_state.json").write_text("{}")
    (step / STATE_JSON).write_text("{}")
    (work / WORK_RECIPE).write_text(json.dumps({"sha256": recipe.sha256()}))
    calls = []
    monkeypatch.setattr("edgeprune.train.train", lambda r, o, **kw: calls.append(kw["resume"]))
    kiosk.ensure_checkpoint(recipe, out, "unstructured")
    # a killed session's steps are kept, but never continued under another recipe
    kiosk.ensure_checkpoint(kiosk.unstructured_recipe(recipe, 0.5), out, "unstructured")
    # nor from a step checkpoint without its masks
    (step / STATE_JSON).unlink()
    kiosk.ensure_checkpoint(recipe, out, "unstructured")
    assert calls == [True, False, False]


def _ds_row(name, accuracy, p95, available=True):
    return {"name": name, "role": "deepsparse", "available": available, "accuracy": accuracy,
            "latency_ms": {"p95": p95} if available else None, "reason": "" if available else "absent"}


def test_deepsparse_bar_takes_the_fastest_model_of_equal_accuracy():
    kiosk_row = {"name": kiosk.KIOSK, "role": "kiosk", "accuracy": 0.90, "latency_ms": {"p95": 1.0},
                 "vs_ort_fp32_dense": {}}

    def verdict(*ds_rows):
        rows = {r["name"]: r for r in (kiosk_row, *ds_rows)}
        return next(c for c in kiosk.bar_checks(rows, 0.90) if "DeepSparse" in c["check"])

    # the fast sparse model is 2 points less accurate: the bar is judged on the equal-accuracy one
    c = verdict(_ds_row("deepsparse-sparse", 0.88, 0.5), _ds_row("deepsparse-kiosk", 0.895, 3.0))
    assert c["passed"] is True and c["value"] == pytest.approx(3.0) and "deepsparse-kiosk" in c["reason"]
    c = verdict(_ds_row("deepsparse-sparse", 0.88, 3.0), _ds_row("deepsparse-kiosk", 0.895, 0.8))
    assert c["passed"] is False and c["value"] == pytest.approx(0.8)
    # of two within a point, the faster one
    c = verdict(_ds_row("deepsparse-sparse", 0.899, 2.0), _ds_row("deepsparse-kiosk", 0.91, 0.9))
    assert c["passed"] is False and "deepsparse-kiosk" in c["reason"]
    # none within a point: the most accurate, flagged
    c = verdict(_ds_row("deepsparse-sparse", 0.80, 0.5), _ds_row("deepsparse-kiosk", 0.85, 4.0))
    assert c["passed"] is True and "not a like-for-like" in c["reason"] and "deepsparse-kiosk" in c["reason"]
    c = verdict(_ds_row("deepsparse-sparse", None, None, False), _ds_row("deepsparse-kiosk", None, None, False))
    assert c["passed"] is None and "absent" in c["reason"]


def test_deepsparse_export_of_the_kiosk_student_drops_its_pruned_structure(tmp_path):
    import numpy as np
    import onnxruntime as ort
    import torch

    from edgeprune.checkpoint import load_checkpoint

    ck = make_checkpoint(tmp_path / "ck", heads={0: [1]}, neurons={1: [0, 3, 5]})
    kept, cut = tmp_path / "kept.onnx", tmp_path / "cut.onnx"
    names = kiosk.export_plain_onnx(ck, kept, 32)
    assert kiosk.export_plain_onnx(ck, cut, 32, remove_structure=True) == names
    assert cut.stat().st_size < kept.stat().st_size
    model, tokenizer, _, _ = load_checkpoint(ck)
    enc = tokenizer(["a good film", "bad"], padding=True, return_tensors="np")
    with torch.no_grad():
        want = model(**{n: torch.from_numpy(enc[n]) for n in names}).logits.numpy()
    for file in (kept, cut):
        got = ort.InferenceSession(str(file), providers=["CPUExecutionProvider"]).run(
            None, {n: enc[n].astype(np.int64) for n in names})[0]
        np.testing.assert_allclose(got, want, atol=1e-4)


def test_deepsparse_absence_is_explained(monkeypatch):
    monkeypatch.delenv("EDGEPRUNE_DEEPSPARSE_PYTHON", raising=False)
    if importlib.util.find_spec("deepsparse") is not None:
        pytest.skip("deepsparse imports here")
    python, why = kiosk.deepsparse_python(None)
    assert python is None and "onnx<1.15" in why and "--deepsparse-python" in why


def test_interleaving_visits_models_in_turn():
    order = []

    def timer(name):
        def run(n, warmup):
            order.append((name, n, warmup))
            return [1.0] * n
        return run

    samples = kiosk.interleaved_latency({"a": timer("a"), "b": timer("b")}, runs=7, warmup=3, chunk=3)
    r = kiosk.REWARM  # later visits re-warm: the previous session's pool threads may still be spinning
    assert order == [("a", 3, 3), ("b", 3, 3), ("a", 3, r), ("b", 3, r), ("a", 1, r), ("b", 1, r)]
    assert {k: len(v) for k, v in samples.items()} == {"a": 7, "b": 7}



def test_deepsparse_feeds_keep_real_lengths():
    import numpy as np

    def encode(texts):  # one token per word plus [CLS]/[SEP], padded to the batch's longest, like a tokenizer
        width = max(len(t.split()) + 2 for t in texts)
        ids = np.zeros((len(texts), width), dtype=np.int32)
        for i, t in enumerate(texts):
            ids[i, :len(t.split()) + 2] = [101] + [7] * len(t.split()) + [102]
        return {"input_ids": ids, "attention_mask": (ids != 0).astype(np.int32), "token_type_ids": ids * 0}

    assert kiosk.deepsparse_lengths([7, 22, 42], 64) == [16, 32, 48]
    assert kiosk.deepsparse_lengths([60], 64) == [16, 32, 48, 64] and kiosk.deepsparse_lengths([40], 40) == [16, 32, 40]
    assert kiosk.deepsparse_lengths([7], 64, fixed=24) == [16, 24]
    texts = ["w " * 5, "w " * 20, "w " * 40]
    names = ["input_ids", "attention_mask", "token_type_ids"]  # the graph's order, not the tokenizer's
    feeds = kiosk.deepsparse_feeds(encode, texts, names, batch_size=1, sequence_length="dataset", max_length=64,
                                   pad_id=0)
    assert feeds["lengths"].tolist() == [16, 32, 48] and not feeds["time_exact"]
    assert feeds["time_length"].tolist() == [7, 22, 42] and feeds["acc_length"].tolist() == [7, 22, 42]
    assert feeds["time_input_ids"].shape == (3, 1, 48) and feeds["acc_input_ids"].shape == (3, 1, 48)
    assert all(feeds[k].dtype == np.int64 for k in feeds if k != "time_exact")
    assert feeds["acc_attention_mask"].sum(-1).ravel().tolist() == [7, 22, 42]  # real tokens kept, rest padding
    assert feeds["acc_input_ids"][1, 0, :23].tolist() == [101] + [7] * 20 + [102, 0]
    fixed = kiosk.deepsparse_feeds(encode, texts, names, batch_size=1, sequence_length=24, max_length=64, pad_id=0)
    assert fixed["time_exact"] and fixed["time_length"].tolist() == [24, 24, 24]  # ORT's fixed length, truncated
    assert fixed["acc_length"].tolist() == [7, 22, 42] and fixed["lengths"].tolist() == [16, 24, 32, 48]
