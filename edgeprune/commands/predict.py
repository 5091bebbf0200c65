"""Classify sentences with a bundle, through the kiosk runtime only (onnxruntime + tokenizers, no torch).

The bundle's hashes are verified before anything runs; a tampered or incomplete bundle is refused.
"""

from __future__ import annotations

import argparse
import json

HELP = "classify sentences with a bundle (runtime only, no torch)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", help="bundle folder or .tar.gz from `edgeprune pack`")
    parser.add_argument("texts", nargs="+", help="sentences to classify")
    parser.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads (default: ORT's)")
    parser.add_argument("--json", action="store_true", help="print JSON lines instead of a table")


def run(args) -> int:
    from dataclasses import asdict

    from ..runtime import Bundle

    bundle = Bundle.load(args.bundle, threads=args.threads)
    for text, pred in zip(args.texts, bundle.predict(args.texts)):
        if args.json:
            print(json.dumps({"text": text, **asdict(pred)}))
        else:
            print(f"{pred.label}\t{max(pred.scores):.3f}\t{text}")
    return 0
