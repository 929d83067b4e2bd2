"""`neoxserve demo write DIR`: write the demo model directory (random weights: its text is noise)."""
from __future__ import annotations

import argparse
import sys


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("demo", help="the embedded demo model", description=__doc__)
    actions = p.add_subparsers(dest="demo_command", required=True)
    write = actions.add_parser("write", help="write the demo model directory")
    write.add_argument("dir", help="directory to write (created if needed)")
    write.add_argument("--seed", type=int, default=0, help="weights seed (same seed, same bytes)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..model.demo import write_demo_model

    path = write_demo_model(args.dir, seed=args.seed)
    print(f"wrote the demo model to {path} (random weights: its text is noise)", file=sys.stderr)
    return 0
