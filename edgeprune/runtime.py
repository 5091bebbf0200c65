"""The kiosk side: load a bundle, prove it is the one that was converted, predict. No torch.

Imports only numpy, onnxruntime, tokenizers and the stdlib (plus edgeprune's own numpy-only modules),
so a kiosk installs `edgeprune` without the train/convert extras. Loading trusts nothing in the folder:
every file in the manifest's table is size- and sha256-checked before ONNX Runtime sees it, archives
are unpacked member by member with path checks, and no file in a bundle is ever executed or unpickled.

`manifest.json` is deliberately outside the hashed table: bench writes measured figures into it after
convert. The bundle's identity is `bundle_digest(manifest)`, the hash of the file table.
"""

from __future__ import annotations

import atexit
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


def bundle_digest(manifest: dict) -> str:
    """The bundle's identity: sha256 of the canonical JSON of its file table."""
    return sha256_json(manifest["files"])


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
    return manifest


def verify_files(folder: Path, manifest: dict) -> None:
    """Every listed file present, regular, inside the folder, of the listed size and sha256."""
    folder = Path(folder).resolve()
    files = manifest["files"]
    for required in (MODEL, TOKENIZER):
        if required not in files:
            raise BundleError(f"bundle manifest lists no {required}", _REBUILD)
    for name, entry in files.items():
        rel = _safe_relpath(name)
        path = folder / rel
        if path.is_symlink() or not path.resolve().is_relative_to(folder):
            raise BundleError(f"bundle file {name} is a link or leaves the bundle", _REBUILD)
        if not path.is_file():
            raise BundleError(f"bundle file {name} is missing (incomplete bundle)", _REBUILD)
        size = path.stat().st_size
        if size != entry.get("bytes"):
            raise BundleError(f"bundle file {name} has {size} bytes, manifest says {entry.get('bytes')} "
                              "(truncated or altered)", _REBUILD)
        if sha256_file(path) != entry.get("sha256"):
            raise BundleError(f"bundle file {name} fails its sha256 check (tampered or corrupted)", _REBUILD)


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


def make_session(folder: Path, manifest: dict, threads: int | None = None,
                 providers: list[str] | None = None):
    """An InferenceSession over the bundle's model, csr/2:4 tensors decoded and handed over in memory."""
    import onnxruntime as ort

    from .convert.formats import from_sidecar

    folder = Path(folder)
    model_bytes = (folder / MODEL).read_bytes()
    for location in external_locations(model_bytes):
        if location != SIDECAR or SIDECAR not in manifest["files"]:
            raise BundleError(f"{MODEL} points at external data {location!r} outside the bundle's weights",
                              "refusing it; use a bundle written by `edgeprune convert`")
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    options.log_severity_level = 3
    sparse = sidecar_tensors(manifest)
    keep_alive = []
    if sparse:
        with np.load(folder / SIDECAR, allow_pickle=False) as arrays:
            names, values = [], []
            for t in sparse:
                dense = np.ascontiguousarray(from_sidecar(t["form"], t["key"], arrays, t["shape"], t.get("axis")))
                keep_alive.append(dense)
                names.append(t["name"])
                values.append(ort.OrtValue.ortvalue_from_numpy(dense))
        options.add_external_initializers(names, values)
    try:
        session = ort.InferenceSession(model_bytes, options,
                                       providers=list(providers or ["CPUExecutionProvider"]))
    except Exception as exc:  # noqa: BLE001 - ORT raises several unrelated types for bad models
        raise BundleError(f"ONNX Runtime cannot load {folder / MODEL} ({str(exc)[:200]})", _REBUILD) from exc
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


class Bundle:
    """A verified bundle; build it with `Bundle.load`."""

    def __init__(self, path: Path, manifest: dict, session, tokenizer):
        self.path = Path(path)
        self.manifest = manifest
        self.session = session
        self._tokenizer = tokenizer
        self.labels: list[str] = list(manifest.get("labels", []))
        self.max_length: int = int(manifest.get("max_length", 128))
        self.input_names: list[str] = list(manifest.get("inputs", ["input_ids", "attention_mask"]))
        self.digest = bundle_digest(manifest)

    @classmethod
    def load(cls, path, threads: int | None = None, providers: list[str] | None = None) -> "Bundle":
        from tokenizers import Tokenizer

        path = Path(path)
        if path.is_file() and tarfile.is_tarfile(path):
            path = _unpack(path)
        elif not path.is_dir():
            raise BundleError(f"bundle {path} does not exist", "pass a bundle folder or a .tar.gz from `edgeprune pack`")
        manifest = read_manifest(path)
        verify_files(path, manifest)
        session = make_session(path, manifest, threads, providers)
        try:
            tokenizer = Tokenizer.from_file(str(path / TOKENIZER))
        except Exception as exc:  # noqa: BLE001 - tokenizers raises a bare Exception
            raise BundleError(f"cannot read {path / TOKENIZER} ({exc})", _REBUILD) from exc
        max_length = int(manifest.get("max_length", 128))
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

