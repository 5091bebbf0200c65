"""Chain train -> convert -> bench -> gate into OUT/checkpoint, OUT/bundle and OUT/report.

A stage whose output is already there and up to date is skipped: each stage's input hashes (the recipe
with its --set overrides; the checkpoint and the target for convert; the bundle, the target's
measurement settings, the eval data and this host for bench) and the identity of its output are kept in
OUT/.edgeprune-run/. Change the recipe and everything is redone; change only a budget and only gate runs.
The exit code is the gate's: 0 every budget met, 1 a budget missed, 2 bad input.

examples:
  edgeprune run recipes/example.yaml --target cpu-kiosk -o out/kiosk
  edgeprune run recipes/example.yaml --target cpu-kiosk -o out/kiosk --set pruning.0.final_sparsity=0.8
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "train, convert, bench and gate in one go, skipping up-to-date stages (exit code = gate's)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", type=Path, metavar="RECIPE", help="recipe YAML file")
    parser.add_argument("--target", required=True, metavar="NAME", help="built-in target name or path to a .toml")
    parser.add_argument("-o", "--output", required=True, type=Path, metavar="OUT", help="folder for all stages")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe field, e.g. pruning.0.final_sparsity=0.8 (repeatable)")
    parser.add_argument("--overwrite", action="store_true",
                        help="redo every stage (and replace OUT if it was not made by `edgeprune run`)")
    parser.add_argument("--data", type=Path, metavar="DIR", help="eval data folder for bench (default: the recipe's)")
    parser.add_argument("--runs", type=int, default=200, metavar="N", help="bench: minimum timed runs (default: 200)")
    parser.add_argument("--eval-limit", type=int, metavar="N", help="bench: score only the first N eval examples")
    parser.add_argument("--no-baselines", action="store_true", help="bench: skip the speed baselines")
    parser.add_argument("--json", action="store_true", help="print the gate verdict as JSON")


def run(args: argparse.Namespace) -> int:
    import json

    from ..bench.benchmark import BenchSettings
    from ..chain import run_chain
    from ..gate import format_table

    settings = BenchSettings(runs=args.runs, eval_limit=args.eval_limit, baselines=not args.no_baselines)
    result = run_chain(args.recipe, args.target, args.output, overrides=args.overrides, overwrite=args.overwrite,
                       data_dir=args.data, settings=settings)
    print(json.dumps({"ran": result.ran, "skipped": result.skipped, **result.verdict.to_dict()}, indent=2)
          if args.json else format_table(result.verdict))
    return result.exit_code
