"""List the target profiles (built-ins, EDGEPRUNE_TARGETS_PATH folders, entry points), or show one resolved.

A budget of 0.0 is "not set yet": gate lists it as "no limit set" and lets it pass.

examples:
  edgeprune targets
  edgeprune targets cpu-kiosk --json
  edgeprune targets ./my-device.toml
"""

from __future__ import annotations

import argparse
import json

HELP = "list target profiles, or show one resolved (name or .toml path)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", metavar="NAME",
                        help="a registered target name or a path to a .toml profile (default: list all)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


def _show(profile) -> str:
    budget = profile.budget
    lines = [
        f"{profile.name}: {profile.description}",
        f"  source        {profile.source}",
        f"  arch          {profile.arch}",
        f"  providers     {', '.join(profile.providers)}",
        f"  threads       {profile.threads}",
        f"  formats       {', '.join(profile.formats)}",
        f"  quantization  {profile.quantization}",
        f"  workload      batch {profile.workload.batch_size}, sequence length "
        f"{profile.workload.sequence_length}",
        f"  isa           {', '.join(profile.isa) or 'any (not pinned)'}",
        f"  vocabulary    {profile.vocabulary}",
    ]
    if profile.gpu:
        lines.append(f"  min GPU       sm{profile.min_gpu_capability:g}" if profile.min_gpu_capability else "  min GPU       any")
    lines += [
        "  budget",
    ]
    for name, limit in budget.limits().items():
        shown = "no limit set" if limit == 0.0 else f"{limit:g}"
        optional = "  (may be unmeasured)" if name in budget.optional else ""
        lines.append(f"    {name:<18}{shown}{optional}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from ..targets import list_targets, resolve_target

    if args.name:
        profile = resolve_target(args.name)
        print(json.dumps({**profile.to_dict(), "source": profile.source}, indent=2) if args.json
              else _show(profile))
        return 0
    profiles = list_targets()
    if args.json:
        print(json.dumps([{**p.to_dict(), "source": p.source} for p in profiles], indent=2))
        return 0
    width = max((len(p.name) for p in profiles), default=0)
    for p in profiles:
        print(f"{p.name:<{width}}  {p.arch:<8} {p.quantization:<13} {p.description}")
    return 0
