"""Before/after figures for a change, side by side in one run: bench/profile_step.py on two source trees,
alternately, in fresh processes.

    git worktree add /tmp/before <commit>        # the tree before the change
    .venv/bin/python bench/compare_trees.py --before /tmp/before --after . [--repeats 5] -- --batch 16 --context 128

Everything after `--` goes to profile_step.py (run with --wall-only). Each repeat runs before, then after, each in
its own process; printed: every repeat's median ms per step, the medians of those, and after/before per pair
(below 1 = the change made the step faster). The machine's speed drifts, so the per-pair ratio is the figure to
quote.
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

PROFILE = Path(__file__).with_name("profile_step.py")


def step_ms(tree: Path, args: list[str]) -> float:
    # each tree's native kernels in a build directory of their own: sharing one would rebuild them at every switch
    env = os.environ | {"TORCH_EXTENSIONS_DIR": str(tree.resolve() / "build" / "torch_extensions")}
    out = subprocess.run([sys.executable, str(PROFILE), "--wall-only", "--src", str(tree / "src"), *args],
                         capture_output=True, text=True, check=True, env=env).stdout
    match = re.search(r"wall per step: median ([0-9.]+) ms", out)
    if not match:
        raise SystemExit(f"no timing in the output of {tree}:\n{out}")
    return float(match.group(1))


def main() -> None:
    argv = sys.argv[1:]
    rest = argv[argv.index("--") + 1:] if "--" in argv else []
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", type=Path, required=True)
    ap.add_argument("--after", type=Path, required=True)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    before, after, ratios = [], [], []
    for i in range(args.repeats):
        b, a = step_ms(args.before, rest), step_ms(args.after, rest)
        before.append(b)
        after.append(a)
        ratios.append(a / b)
        print(f"repeat {i + 1}: before {b:.2f} ms, after {a:.2f} ms, after/before {a / b:.3f}", flush=True)
    print(f"profile_step.py {' '.join(rest)}")
    print(f"median ms per step: before {statistics.median(before):.2f}, after {statistics.median(after):.2f}; "
          f"after/before per pair: median {statistics.median(ratios):.3f} (min {min(ratios):.3f}, "
          f"max {max(ratios):.3f})")


if __name__ == "__main__":
    main()
