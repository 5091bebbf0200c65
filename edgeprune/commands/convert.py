"""Turn a pruned checkpoint into a verified kiosk bundle.

Masks are made permanent, pruned heads and FFN neurons are physically removed, the model is exported to
ONNX, fused (attention/LayerNorm/GELU) where that verifies, optionally quantized to int8, each weight is
stored in the smallest form the target can use honestly, and the bundle is checked against the
checkpoint on real sentences before it is written atomically.

--format: auto (the target's list) | dense | csr | 2:4 | coo (ONNX sparse_initializer)
--quantize: none | int8-dynamic | int8-dynamic-per-channel | int8-static (default: the target's)
"""

from __future__ import annotations

import argparse
import json

HELP = "checkpoint -> verified ONNX bundle (structure removed, sparse forms, int8)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="folder written by `edgeprune train`")
    parser.add_argument("--target", help="built-in target name or a .toml path (default: none, dense fp32)")
    parser.add_argument("-o", "--output", required=True, help="bundle folder to write")
    parser.add_argument("--format", dest="fmt", help="auto | dense | csr | 2:4 | coo (default: auto with "
                        "--target, else dense)")
    parser.add_argument("--quantize", help="none | int8-dynamic | int8-dynamic-per-channel | int8-static "
                        "(default: the target's quantization, else none)")
    parser.add_argument("--no-structured", action="store_true",
                        help="keep pruned heads/neurons as zeros instead of removing them")
    parser.add_argument("--data", help="eval data folder (default: the recipe's data.path when local)")
    parser.add_argument("--eval-limit", type=int, help="measure accuracy on the first N rows of the recipe's "
                        "eval split (default: the recipe's data.eval_limit, else all)")
    parser.add_argument("--int8-min-agreement", type=float, metavar="F",
                        help="int8 verification: least share of sentences whose label matches fp32 (default: 0.9)")
    parser.add_argument("--int8-max-drop", type=float, metavar="F",
                        help="int8 / trimmed-vocabulary verification: largest accuracy drop vs the checkpoint "
                             "(default: 0.03; the target's accuracy budget is gate's to judge)")
    parser.add_argument("--vocabulary", choices=("full", "train"),
                        help="train: trim the embeddings to the tokens of the training split plus every "
                             "character, verified like int8 (default: the target's vocabulary, else full)")
    parser.add_argument("--embeddings", choices=("same", "int4"),
                        help="int4: store the word embeddings in 4-bit blocks (the whole vocabulary, a third of "
                             "int8's bytes), verified like int8 (default: the target's embeddings, else same)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    parser.add_argument("--json", action="store_true", help="print the manifest summary as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")


def run(args) -> int:
    from pathlib import Path

    from ..convert import convert_checkpoint
    from ..convert.options import ConvertOptionError, resolve_options
    from ..errors import CheckpointError
    from ..runtime import bundle_digest, read_manifest

    if not Path(args.checkpoint).is_dir():
        raise CheckpointError(f"checkpoint {args.checkpoint} does not exist",
                              "pass the -o folder written by `edgeprune train`")
    if args.eval_limit is not None and args.eval_limit < 1:
        raise ConvertOptionError("--eval-limit must be at least 1", "pass a positive N or leave it out")
    target = None
    if args.target:
        from ..targets import resolve_target

        target = resolve_target(args.target)
    # bad input: fail before loading
    resolve_options(target, args.fmt, args.quantize, not args.no_structured, args.int8_min_agreement,
                    args.int8_max_drop, args.vocabulary, args.embeddings)
    out = convert_checkpoint(args.checkpoint, args.output, target=target, fmt=args.fmt,
                             quantize=args.quantize, structured=not args.no_structured,
                             overwrite=args.overwrite, data_dir=args.data, eval_limit=args.eval_limit,
                             progress=not args.quiet, int8_min_agreement=args.int8_min_agreement,
                             int8_max_drop=args.int8_max_drop, vocabulary=args.vocabulary,
                             embeddings=args.embeddings)
    manifest = read_manifest(out)
    summary = {"bundle": str(out), "digest": bundle_digest(manifest),
               "bundle_bytes": manifest["sizes"]["bundle_bytes"], "accuracy": manifest["accuracy"],
               "verification": manifest["verification"]["passed"]}
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        acc = manifest["accuracy"]
        acc_text = (f"accuracy fp32 {acc['fp32']:.4f}, bundle {acc['bundle']:.4f}" if acc["measured"]
                    else f"accuracy not measured ({acc['reason']})")
        print(f"{out}: {summary['bundle_bytes'] / 1e6:.2f} MB, verified, {acc_text}")
    return 0
