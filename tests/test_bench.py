"""Bench on a tiny real bundle: a complete report, honest unmeasured figures, the manifest record; and the
latency/memory building blocks."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest
from bench_fixtures import build_tiny_bundle, write_dense_reference, write_target
from convert_fixtures import make_checkpoint, write_data

from edgeprune.bench.benchmark import BenchSettings, benchmark
from edgeprune.bench.latency import fix_length, make_batches, measure_latency
from edgeprune.bench.memory import measure_peak_rss, peak_rss_bytes
from edgeprune.cli import main
from edgeprune.runtime import Bundle, bundle_digest

FAST = BenchSettings(runs=20, warmup=2)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_bundle(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def full_report(tiny, tmp_path_factory):
    """One bench with every baseline, shared by the tests that read it."""
    _, bundle, _ = tiny
    root = tmp_path_factory.mktemp("bench")
    target = write_target(root, "test-kiosk", threads=1, budget="max_bundle_mb = 50.0\nmin_accuracy = 0.99")
    dense = write_dense_reference(root / "dense")
    out = root / "report"
    report = benchmark(bundle, str(target), out, dense_checkpoint=dense, settings=FAST)
    return report, out, target


def test_report_is_complete(full_report, tiny):
    report, out, _ = full_report
    _, bundle, data = tiny
    assert {p.name for p in out.iterdir()} == {"report.json", "report.md", "latency.png",
                                               "accuracy_vs_latency.png", "budgets.png"}
    assert json.loads((out / "report.json").read_text()) == report
    m = report["metrics"]
    assert all(entry["measured"] for entry in m.values()), m
    lat = m["latency_ms"]
    assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"] and lat["runs"] >= FAST.runs
    assert lat["batch_size"] == 1 and lat["sequence_length"] == 16
    assert m["throughput_per_s"]["value"] > 0 and m["peak_rss_mb"]["value"] > 10
    assert m["peak_rss_mb"]["torch_imported"] is False  # the kiosk runtime stays torch-free
    assert 0 <= m["accuracy"]["value"] <= 1 and m["accuracy"]["examples"] == 12
    assert m["accuracy_drop"]["value"] == pytest.approx(m["dense_accuracy"]["value"] - m["accuracy"]["value"])
    assert m["conversion_drop"]["value"] == pytest.approx(m["checkpoint_accuracy"]["value"] - m["accuracy"]["value"])
    assert report["bundle"]["sha256"] == bundle_digest(json.loads((bundle / "manifest.json").read_text()))
    assert report["host"]["cores"] >= 1 and "isa_flags" in report["host"] and report["host"]["ort_version"]
    assert report["data"]["file"] == str(data / "dev.tsv")
    assert set(report["baselines"]) == {"pytorch-eager", "ort-fp32-dense", "ort-int8-dense"}
    for name, ratios in report["ratios"].items():
        assert ratios["speedup_p50"] > 0 and ratios["rss_ratio"] > 0, name
    assert report["ratios"]["ort-fp32-dense"]["size_ratio"] < 1  # structured + int8 is smaller than dense fp32
    table = (out / "report.md").read_text()
    assert "latency p95" in table and "ort-int8-dense" in table


def test_figures_are_recorded_in_the_manifest_without_changing_identity(full_report, tiny):
    report, _, _ = full_report
    _, bundle, _ = tiny
    loaded = Bundle.load(bundle)  # hashes still verify
    entry = loaded.manifest["measured"]["test-kiosk"][report["host"]["host_id"]]
    assert entry["metrics"]["accuracy"] == report["metrics"]["accuracy"]
    assert bundle_digest(loaded.manifest) == report["bundle"]["sha256"]


def _torch_accuracy(folder, data):
    from edgeprune.bench.runners import load_torch_classifier
    from edgeprune.eval_data import load_eval_set
    from edgeprune.evaluate import torch_accuracy

    model, tokenizer = load_torch_classifier(folder)
    eval_set = load_eval_set({"data": {"path": str(data)}}, ["0", "1"])
    return torch_accuracy(model, tokenizer, eval_set.texts, eval_set.label_ids, 32)


def test_dense_reference_is_the_dense_model_not_the_pruned_one(full_report, tiny):
    report, out, _ = full_report
    checkpoint, _, data = tiny
    m = report["metrics"]
    dense = out.parent / "dense"  # written by the full_report fixture
    assert m["dense_accuracy"]["value"] == pytest.approx(_torch_accuracy(dense, data))
    assert "dense reference" in m["dense_accuracy"]["source"] and str(dense) in m["dense_accuracy"]["source"]
    assert m["checkpoint_accuracy"]["value"] == pytest.approx(_torch_accuracy(checkpoint, data))
    assert "pruned checkpoint" in m["checkpoint_accuracy"]["source"]


def test_no_dense_reference_is_unmeasured_and_a_recorded_teacher_accuracy_is_used(tmp_path):
    from edgeprune.convert import convert_checkpoint

    data = write_data(tmp_path / "data")
    target = write_target(tmp_path, "test-kiosk", budget="max_accuracy_drop = 0.5")
    plain = convert_checkpoint(make_checkpoint(tmp_path / "plain", heads={0: [1]}, data_dir=data),
                               tmp_path / "plain-bundle", progress=False)
    settings = BenchSettings(runs=3, warmup=0, baselines=False, plots=False)
    report = benchmark(plain, str(target), tmp_path / "r1", settings=settings)
    m = report["metrics"]
    assert m["checkpoint_accuracy"]["measured"]  # the pruned model is measured, under its own name
    assert m["dense_accuracy"]["measured"] is False and "--dense-checkpoint" in m["dense_accuracy"]["reason"]
    assert m["accuracy_drop"]["measured"] is False
    assert main(["gate", str(tmp_path / "r1"), "--target", str(target)]) == 1  # no dense reference: no pass

    taught = convert_checkpoint(make_checkpoint(tmp_path / "taught", heads={0: [1]}, data_dir=data,
                                                metrics={"dense_accuracy": 0.75}),
                                tmp_path / "taught-bundle", progress=False)
    report = benchmark(taught, str(target), tmp_path / "r2", settings=settings)
    m = report["metrics"]
    assert m["dense_accuracy"]["value"] == 0.75 and "recorded by train" in m["dense_accuracy"]["source"]
    assert m["accuracy_drop"]["value"] == pytest.approx(0.75 - m["accuracy"]["value"])
    other = write_data(tmp_path / "other-data")
    report = benchmark(taught, str(target), tmp_path / "r3", data_dir=other, settings=settings)
    assert report["metrics"]["dense_accuracy"]["measured"] is False  # measured on other data: not comparable


def test_gate_on_the_real_report(full_report, tiny, tmp_path, capsys):
    _, out, _ = full_report
    _, bundle, _ = tiny
    generous = write_target(tmp_path / "pass", "test-kiosk", threads=1,
                            budget="max_bundle_mb = 50.0\nmax_peak_rss_mb = 100000.0\nlatency_p95_ms = 100000.0")
    assert main(["gate", str(out), "--target", str(generous), "--bundle", str(bundle), "--json"]) == 0
    verdict = json.loads(capsys.readouterr().out)
    by_budget = {c["budget"]: c for c in verdict["checks"]}
    assert {by_budget[b]["status"] for b in ("max_bundle_mb", "max_peak_rss_mb", "latency_p95_ms")} == {"pass"}
    tight = write_target(tmp_path / "fail", "test-kiosk", threads=1, budget="max_bundle_mb = 0.0001")
    assert main(["gate", str(out), "--target", str(tight), "--bundle", str(bundle), "--json"]) == 1
    verdict = json.loads(capsys.readouterr().out)
    assert [c["budget"] for c in verdict["checks"] if c["status"] == "fail"] == ["max_bundle_mb"]
    # another bundle (the same files plus one, so another identity): the report is refused
    other = tmp_path / "other"
    shutil.copytree(bundle, other)
    manifest = json.loads((other / "manifest.json").read_text())
    (other / "extra.txt").write_text("x")
    manifest["files"]["extra.txt"] = {"sha256": hashlib.sha256(b"x").hexdigest(), "bytes": 1}
    (other / "manifest.json").write_text(json.dumps(manifest))
    assert main(["gate", str(out), "--target", str(generous), "--bundle", str(other)]) == 2
    assert "the report is for bundle" in capsys.readouterr().err
    # a report scored in fixed batches (before accuracy followed the workload) is stale, not judged
    report = json.loads((out / "report.json").read_text())
    assert report["metrics"]["accuracy"]["batch_size"] == 1  # the workload's
    del report["metrics"]["accuracy"]["batch_size"]
    old = tmp_path / "old-report"
    shutil.copytree(out, old)
    (old / "report.json").write_text(json.dumps(report))
    assert main(["gate", str(old), "--target", str(generous)]) == 2
    assert "fixed batches" in capsys.readouterr().err


def test_arm_target_on_x86_marks_latency_and_memory_unmeasured(tiny, tmp_path):
    _, bundle, _ = tiny
    target = write_target(tmp_path, "arm-test", arch="aarch64", budget="latency_p95_ms = 50.0")
    report = benchmark(bundle, str(target), tmp_path / "arm", settings=BenchSettings(baselines=False, plots=False))
    if report["host"]["arch"] == "aarch64":
        pytest.skip("this host is aarch64: the arm target matches")
    m = report["metrics"]
    for figure in ("latency_ms", "throughput_per_s", "peak_rss_mb"):
        assert m[figure]["measured"] is False and "aarch64" in m[figure]["reason"]
    assert m["accuracy"]["measured"] and m["bundle_mb"]["measured"]
    assert m["checkpoint_accuracy"]["measured"]  # the pruned checkpoint's accuracy needs no baselines
    assert m["dense_accuracy"]["measured"] is False  # no teacher, no --dense-checkpoint: no dense reference
    assert report["baselines"] == {}
    assert main(["gate", str(tmp_path / "arm"), "--target", str(target)]) == 1  # latency unmeasured: fails


def test_gpu_target_without_gpu_is_exit_2(tiny, tmp_path, capsys):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this host has the CUDA provider")
    _, bundle, _ = tiny
    assert main(["bench", str(bundle), "--target", "ampere-gpu", "-o", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "cannot run on this host" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_cli_bench_without_baselines_and_existing_output(tiny, tmp_path, capsys):
    _, bundle, data = tiny
    target = write_target(tmp_path, "cli-kiosk", workload='batch_size = 2\nsequence_length = "dataset"')
    args = ["bench", str(bundle), "--target", str(target), "-o", str(tmp_path / "r"), "--runs", "5",
            "--no-baselines", "--no-plots", "--data", str(data), "--eval-limit", "6"]
    assert main(args) == 0
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["metrics"]["latency_ms"]["sequence_length"] == "dataset"
    assert report["metrics"]["accuracy"]["examples"] == 6
    assert any("--no-baselines" in n for n in report["notes"])
    assert main(args) == 2 and "already exists" in capsys.readouterr().err
    assert main(args + ["--overwrite"]) == 0


def test_accuracy_is_scored_at_the_workload_batch_size(tmp_path):
    """Dynamic int8 scales a batch by its own values, padding included: a batch-1 kiosk's accuracy is the
    one scored a sentence at a time, so bench must hand the workload's batch size to every scorer."""
    from edgeprune.bench.benchmark import _measure
    from edgeprune.bench.runners import Runner
    from edgeprune.targets import load_target_file

    asked = []
    runner = Runner("bundle", "spy", lambda texts: {}, lambda feeds: None,
                    lambda texts, ids, batch=32: asked.append(batch) or 1.0, "bundle", tmp_path)
    eval_set = type("E", (), {"texts": ["a", "b"], "label_ids": [0, 1]})()
    for batch in (1, 3):
        profile = load_target_file(write_target(tmp_path / str(batch), workload=f"batch_size = {batch}\nsequence_length = 8"))
        m = _measure(runner, profile, eval_set, FAST, {"latency": False, "memory": False}, [], 8)
        assert m.accuracy == 1.0 and asked[-1] == batch


def test_fix_length_pads_and_truncates():
    feeds = {"input_ids": np.array([[101, 7, 102]]), "attention_mask": np.ones((1, 3), dtype=np.int64)}
    padded = fix_length(feeds, 5, pad_id=9)
    assert padded["input_ids"].tolist() == [[101, 7, 102, 9, 9]]
    assert padded["attention_mask"].tolist() == [[1, 1, 1, 0, 0]]
    assert fix_length(feeds, 2)["input_ids"].tolist() == [[101, 7]]


def test_make_batches_uses_real_sentences():
    seen = []

    def encode(texts):
        seen.extend(texts)
        n = len(texts)
        width = max(len(t.split()) for t in texts)
        return {"input_ids": np.ones((n, width), dtype=np.int64)}

    texts = ["a b", "c d e f", "g"]
    batches, seq = make_batches(encode, texts, 2, "dataset", max_length=64)
    assert seq == "dataset" and seen[:3] == texts and [b["input_ids"].shape for b in batches] == [(2, 4), (2, 2)]
    batches, seq = make_batches(encode, texts, 2, 128, max_length=64)
    assert seq == 64 and all(b["input_ids"].shape == (2, 64) for b in batches)


def test_measure_latency_counts_runs_and_orders_percentiles():
    calls = []
    result = measure_latency(lambda feeds: calls.append(feeds), [{"x": np.zeros((3, 4))}], 4,
                             warmup=5, min_runs=10, max_runs=30)
    assert len(calls) == 5 + result.runs and 10 < result.runs <= 30  # at least one settling round
    assert result.batch_size == 3 and result.sequence_length == 4
    assert result.p50 <= result.p95 <= result.p99 and result.throughput_per_s > 0


def test_memory_probe_is_torch_free(tiny):
    _, bundle, _ = tiny
    assert peak_rss_bytes() > 0
    result = measure_peak_rss("bundle", bundle, ["the movie was great"], threads=1,
                              providers=["CPUExecutionProvider"], batch_size=1, repeats=1)
    assert result.peak_rss_mb > 10 and result.torch_imported is False


def test_unreadable_memory_probe_output_is_a_bundle_error(monkeypatch, tiny):
    import subprocess

    from edgeprune.errors import BundleError

    _, bundle, _ = tiny
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 0, "oops\n", ""))
    with pytest.raises(BundleError, match="printed no result"):
        measure_peak_rss("bundle", bundle, ["x"], threads=1, providers=["CPUExecutionProvider"], batch_size=1)


def test_read_only_bundle_is_refused_before_measuring_or_benched_with_no_record(tiny, tmp_path, capsys, monkeypatch):
    import os

    from edgeprune.bench import benchmark as bench_mod

    _, bundle, _ = tiny
    copy = shutil.copytree(bundle, tmp_path / "ro")
    target = write_target(tmp_path, "ro-kiosk")
    real_access = os.access
    monkeypatch.setattr(bench_mod.os, "access",
                        lambda p, mode, *a, **k: False if str(p).startswith(str(copy)) and mode == os.W_OK
                        else real_access(p, mode, *a, **k))
    args = ["bench", str(copy), "--target", str(target), "-o", str(tmp_path / "r"), "--runs", "3",
            "--no-baselines", "--no-plots"]
    before = (copy / "manifest.json").read_text()
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "read-only" in err and "--no-record" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "r").exists()
    assert main(args + ["--no-record"]) == 0
    assert (copy / "manifest.json").read_text() == before


def test_a_failed_manifest_record_is_one_line(tiny, tmp_path, capsys, monkeypatch):
    from edgeprune.bench import benchmark as bench_mod

    _, bundle, _ = tiny
    copy = shutil.copytree(bundle, tmp_path / "b")

    def refuse(path, text):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(bench_mod, "atomic_write_text", refuse)
    target = write_target(tmp_path, "rec-kiosk")
    assert main(["bench", str(copy), "--target", str(target), "-o", str(tmp_path / "r"), "--runs", "3",
                 "--no-baselines", "--no-plots"]) == 2
    err = capsys.readouterr().err.strip()
    assert "recording its figures" in err and len(err.splitlines()) == 1


def test_an_archive_bundle_is_benched_and_the_report_says_nothing_was_recorded(tiny, tmp_path):
    from edgeprune.commands.pack import pack_bundle

    _, bundle, _ = tiny
    archive = pack_bundle(bundle, tmp_path / "b.tar.gz")
    target = write_target(tmp_path, "tar-kiosk")
    report = benchmark(archive, str(target), tmp_path / "r",
                       settings=BenchSettings(runs=3, warmup=0, baselines=False, plots=False))
    assert any("packed archive" in n and "not recorded" in n for n in report["notes"])
    assert report["bundle"]["sha256"] == Bundle.load(bundle).digest
