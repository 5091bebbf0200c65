"""Atomic output folders: an interrupted or failed stage never leaves a half-written result.

Work happens in a hidden sibling temp folder; only a complete result is renamed into place. A sibling
(not /tmp) keeps the final rename on one filesystem, where it is atomic.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import OutputExistsError


def check_output_free(target: Path, overwrite: bool) -> None:
    """Refuse early, before any expensive work, when `target` exists and may not be replaced."""
    target = Path(target)
    if target.exists() and not overwrite:
        raise OutputExistsError(
            f"output {target} already exists",
            "choose another -o folder, or pass --overwrite to replace it",
        )


@contextlib.contextmanager
def atomic_dir(target: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temp folder; on success it replaces `target`, on any error it is removed."""
    target = Path(target)
    check_output_free(target, overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    try:
        if target.exists():
            old = target.with_name(f".{target.name}.old-{tmp.name[-8:]}")
            target.rename(old)
        tmp.rename(target)
    except BaseException:
        if old is not None and not target.exists():
            old.rename(target)  # the previous output comes back under its own name
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def atomic_write_text(path: Path, text: str) -> None:
    """Replace one file at once: write a sibling temp file, then rename it over `path`."""
    import os

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        umask = os.umask(0)
        os.umask(umask)
        # mkstemp makes 0600 files; keep the replaced file's mode, or the usual one for a new file
        os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
