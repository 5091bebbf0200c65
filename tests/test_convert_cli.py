import json

from convert_fixtures import dense_bundle, structured_ckpt  # noqa: F401
from edgeprune.cli import main


def one_line_error(capsys, argv):
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "fix:" in err
    return err


def test_bad_input_is_one_line_exit_2(capsys, tmp_path, structured_ckpt):
    assert "does not exist" in one_line_error(capsys, ["convert", str(tmp_path / "nope"), "-o", str(tmp_path / "b")])
    assert "unknown format" in one_line_error(capsys, ["convert", str(structured_ckpt), "-o", str(tmp_path / "b"),
                                                       "--format", "zip"])
    assert "unknown quantization" in one_line_error(capsys, ["convert", str(structured_ckpt), "-o",
                                                             str(tmp_path / "b"), "--quantize", "int3"])
    assert "--int8-max-drop must be a number in [0, 1]" in one_line_error(
        capsys, ["convert", str(structured_ckpt), "-o", str(tmp_path / "b"), "--int8-max-drop", "2"])
    assert "not a bundle" in one_line_error(capsys, ["inspect", str(tmp_path)])
    assert "does not exist" in one_line_error(capsys, ["predict", str(tmp_path / "nope"), "hi"])
    assert not (tmp_path / "b").exists()


def test_convert_cli_writes_a_bundle(capsys, tmp_path, structured_ckpt):
    assert main(["convert", str(structured_ckpt), "-o", str(tmp_path / "b"), "--json", "--quiet",
                 "--eval-limit", "6"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["verification"] and out["accuracy"]["examples"] == 6


def test_inspect_and_predict(capsys, dense_bundle, tmp_path):
    assert main(["inspect", str(dense_bundle)]) == 0
    text = capsys.readouterr().out
    assert "heads kept" in text and "download size" not in text.split("what pays off")[0]
    assert "Real CPU speed comes from structure" in text
    from edgeprune.convert.bundle import CONVERTER_VERSION

    assert f"optimizers off: SkipLayerNormFusion  (converter {CONVERTER_VERSION})" in text
    assert main(["inspect", str(dense_bundle), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["manifest"]["format"] == "dense"
    assert main(["pack", str(dense_bundle), "-o", str(tmp_path / "b.tar.gz")]) == 0
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "b.tar.gz"), "the movie was great", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["label"] in ("negative", "positive") and len(row["scores"]) == 2


def test_inspect_of_a_manifest_with_odd_fields_is_one_line(capsys, dense_bundle, tmp_path):
    import shutil

    bundle = shutil.copytree(dense_bundle, tmp_path / "b")
    m = json.loads((bundle / "manifest.json").read_text())
    del m["source"]
    m["structure"] = [{"layer": 0}]
    (bundle / "manifest.json").write_text(json.dumps(m))
    assert "malformed field" in one_line_error(capsys, ["inspect", str(bundle)])


def test_inspect_says_what_batch_the_accuracy_was_scored_in(capsys, dense_bundle, tmp_path):
    """The figure means something different at batch 1 and batch 16 under dynamic int8: inspect must say which."""
    import shutil

    m = json.loads((dense_bundle / "manifest.json").read_text())
    assert m["accuracy"]["measured"]
    main(["inspect", str(dense_bundle)])
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("accuracy"))
    assert f"in batches of {m['accuracy']['batch_size']}" in line
    for batch, words in ((1, "one sentence at a time"), (None, "scoring batch not recorded")):
        bundle = shutil.copytree(dense_bundle, tmp_path / f"b{batch}")
        m["accuracy"]["batch_size"] = batch
        if batch is None:
            del m["accuracy"]["batch_size"]
        (bundle / "manifest.json").write_text(json.dumps(m))
        assert main(["inspect", str(bundle)]) == 0
        assert words in capsys.readouterr().out

