"""Pack a verified bundle into one .tar.gz for shipping.

The bundle is verified first (a bad bundle is never packed); the archive holds only regular files at
relative paths, which is all `Bundle.load` accepts when it unpacks one.
"""

from __future__ import annotations

import argparse

HELP = "pack a bundle folder into one verified .tar.gz"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", help="bundle folder written by `edgeprune convert`")
    parser.add_argument("-o", "--output", required=True, help="archive to write (FILE.tar.gz)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing archive")


def pack_bundle(bundle_dir, out_file, overwrite: bool = False):
    import os
    import tarfile
    import tempfile
    from pathlib import Path

    from ..atomic import check_output_free
    from ..runtime import MANIFEST, read_manifest, verify_files

    bundle_dir, out_file = Path(bundle_dir), Path(out_file)
    check_output_free(out_file, overwrite)
    manifest = read_manifest(bundle_dir)
    verify_files(bundle_dir, manifest)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out_file.name}.", dir=out_file.parent)
    os.close(fd)
    try:
        with tarfile.open(tmp, "w:gz") as tar:
            for name in [MANIFEST, *sorted(manifest["files"])]:
                info = tar.gettarinfo(str(bundle_dir / name), arcname=name)
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                info.mode = 0o644
                with open(bundle_dir / name, "rb") as f:
                    tar.addfile(info, f)
        os.replace(tmp, out_file)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out_file


def run(args) -> int:
    out = pack_bundle(args.bundle, args.output, args.overwrite)
    print(f"{out}: {out.stat().st_size / 1e6:.2f} MB")
    return 0
