"""`edgeprune` command line: one subcommand per module under `edgeprune.commands`.

Each command module exposes `HELP` (one line), `add_arguments(parser)` and `run(args) -> int`, and keeps
heavy imports (torch, transformers, onnx) inside `run`, so `edgeprune --help` and the torch-free
`predict` stay instant. Any `EdgepruneError` becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from . import __version__
from .errors import EdgepruneError

# name -> module under edgeprune.commands; order is the order shown in --help.
COMMANDS = (
    "train",
    "sensitivity",
    "convert",
    "bench",
    "gate",
    "run",
    "targets",
    "inspect",
    "pack",
    "predict",
)


def _available_commands():
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"edgeprune.commands.{name.replace('-', '_')}")
        except ModuleNotFoundError as exc:  # a stage not built yet, or its extra not installed
            if exc.name and exc.name.startswith("edgeprune.commands"):
                continue
            raise
        yield name, module


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgeprune",
        description="Prune a transformer during fine-tuning, convert it to a verified ONNX bundle, "
        "and gate it on a device's budgets.",
    )
    parser.add_argument("--version", action="version", version=f"edgeprune {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, module in _available_commands():
        p = sub.add_parser(name, help=module.HELP, description=module.__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except EdgepruneError as exc:
        print(f"edgeprune {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"edgeprune {args.command}: interrupted; no partial output was kept", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
