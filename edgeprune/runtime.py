"""The kiosk side: load a bundle, prove it is the one that was converted, predict. No torch.

Imports only numpy, onnxruntime, tokenizers and the stdlib (plus edgeprune's own numpy-only modules),
so a kiosk installs `edgeprune` without the train/convert extras. Loading trusts nothing in the folder:
every file in the manifest's table is size- and sha256-checked, and the very bytes that were hashed are
the ones handed to ONNX Runtime and the tokenizer (no second read of the file, so no check-then-use gap);
archives are unpacked member by member with path checks, and no file in a bundle is ever executed or
unpickled.

Identity: `bundle_digest(manifest)` is the sha256 of the whole manifest except `measured` (the figures
bench records after convert). It therefore covers the file table (and through it every file's bytes)
*and* every field the runtime acts on: labels, max_length, inputs, pad token, the per-tensor decode
records. Change any of them and the digest changes, so a consumer that knows the digest to expect
(`Bundle.load(path, expected_digest=...)`, `edgeprune gate --bundle` against its report, `edgeprune run`
against its record) refuses the bundle.

What this does not give: authenticity. Someone who can write the bundle can rewrite files, file table
and manifest consistently, and that bundle loads (with a new digest). Without a signature the only
defence is to pin the digest you expect, obtained over a channel the attacker cannot write to.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
import numpy as np

from .errors import BundleError
from .hashing import sha256_file, sha256_json

MANIFEST = "manifest.json"
MODEL = "model.onnx"
TOKENIZER = "tokenizer.json"
SIDECAR = "weights.sparse.npz"
MAX_MANIFEST_BYTES = 16 << 20
MAX_MEMBER_BYTES = 4 << 30
MAX_ARCHIVE_BYTES = 8 << 30
MAX_MEMBERS = 10_000
_REBUILD = "re-run `edgeprune convert` (or fetch the bundle again)"


@dataclass
class Prediction:
    label: str
    label_id: int
    scores: list[float]


INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
UNHASHED = ("measured",)  # written by bench after convert; everything else is the bundle's identity


def bundle_digest(manifest: dict) -> str:
    """The bundle's identity: sha256 of the canonical JSON of the manifest without `measured`."""
    return sha256_json({k: v for k, v in manifest.items() if k not in UNHASHED})


def _safe_relpath(name: str) -> PurePosixPath:
    p = PurePosixPath(name)
    if not name or p.is_absolute() or ".." in p.parts or "\\" in name or name.startswith("~"):
        raise BundleError(f"unsafe path {name!r} in bundle", "use a bundle written by `edgeprune convert`")
    return p


def read_manifest(folder: Path) -> dict:
    file = Path(folder) / MANIFEST
    if not file.is_file() or file.is_symlink():
        raise BundleError(f"{folder} is not a bundle (no {MANIFEST})", "pass a folder written by `edgeprune convert`")
    if file.stat().st_size > MAX_MANIFEST_BYTES:
        raise BundleError(f"{file} is implausibly large", _REBUILD)
    try:
        manifest = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{file} is not valid JSON ({exc})", _REBUILD) from exc
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise BundleError(f"{file} has no file table", _REBUILD)
    check_manifest(manifest, file)
    return manifest


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_manifest(manifest: dict, where="manifest.json") -> None:
    """The fields the runtime acts on have the types it needs; anything else is a BundleError."""
    def bad(what: str):
        return BundleError(f"{where}: {what}", _REBUILD)

    for name, entry in manifest["files"].items():
        if not isinstance(entry, dict) or not _is_int(entry.get("bytes")) or not isinstance(entry.get("sha256"), str):
            raise bad(f"file entry {name!r} is not {{sha256, bytes}}")
    labels = manifest.get("labels")
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels):
        raise bad("labels must be a non-empty list of names")
    if not _is_int(manifest.get("max_length")) or manifest["max_length"] < 1:
        raise bad(f"max_length must be a positive integer, got {manifest.get('max_length')!r}")
    inputs = manifest.get("inputs")
    if not isinstance(inputs, list) or not inputs or not all(x in INPUT_NAMES for x in inputs):
        raise bad(f"inputs must be a list of {', '.join(INPUT_NAMES)}, got {inputs!r}")
    if not isinstance(manifest.get("pad_token", ""), str) or not _is_int(manifest.get("pad_token_id", 0)):
        raise bad("pad_token must be a string and pad_token_id an integer")
    disabled_optimizers(manifest, where)
    tensors = manifest.get("tensors", [])
    if not isinstance(tensors, list) or not all(isinstance(t, dict) for t in tensors):
        raise bad("tensors must be a list of records")
    for t in tensors:
        if t.get("storage") == SIDECAR and not (
                isinstance(t.get("name"), str) and isinstance(t.get("key"), str) and isinstance(t.get("form"), str)
                and isinstance(t.get("shape"), list) and all(_is_int(d) and d >= 0 for d in t["shape"])):
            raise bad(f"tensor record {t.get('name')!r} lacks name/key/form/shape")


def read_verified(folder: Path, manifest: dict, keep: tuple[str, ...] = (MODEL, TOKENIZER, SIDECAR)) -> dict[str, bytes]:
    """Check every listed file (present, regular, inside the folder, listed size and sha256) and return
    the bytes of the `keep` files exactly as they were hashed, so what is used is what was checked."""
    folder = Path(folder).resolve()
    files = manifest["files"]
    for required in (MODEL, TOKENIZER):
        if required not in files:
            raise BundleError(f"bundle manifest lists no {required}", _REBUILD)
    kept: dict[str, bytes] = {}
    for name, entry in files.items():
        rel = _safe_relpath(name)
        path = folder / rel
        if path.is_symlink() or not path.resolve().is_relative_to(folder):
            raise BundleError(f"bundle file {name} is a link or leaves the bundle", _REBUILD)
        if not path.is_file():
            raise BundleError(f"bundle file {name} is missing (incomplete bundle)", _REBUILD)
        size = path.stat().st_size
        if not isinstance(entry, dict) or size != entry.get("bytes"):
            expected = entry.get("bytes") if isinstance(entry, dict) else entry
            raise BundleError(f"bundle file {name} has {size} bytes, manifest says {expected!r} "
                              "(truncated or altered)", _REBUILD)
        if name in keep:
            data = path.read_bytes()
            ok = len(data) == size and hashlib.sha256(data).hexdigest() == entry.get("sha256")
        else:
            ok = sha256_file(path) == entry.get("sha256")
        if not ok:
            raise BundleError(f"bundle file {name} fails its sha256 check (tampered or corrupted)", _REBUILD)
        if name in keep:
            kept[name] = data
    return kept


def verify_files(folder: Path, manifest: dict) -> None:
    """Every listed file present, regular, inside the folder, of the listed size and sha256."""
    read_verified(folder, manifest, keep=())


def external_locations(model_bytes: bytes) -> list[str]:
    """`location` values of ONNX external-data entries, found without the onnx package.

    An external-data entry is a StringStringEntryProto: field 1 = b"location", field 2 = the path.
    A chance match inside weight bytes can only cause a refusal, never an acceptance.
    """
    marker = b"\x0a\x08location\x12"
    out, start = [], 0
    while (i := model_bytes.find(marker, start)) >= 0:
        pos, length, shift = i + len(marker), 0, 0
        while pos < len(model_bytes):
            byte = model_bytes[pos]
            pos += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        out.append(model_bytes[pos:pos + length].decode("utf-8", errors="replace"))
        start = pos + length
    return out


def sidecar_tensors(manifest: dict) -> list[dict]:
    return [t for t in manifest.get("tensors", []) if t.get("storage") == SIDECAR]


def disabled_optimizers(manifest: dict, where="manifest.json") -> list[str]:
    """The onnxruntime graph optimizers the bundle was measured without (manifest `runtime`, written by
    convert: on CPU, `SkipLayerNormFusion`, whose fused kernel is slower there). Older bundles: none."""
    runtime = manifest.get("runtime")
    if runtime is None:
        return []
    names = runtime.get("disabled_optimizers", []) if isinstance(runtime, dict) else None
    if not isinstance(names, list) or not all(isinstance(n, str) and n.isidentifier() for n in names):
        raise BundleError(f"{where}: runtime must be {{\"disabled_optimizers\": [optimizer names]}}, "
                          f"got {runtime!r}", _REBUILD)
    return list(names)


def make_session(files: dict[str, bytes], manifest: dict, threads: int | None = None,
                 providers: list[str] | None = None):
    """An InferenceSession over verified model bytes (`read_verified`), csr/2:4 tensors decoded from the
    verified sidecar bytes and handed over in memory."""
    import io

    import onnxruntime as ort

    from .convert.formats import from_sidecar

    model_bytes = files[MODEL]
    for location in external_locations(model_bytes):
        if location != SIDECAR or SIDECAR not in manifest["files"]:
            raise BundleError(f"{MODEL} points at external data {location!r} outside the bundle's weights",
                              "refusing it; use a bundle written by `edgeprune convert`")
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    options.log_severity_level = 3
    disabled = disabled_optimizers(manifest)
    sparse = sidecar_tensors(manifest)
    keep_alive = []
    if sparse:
        if SIDECAR not in files:
            raise BundleError(f"the manifest stores tensors in {SIDECAR}, which the file table lacks", _REBUILD)
        with np.load(io.BytesIO(files[SIDECAR]), allow_pickle=False) as arrays:
            names, values = [], []
            for t in sparse:
                try:
                    dense = np.ascontiguousarray(from_sidecar(t["form"], t["key"], arrays, t["shape"], t.get("axis")))
                except (KeyError, ValueError, TypeError) as exc:
                    raise BundleError(f"tensor {t['name']!r} cannot be decoded from {SIDECAR} ({exc})",
                                      _REBUILD) from exc
                keep_alive.append(dense)
                names.append(t["name"])
                values.append(ort.OrtValue.ortvalue_from_numpy(dense))
        options.add_external_initializers(names, values)
    try:
        session = ort.InferenceSession(model_bytes, options, providers=list(providers or ["CPUExecutionProvider"]),
                                       disabled_optimizers=disabled or None)
    except Exception as exc:  # noqa: BLE001 - ORT raises several unrelated types for bad models
        raise BundleError(f"ONNX Runtime cannot load {MODEL} ({str(exc)[:200]})", _REBUILD) from exc
    session._edgeprune_keep_alive = keep_alive  # the OrtValues borrow these buffers
    return session


def _unpack(archive: Path) -> Path:
    """Extract a packed bundle member by member: regular files only, relative, bounded."""
    dest = Path(tempfile.mkdtemp(prefix="edgeprune-bundle-"))
    atexit.register(shutil.rmtree, dest, True)
    total = 0
    try:
        with tarfile.open(archive, "r:*") as tar:
            for count, member in enumerate(tar, 1):
                if count > MAX_MEMBERS:
                    raise BundleError(f"{archive} has too many members", _REBUILD)
                rel = _safe_relpath(member.name.removeprefix("./"))
                if member.isdir():
                    continue
                if not member.isfile():
                    raise BundleError(f"{archive} member {member.name!r} is a link or device", _REBUILD)
                total += member.size
                if member.size > MAX_MEMBER_BYTES or total > MAX_ARCHIVE_BYTES:
                    raise BundleError(f"{archive} member {member.name!r} exceeds the size bound", _REBUILD)
                target = dest / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                src = tar.extractfile(member)
                with src, open(target, "xb") as out:
                    shutil.copyfileobj(src, out)
    except (tarfile.TarError, OSError, EOFError) as exc:
        shutil.rmtree(dest, ignore_errors=True)
        raise BundleError(f"cannot unpack {archive} ({exc})", _REBUILD) from exc
    except BundleError:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    entries = [p for p in dest.iterdir()]
    if len(entries) == 1 and entries[0].is_dir() and not (dest / MANIFEST).exists():
        return entries[0]
    return dest


def open_bundle(path, expected_digest: str | None = None) -> tuple[Path, dict]:
    """(folder, manifest) of a bundle folder or archive (unpacked), refusing a digest other than expected."""
    path = Path(path)
    if path.is_file() and tarfile.is_tarfile(path):
        path = _unpack(path)
    elif not path.is_dir():
        raise BundleError(f"bundle {path} does not exist", "pass a bundle folder or a .tar.gz from `edgeprune pack`")
    manifest = read_manifest(path)
    if expected_digest is not None and bundle_digest(manifest) != expected_digest:
        raise BundleError(f"bundle {path} is {bundle_digest(manifest)[:12]}, not the expected "
                          f"{expected_digest[:12]} (its manifest or files were changed)", _REBUILD)
    return path, manifest


def verified_digest(path) -> str:
    """The identity of a bundle folder or archive after checking every file against its table: what
    gate needs, without building an ONNX Runtime session."""
    folder, manifest = open_bundle(path)
    verify_files(folder, manifest)
    return bundle_digest(manifest)


class Bundle:
    """A verified bundle; build it with `Bundle.load`."""

    def __init__(self, path: Path, manifest: dict, session, tokenizer):
        self.path = Path(path)
        self.manifest = manifest
        self.session = session
        self._tokenizer = tokenizer
        self.labels: list[str] = list(manifest["labels"])
        self.max_length: int = int(manifest["max_length"])
        self.input_names: list[str] = list(manifest["inputs"])
        self.digest = bundle_digest(manifest)

    @classmethod
    def load(cls, path, threads: int | None = None, providers: list[str] | None = None,
             expected_digest: str | None = None) -> "Bundle":
        """Load and verify a bundle folder or packed archive. With `expected_digest` (a digest obtained
        from somewhere the bundle's writer cannot change) a bundle with any other identity is refused."""
        from tokenizers import Tokenizer

        path, manifest = open_bundle(path, expected_digest)
        files = read_verified(path, manifest)
        session = make_session(files, manifest, threads, providers)
        try:
            tokenizer = Tokenizer.from_str(files[TOKENIZER].decode("utf-8"))
        except Exception as exc:  # noqa: BLE001 - tokenizers raises a bare Exception
            raise BundleError(f"cannot read {path / TOKENIZER} ({str(exc)[:200]})", _REBUILD) from exc
        max_length = int(manifest["max_length"])
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length)
        pad = manifest.get("pad_token", "[PAD]")
        pad_id = manifest.get("pad_token_id", tokenizer.token_to_id(pad) or 0)
        tokenizer.enable_padding(pad_id=int(pad_id), pad_token=pad)
        return cls(path, manifest, session, tokenizer)

    def encode(self, texts: list[str]) -> dict[str, np.ndarray]:
        """Model inputs for `texts`, padded to the longest in the batch, truncated to max_length."""
        if isinstance(texts, str):
            texts = [texts]
        encodings = self._tokenizer.encode_batch(list(texts))
        arrays = {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
        }
        return {k: arrays[k] for k in self.input_names}

    def logits(self, texts: list[str]) -> np.ndarray:
        return self.session.run(None, self.encode(texts))[0]

    def predict(self, texts: list[str], batch_size: int = 32) -> list[Prediction]:
        if isinstance(texts, str):
            texts = [texts]
        out: list[Prediction] = []
        for i in range(0, len(texts), max(1, int(batch_size))):
            logits = self.logits(texts[i:i + batch_size]).astype(np.float64)
            exp = np.exp(logits - logits.max(axis=1, keepdims=True))
            probs = exp / exp.sum(axis=1, keepdims=True)
            for row in probs:
                k = int(row.argmax())
                label = self.labels[k] if k < len(self.labels) else str(k)
                out.append(Prediction(label, k, [float(x) for x in row]))
        return out

