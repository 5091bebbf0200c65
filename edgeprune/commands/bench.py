"""Benchmark a bundle on this host for a target profile and write a report folder.

Measures, at the profile's workload (batch size, sequence length, threads) on real eval sentences:
latency p50/p95/p99 and throughput (warm-up, then runs until the p99 settles), the peak RSS of a fresh
process that only loads and runs the bundle, the bundle's size, and its accuracy with the torch-free
runtime beside the pruned checkpoint's PyTorch accuracy and the dense reference (--dense-checkpoint,
else the dense teacher accuracy train recorded; the pruned model is never taken as dense). When the source checkpoint is at hand (recorded in the manifest, or
--checkpoint) PyTorch eager, ORT fp32 dense and ORT int8 dense baselines are measured in the same run and
every speed, memory and size figure is also given as a ratio against them.

Only what this host can measure honestly is measured: an aarch64 target on an x86 host gets accuracy and
size, with latency and memory marked `measured: false` and the reason; a GPU target on a host without a
CUDA device is refused (exit 2).

Writes REPORT_DIR/report.json (read by `edgeprune gate`), report.md and PNG plots, atomically, and records
the figures in the bundle folder's manifest.json under measured[target][host] (not part of the bundle's
digest; not done for a .tar.gz bundle, nor with --no-record).

examples:
  edgeprune bench out/bundle --target cpu-kiosk -o out/report
  edgeprune bench out/bundle --target arm-kiosk --data data/sst2 -o out/report-arm --no-baselines
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "measure a bundle's latency, memory, size and accuracy on this host for a target"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", type=Path, metavar="BUNDLE", help="bundle folder written by `edgeprune convert`")
    parser.add_argument("--target", required=True, metavar="NAME",
                        help="built-in target name or path to a .toml profile")
    parser.add_argument("-o", "--output", required=True, type=Path, metavar="REPORT_DIR",
                        help="report folder to write")
    parser.add_argument("--data", type=Path, metavar="DIR",
                        help="local data folder with a dev file (default: the recipe's data recorded in the bundle)")
    parser.add_argument("--checkpoint", type=Path, metavar="DIR",
                        help="source checkpoint for the baselines (default: the one recorded in the bundle)")
    parser.add_argument("--dense-checkpoint", type=Path, metavar="DIR",
                        help="dense fine-tuned reference (a save_pretrained classifier, e.g. the distillation "
                             "teacher) for dense_accuracy / accuracy_drop (default: the dense accuracy train "
                             "recorded, else not measured)")
    parser.add_argument("--no-record", action="store_true",
                        help="do not record the figures in the bundle's manifest.json (for a read-only bundle)")
    parser.add_argument("--overwrite", action="store_true", help="replace REPORT_DIR if it exists")
    parser.add_argument("--runs", type=int, default=200, metavar="N",
                        help="minimum timed runs per runner; more follow until the p99 settles (default: 200)")
    parser.add_argument("--warmup", type=int, default=20, metavar="N", help="untimed warm-up runs (default: 20)")
    parser.add_argument("--eval-limit", type=int, metavar="N", help="score only the first N eval examples (default: all)")
    parser.add_argument("--no-baselines", action="store_true",
                        help="skip the PyTorch/ORT dense speed baselines (the dense reference accuracy is kept)")
    parser.add_argument("--no-plots", action="store_true", help="do not draw the PNG plots")
    parser.add_argument("--json", action="store_true", help="print report.json instead of the table")


def run(args: argparse.Namespace) -> int:
    import json

    from ..bench.benchmark import BenchSettings, benchmark
    from ..bench.report import format_table
    from ..errors import EdgepruneError

    for name in ("runs", "eval_limit"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise EdgepruneError(f"--{name.replace('_', '-')} must be at least 1, got {value}", "pass a positive count")
    if args.warmup < 0:
        raise EdgepruneError(f"--warmup must be 0 or more, got {args.warmup}", "pass a count >= 0")
    settings = BenchSettings(runs=args.runs, warmup=args.warmup, eval_limit=args.eval_limit,
                             baselines=not args.no_baselines, plots=not args.no_plots, record=not args.no_record)
    report = benchmark(args.bundle, args.target, args.output, data_dir=args.data, checkpoint_dir=args.checkpoint,
                       dense_checkpoint=args.dense_checkpoint, overwrite=args.overwrite, settings=settings)
    print(json.dumps(report, indent=2) if args.json else format_table(report))
    print(f"wrote {args.output}")
    return 0
