"""``python -m bench [group ...]``: run the benchmark groups (all of them by default)."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from pathlib import Path

from bench._harness import Group, run_groups


def discover() -> dict[str, Group]:
    """Every group exposed as ``GROUPS`` by the public modules of this package, by name."""
    groups: dict[str, Group] = {}
    for module_info in sorted(pkgutil.iter_modules([str(Path(__file__).parent)])):
        if module_info.name.startswith("_"):
            continue
        module = importlib.import_module(f"bench.{module_info.name}")
        for group in getattr(module, "GROUPS", []):
            if group.name in groups:
                raise SystemExit(f"bench: two groups are named {group.name!r}")
            groups[group.name] = group
    return groups


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("groups", nargs="*", help="group names to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the groups and exit")
    parser.add_argument("--repeats", type=int, default=11, help="repeats per case (median)")
    parser.add_argument(
        "--min-time", type=float, default=0.05, help="seconds per repeat of each case"
    )
    args = parser.parse_args(argv)
    groups = discover()
    if args.list:
        for group in groups.values():
            print(f"{group.name:<12} {group.title} ({len(group.cases)} cases)")
        return 0
    unknown = [name for name in args.groups if name not in groups]
    if unknown:
        parser.error(f"unknown group(s) {', '.join(unknown)}; known: {', '.join(groups)}")
    chosen = [groups[name] for name in args.groups] if args.groups else list(groups.values())
    ok = run_groups(chosen, repeats=args.repeats, min_time=args.min_time)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
