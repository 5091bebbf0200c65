import io
import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from convert_fixtures import SENTENCES, dense_bundle, structured_ckpt  # noqa: F401
from edgeprune.commands.pack import pack_bundle
from edgeprune.errors import BundleError
from edgeprune.runtime import Bundle, external_locations

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def bundle_copy(dense_bundle, tmp_path):
    return Path(shutil.copytree(dense_bundle, tmp_path / "b"))


def test_flipped_byte_is_refused(bundle_copy):
    model = bundle_copy / "model.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0x01
    model.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="sha256"):
        Bundle.load(bundle_copy)


def test_truncated_and_missing_files_are_refused(bundle_copy):
    tok = bundle_copy / "tokenizer.json"
    tok.write_bytes(tok.read_bytes()[:-10])
    with pytest.raises(BundleError, match="truncated"):
        Bundle.load(bundle_copy)
    tok.unlink()
    with pytest.raises(BundleError, match="missing"):
        Bundle.load(bundle_copy)


def test_manifest_table_cannot_point_outside(bundle_copy):
    m = json.loads((bundle_copy / "manifest.json").read_text())
    m["files"]["../escape"] = {"sha256": "0" * 64, "bytes": 1}
    (bundle_copy / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="unsafe path"):
        Bundle.load(bundle_copy)


def test_bench_may_edit_measured_without_breaking_identity(bundle_copy):
    before = Bundle.load(bundle_copy).digest
    m = json.loads((bundle_copy / "manifest.json").read_text())
    m["measured"]["cpu-kiosk"] = {"latency_ms": {"p50": 1.0}}
    (bundle_copy / "manifest.json").write_text(json.dumps(m))
    assert Bundle.load(bundle_copy).digest == before


def test_encode_pads_to_longest_and_truncates(dense_bundle):
    b = Bundle.load(dense_bundle, threads=1)
    enc = b.encode(["good", "the movie was great and the actors were charming"])
    assert enc["input_ids"].shape[0] == 2 and enc["input_ids"].shape == enc["attention_mask"].shape
    assert enc["attention_mask"][0].sum() < enc["input_ids"].shape[1]  # short row padded
    long = b.encode(["good " * 100])
    assert long["input_ids"].shape[1] == b.max_length


def test_pack_and_load_archive(dense_bundle, tmp_path):
    archive = pack_bundle(dense_bundle, tmp_path / "b.tar.gz")
    assert Bundle.load(archive).predict(SENTENCES[:2]) == Bundle.load(dense_bundle).predict(SENTENCES[:2])


def _archive(tmp_path, members):
    path = tmp_path / "bad.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def test_path_escaping_archive_is_refused(tmp_path):
    info = tarfile.TarInfo("../evil.txt")
    info.size = 3
    with pytest.raises(BundleError, match="unsafe path"):
        Bundle.load(_archive(tmp_path, [(info, b"bad")]))
    assert not (tmp_path.parent / "evil.txt").exists()


def test_link_in_archive_is_refused(tmp_path):
    info = tarfile.TarInfo("model.onnx")
    info.type = tarfile.SYMTYPE
    info.linkname = "/etc/passwd"
    with pytest.raises(BundleError, match="link"):
        Bundle.load(_archive(tmp_path, [(info, None)]))


def test_tampered_archive_is_refused(dense_bundle, tmp_path):
    work = Path(shutil.copytree(dense_bundle, tmp_path / "w"))
    (work / "tokenizer.json").write_text((work / "tokenizer.json").read_text().replace("movie", "m0vie"))
    with tarfile.open(tmp_path / "t.tar.gz", "w:gz") as tar:
        for p in work.iterdir():
            tar.add(p, arcname=p.name)
    with pytest.raises(BundleError, match="sha256"):
        Bundle.load(tmp_path / "t.tar.gz")


def test_external_data_outside_the_bundle_is_refused(bundle_copy):
    import onnx
    from onnx import external_data_helper

    model = onnx.load(str(bundle_copy / "model.onnx"))
    init = max(model.graph.initializer, key=lambda t: len(t.raw_data))
    external_data_helper.set_external_data(init, location="../../etc/passwd", offset=0, length=8)
    init.ClearField("raw_data")
    init.data_location = onnx.TensorProto.EXTERNAL
    blob = model.SerializeToString()
    assert "../../etc/passwd" in external_locations(blob)
    (bundle_copy / "model.onnx").write_bytes(blob)
    m = json.loads((bundle_copy / "manifest.json").read_text())  # re-sign, as an attacker could
    from edgeprune.hashing import sha256_file

    m["files"]["model.onnx"] = {"sha256": sha256_file(bundle_copy / "model.onnx"), "bytes": len(blob)}
    (bundle_copy / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="external data"):
        Bundle.load(bundle_copy)


BLOCKER = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'transformers', 'onnx', 'datasets'):
            raise ImportError('blocked for the kiosk test: ' + name)
sys.meta_path.insert(0, Block())
from edgeprune.runtime import Bundle
b = Bundle.load(sys.argv[1])
print(b.predict(['the movie was great'])[0].label)
from edgeprune.cli import main
sys.exit(main(['predict', sys.argv[1], '--json', 'a boring film']))
"""


def test_runtime_and_predict_work_without_torch(dense_bundle):
    proc = subprocess.run([sys.executable, "-c", BLOCKER, str(dense_bundle)], capture_output=True, text=True,
                          cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[0] in ("negative", "positive")
    assert json.loads(lines[1])["text"] == "a boring film"


def _edit_manifest(folder, change):
    m = json.loads((folder / "manifest.json").read_text())
    change(m)
    (folder / "manifest.json").write_text(json.dumps(m))


@pytest.mark.parametrize("field,change", [
    ("labels", lambda m: m.__setitem__("labels", m["labels"][::-1])),
    ("max_length", lambda m: m.__setitem__("max_length", 4)),
    ("tensors", lambda m: m["tensors"][0].__setitem__("shape", m["tensors"][0]["shape"][::-1])),
    ("pad_token_id", lambda m: m.__setitem__("pad_token_id", 3)),
    ("runtime", lambda m: m.__setitem__("runtime", {"disabled_optimizers": []})),
])
def test_every_field_the_runtime_uses_is_part_of_the_identity(bundle_copy, field, change):
    from edgeprune.runtime import bundle_digest, read_manifest

    original = Bundle.load(bundle_copy).digest
    _edit_manifest(bundle_copy, change)
    assert bundle_digest(read_manifest(bundle_copy)) != original, field
    with pytest.raises(BundleError, match="not the expected"):
        Bundle.load(bundle_copy, expected_digest=original)


def test_malformed_manifest_fields_are_bundle_errors(bundle_copy):
    good = json.loads((bundle_copy / "manifest.json").read_text())
    for change, message in ((lambda m: m["files"].__setitem__("model.onnx", "abc"), "file entry 'model.onnx'"),
                            (lambda m: m.pop("max_length"), "max_length"),
                            (lambda m: m.__setitem__("labels", "negative"), "labels"),
                            (lambda m: m.__setitem__("inputs", ["input_ids", "pixels"]), "inputs"),
                            (lambda m: m.__setitem__("runtime", {"disabled_optimizers": "SkipLayerNormFusion"}),
                             "disabled_optimizers"),
                            (lambda m: m.__setitem__("runtime", {"disabled_optimizers": ["a; b"]}),
                             "disabled_optimizers"),
                            (lambda m: m.__setitem__("runtime", ["SkipLayerNormFusion"]), "runtime must be")):
        (bundle_copy / "manifest.json").write_text(json.dumps(good))
        _edit_manifest(bundle_copy, change)
        with pytest.raises(BundleError, match=message):
            Bundle.load(bundle_copy)


def test_the_bytes_that_were_hashed_are_the_bytes_that_are_used(bundle_copy, monkeypatch):
    """Swapping model.onnx / tokenizer.json right after the hash check changes nothing: no second read."""
    from edgeprune import runtime

    expected = Bundle.load(bundle_copy).predict(SENTENCES[:3])
    real = runtime.read_verified

    def read_then_swap(folder, manifest, *args, **kwargs):
        out = real(folder, manifest, *args, **kwargs)
        (Path(folder) / "model.onnx").write_bytes(b"not a model")
        (Path(folder) / "tokenizer.json").write_text("{}")
        return out

    monkeypatch.setattr(runtime, "read_verified", read_then_swap)
    assert Bundle.load(bundle_copy).predict(SENTENCES[:3]) == expected


def test_gate_bundle_refuses_a_bundle_whose_manifest_was_edited(bundle_copy, tmp_path, capsys):
    from bench_fixtures import make_report, write_target
    from edgeprune.cli import main
    from edgeprune.runtime import verified_digest

    report = make_report()
    report["bundle"]["sha256"] = verified_digest(bundle_copy)
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "report.json").write_text(json.dumps(report))
    target = write_target(tmp_path / "t")
    assert main(["gate", str(tmp_path / "r"), "--target", str(target), "--bundle", str(bundle_copy)]) == 0
    capsys.readouterr()
    _edit_manifest(bundle_copy, lambda m: m.__setitem__("labels", m["labels"][::-1]))
    assert main(["gate", str(tmp_path / "r"), "--target", str(target), "--bundle", str(bundle_copy)]) == 2
    assert "the report is for bundle" in capsys.readouterr().err


def test_cpu_bundle_runs_without_the_fusion_its_manifest_turns_off(bundle_copy, monkeypatch, tmp_path):
    """A CPU bundle records that onnxruntime's SkipLayerNormFusion stays off (convert.optimize), and the
    session the runtime builds really has no SkipLayerNormalization (onnxruntime ignores names it does not
    know, so the graph after load is what is checked); a bundle without the field (older) gets the fusion."""
    import onnx
    import onnxruntime as ort

    manifest = json.loads((bundle_copy / "manifest.json").read_text())
    assert manifest["runtime"] == {"disabled_optimizers": ["SkipLayerNormFusion"]}
    real = ort.InferenceSession
    loaded = []

    def spy(model, options=None, *args, **kwargs):
        options = options or ort.SessionOptions()
        options.optimized_model_filepath = str(tmp_path / f"loaded{len(loaded)}.onnx")
        loaded.append(Path(options.optimized_model_filepath))
        return real(model, options, *args, **kwargs)

    monkeypatch.setattr(ort, "InferenceSession", spy)
    ops = lambda path: {n.op_type for n in onnx.load(str(path)).graph.node}
    expected = Bundle.load(bundle_copy).logits(SENTENCES[:3])
    assert "SkipLayerNormalization" not in ops(loaded[-1]) and "LayerNormalization" in ops(loaded[-1])
    _edit_manifest(bundle_copy, lambda m: m.pop("runtime"))
    again = Bundle.load(bundle_copy).logits(SENTENCES[:3])
    assert "SkipLayerNormalization" in ops(loaded[-1])  # what the manifest's switch keeps out
    assert abs(expected - again).max() < 1e-4  # the same maths either way
