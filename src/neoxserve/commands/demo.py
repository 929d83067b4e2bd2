"""`neoxserve demo write DIR [--random]`: write an embedded demo model as a standard Hugging Face directory: the
trained toy model (`--model demo`, model/demo_trained/README.md), or with --random the random-weight one
(`--model demo-random`: its text is noise)."""
from __future__ import annotations

import argparse
import sys


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("demo", help="the embedded demo models", description=__doc__)
    actions = p.add_subparsers(dest="demo_command", required=True)
    write = actions.add_parser("write", help="write a demo model directory")
    write.add_argument("dir", help="directory to write (created if needed)")
    write.add_argument("--random", action="store_true", help="the random-weight model instead of the trained one")
    write.add_argument("--seed", type=int, default=0, help="with --random: weights seed (same seed, same bytes)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..model.demo import write_demo_model, write_trained_demo_model

    if args.random:
        path = write_demo_model(args.dir, seed=args.seed)
        print(f"wrote the random-weight demo model to {path} (its text is noise)", file=sys.stderr)
    else:
        path = write_trained_demo_model(args.dir)
        print(f"wrote the trained demo model to {path} (a toy: English-looking phrases, no knowledge)",
              file=sys.stderr)
    return 0
