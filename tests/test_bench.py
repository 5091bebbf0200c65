"""Bench on a tiny real bundle: a complete report, honest unmeasured figures, the manifest record; and the
latency/memory building blocks."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest
from bench_fixtures import build_tiny_bundle, write_target

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
    out = root / "report"
    report = benchmark(bundle, str(target), out, settings=FAST)
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


def test_gate_on_the_real_report(full_report, tiny, tmp_path, capsys):
    _, out, target = full_report
    _, bundle, _ = tiny
    code = main(["gate", str(out), "--target", str(target), "--bundle", str(bundle), "--json"])
    verdict = json.loads(capsys.readouterr().out)
    by_budget = {c["budget"]: c for c in verdict["checks"]}
    assert by_budget["max_bundle_mb"]["status"] == "pass"
    accuracy_ok = by_budget["min_accuracy"]["value"] >= 0.99
    assert code == (0 if accuracy_ok else 1)
    assert by_budget["min_accuracy"]["status"] == ("pass" if accuracy_ok else "fail")
    # another bundle (the same files plus one, so another identity): the report is refused
    other = tmp_path / "other"
    shutil.copytree(bundle, other)
    manifest = json.loads((other / "manifest.json").read_text())
    (other / "extra.txt").write_text("x")
    manifest["files"]["extra.txt"] = {"sha256": hashlib.sha256(b"x").hexdigest(), "bytes": 1}
    (other / "manifest.json").write_text(json.dumps(manifest))
    assert main(["gate", str(out), "--target", str(target), "--bundle", str(other)]) == 2
    assert "the report is for bundle" in capsys.readouterr().err


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
    assert m["dense_accuracy"]["measured"]  # the reference needs no baselines
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
