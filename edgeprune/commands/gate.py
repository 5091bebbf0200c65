"""Check a bench report against a target's budgets: exit 0 when every budget passes, 1 when any is missed,
2 on bad input (missing or malformed report, a report for another target or bundle).

Every budget is listed with its measured value, its limit and pass/fail. A budget of 0.0 is "not set
yet": it is listed as "no limit set" and passes. A figure the bench host could not measure honestly
(e.g. latency of an aarch64 target benched on x86) fails its budget unless the profile lists that budget
under `budget.optional`.

examples:
  edgeprune gate out/report --target cpu-kiosk
  edgeprune gate out/report --target cpu-kiosk --bundle out/bundle --json --junit gate.xml
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = "check a bench report against a target's budgets (exit 0 pass, 1 missed, 2 bad input)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("report", type=Path, metavar="REPORT_DIR", help="folder written by `edgeprune bench`")
    parser.add_argument("--target", required=True, metavar="NAME",
                        help="built-in target name or path to a .toml profile")
    parser.add_argument("--bundle", type=Path, metavar="DIR",
                        help="also check that the report was measured on this bundle: its files verify and "
                             "its digest (manifest and file table, figures aside) is the report's")
    parser.add_argument("--json", action="store_true", help="print the verdict as JSON")
    parser.add_argument("--junit", type=Path, metavar="FILE", help="also write a JUnit XML file, one case per budget")


def gate_report_dir(report_dir: Path, target: str, bundle: Path | None = None):
    """Read, check and judge a report folder -> Verdict (raises EdgepruneError on bad input)."""
    from ..gate import check_bundle, check_report, evaluate, read_report
    from ..targets import resolve_target

    profile = resolve_target(target)
    report = read_report(report_dir)
    check_report(report, profile, where=str(report_dir))
    if bundle is not None:
        from ..runtime import verified_digest

        check_bundle(report, verified_digest(bundle), str(bundle))
    return evaluate(report, profile)


def run(args: argparse.Namespace) -> int:
    from ..atomic import atomic_write_text
    from ..gate import format_table, junit_xml

    verdict = gate_report_dir(args.report, args.target, args.bundle)
    if args.junit:
        atomic_write_text(args.junit, junit_xml(verdict))
    print(json.dumps(verdict.to_dict(), indent=2) if args.json else format_table(verdict))
    return verdict.exit_code
