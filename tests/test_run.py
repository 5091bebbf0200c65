"""`edgeprune run`: the chain skips up-to-date stages and redoes a stage whose input changed.

Train is swapped for a real-but-tiny stage (a tiny checkpoint written through the checkpoint contract,
seeded from the recipe); convert, bench and gate are the real ones.
"""

from __future__ import annotations

import json

import pytest
from bench_fixtures import write_target
from convert_fixtures import make_checkpoint, write_data

from edgeprune import chain
from edgeprune.bench.benchmark import BenchSettings
from edgeprune.cli import main
from edgeprune.errors import OutputExistsError
from edgeprune.runtime import read_manifest

FAST = BenchSettings(runs=5, warmup=1, baselines=False, plots=False)


@pytest.fixture
def setup(tmp_path, monkeypatch):
    data = write_data(tmp_path / "data")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"model: embedded:minilm-l6\ndata:\n  path: {data}\n  max_length: 32\n"
                      "training:\n  seed: 1\n")
    target = write_target(tmp_path / "targets", "run-kiosk", budget="max_bundle_mb = 50.0")
    trained = []

    def tiny_train(recipe_obj, out):
        trained.append(recipe_obj.training.seed)
        make_checkpoint(out, heads={0: [2]}, data_dir=data, seed=recipe_obj.training.seed)

    monkeypatch.setitem(chain.STAGES, "train", tiny_train)
    return recipe, target, tmp_path / "out", trained


def run(recipe, target, out, **kw):
    return chain.run_chain(recipe, str(target), out, settings=FAST, say=lambda line: None, **kw)


def test_run_chains_and_skips_up_to_date_stages(setup):
    recipe, target, out, trained = setup
    first = run(recipe, target, out)
    assert first.ran == ["train", "convert", "bench"] and first.skipped == []
    assert first.exit_code == 0 and first.verdict.passed
    assert {p.name for p in out.iterdir()} >= {"checkpoint", "bundle", "report", chain.RECORDS}
    report = json.loads((out / "report" / "report.json").read_text())
    bundle_mtime = (out / "bundle" / "model.onnx").stat().st_mtime_ns

    again = run(recipe, target, out)
    assert again.ran == [] and again.skipped == ["train", "convert", "bench"] and trained == [1]
    assert json.loads((out / "report" / "report.json").read_text()) == report
    assert (out / "bundle" / "model.onnx").stat().st_mtime_ns == bundle_mtime


def test_changed_recipe_redoes_everything_downstream(setup):
    recipe, target, out, trained = setup
    run(recipe, target, out)
    changed = run(recipe, target, out, overrides=["training.seed=2"])
    assert changed.ran == ["train", "convert", "bench"] and trained == [1, 2]
    report = json.loads((out / "report" / "report.json").read_text())
    assert report["bundle"]["sha256"] != json.loads((out / chain.RECORDS / "convert.json").read_text())["inputs"][
        "checkpoint"]
    from edgeprune.runtime import bundle_digest

    assert report["bundle"]["sha256"] == bundle_digest(read_manifest(out / "bundle"))


def test_budget_change_only_regates_and_workload_change_rebenches(setup):
    recipe, target, out, _ = setup
    run(recipe, target, out)
    target.write_text(target.read_text().replace("max_bundle_mb = 50.0", "max_bundle_mb = 0.001"))
    missed = run(recipe, target, out)
    assert missed.ran == [] and missed.exit_code == 1  # the gate saw the new budget
    target.write_text(target.read_text().replace("sequence_length = 16", "sequence_length = 8"))
    rebenched = run(recipe, target, out)
    assert rebenched.ran == ["bench"] and rebenched.skipped == ["train", "convert"]
    report = json.loads((out / "report" / "report.json").read_text())
    assert report["metrics"]["latency_ms"]["sequence_length"] == 8
    # the batch size is also the batch convert scores the bundle's recorded accuracy in
    target.write_text(target.read_text().replace("batch_size = 1", "batch_size = 2"))
    reconverted = run(recipe, target, out)
    assert reconverted.ran == ["convert", "bench"]
    assert json.loads((out / "bundle" / "manifest.json").read_text())["accuracy"]["batch_size"] == 2


def test_an_edited_output_is_redone(setup):
    recipe, target, out, _ = setup
    run(recipe, target, out)
    report = out / "report" / "report.json"
    report.write_text(report.read_text().replace('"measured": true', '"measured": false', 1))
    redone = run(recipe, target, out)
    assert redone.ran == ["bench"]
    assert json.loads(report.read_text())["metrics"]["latency_ms"]["measured"] is True


def test_run_refuses_a_foreign_folder_and_cli_exit_code_is_the_gates(setup, tmp_path, capsys):
    recipe, target, out, _ = setup
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    with pytest.raises(OutputExistsError):
        run(recipe, target, foreign)
    args = ["run", str(recipe), "--target", str(target), "-o", str(out), "--runs", "5", "--no-baselines", "--json"]
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["ran"] == ["train", "convert", "bench"]
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["skipped"] == ["train", "convert", "bench"]


def test_changed_data_or_model_folder_retrains(setup, tmp_path):
    recipe, target, out, trained = setup
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    recipe.write_text(recipe.read_text().replace("model: embedded:minilm-l6", f"model: {model}"))
    run(recipe, target, out)
    assert run(recipe, target, out).ran == []
    dev = tmp_path / "data" / "train.tsv"
    dev.write_text(dev.read_text() + "an extra sentence\t1\n")
    changed = run(recipe, target, out)
    assert changed.ran[:1] == ["train"] and len(trained) == 2
    (model / "config.json").write_text('{"changed": true}')
    assert run(recipe, target, out).ran[:1] == ["train"] and len(trained) == 3


def test_edgeprune_version_is_a_train_input(setup, monkeypatch):
    import edgeprune

    recipe, target, out, trained = setup
    run(recipe, target, out)
    monkeypatch.setattr(edgeprune, "__version__", "99.0")
    assert run(recipe, target, out).ran[:1] == ["train"]


def test_a_new_converter_reconverts_without_retraining(setup, monkeypatch):
    from edgeprune.convert import bundle

    recipe, target, out, trained = setup
    run(recipe, target, out)
    monkeypatch.setattr(bundle, "CONVERTER_VERSION", bundle.CONVERTER_VERSION + 1)
    redone = run(recipe, target, out)
    assert redone.ran[:1] == ["convert"] and "train" in redone.skipped and len(trained) == 1


def test_an_edited_bundle_manifest_is_reconverted(setup):
    recipe, target, out, _ = setup
    run(recipe, target, out)
    manifest = out / "bundle" / "manifest.json"
    m = json.loads(manifest.read_text())
    m["labels"] = m["labels"][::-1]
    manifest.write_text(json.dumps(m))
    redone = run(recipe, target, out)
    assert redone.ran[:1] == ["convert"] and redone.exit_code == 0
    assert json.loads(manifest.read_text())["labels"] == ["negative", "positive"]


def test_the_recipes_teacher_is_the_dense_reference(setup, tmp_path):
    from bench_fixtures import write_dense_reference

    recipe, target, out, _ = setup
    teacher = write_dense_reference(tmp_path / "teacher")
    recipe.write_text(recipe.read_text() + f"distillation:\n  teacher: {teacher}\n")
    run(recipe, target, out)
    dense = json.loads((out / "report" / "report.json").read_text())["metrics"]["dense_accuracy"]
    assert dense["measured"] and str(teacher.resolve()) in dense["source"]


def test_the_teacher_train_recorded_is_the_dense_reference(setup, tmp_path, monkeypatch):
    """`teacher: dense` has no folder in the recipe: the checkpoint's metrics.dense_checkpoint names it."""
    from bench_fixtures import write_dense_reference

    recipe, target, out, _ = setup
    data = tmp_path / "data"
    teacher = write_dense_reference(tmp_path / "trained-teacher")

    def train_with_teacher(recipe_obj, dest):
        make_checkpoint(dest, heads={0: [2]}, data_dir=data, seed=1,
                        metrics={"dense_accuracy": 0.5, "dense_checkpoint": str(teacher)})

    monkeypatch.setitem(chain.STAGES, "train", train_with_teacher)
    run(recipe, target, out)
    dense = json.loads((out / "report" / "report.json").read_text())["metrics"]["dense_accuracy"]
    assert dense["measured"] and str(teacher.resolve()) in dense["source"]
