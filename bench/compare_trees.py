"""One benchmark, two trees of this repository, side by side: did a change move it?

    .venv/bin/python bench/compare_trees.py --base main [--rounds 5] health.py --duration 4
    .venv/bin/python bench/compare_trees.py --base 131e522 ingest.py --repeat 1

Checks out ``--base`` (a git ref) into a temporary worktree, then runs the named
script of ``bench/`` from each tree in turn, ``--rounds`` times, alternating (base,
this tree, base, ...), each with its own tree's ``src/`` first on ``PYTHONPATH`` (the
servers the script starts inherit it) and this checkout's virtual environment. Every
line a run prints that ends in a percentage (the benchmarks' ratios against their
same-run baselines: a bare Litestar app, ``psql \\copy``) is collected; printed at the
end: the median of each figure per tree, and this tree's median as a share of the
base's. Ratios, not absolute numbers: on a shared machine those swing by tens of
percent between runs, while a benchmark's own baseline moves with it.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
# "<label> <spaces or colon> 123.4%" at the end of a line (anything after it ignored)
FIGURE = re.compile(r"^(?P<label>\S.*?)\s*:?\s+(?P<value>-?[\d,]+(?:\.\d+)?)%")


def figures(output: str) -> dict[str, float]:
    found: dict[str, float] = {}
    for line in output.splitlines():
        if match := FIGURE.match(line.strip()):
            found[match["label"].strip()] = float(match["value"].replace(",", ""))
    return found


def run(tree: Path, script: list[str]) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    proc = subprocess.run(
        [sys.executable, str(tree / "bench" / script[0]), *script[1:]],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        sys.exit(f"{tree}: {' '.join(script)} failed:\n{proc.stdout}\n{proc.stderr}")
    print(proc.stdout, end="", flush=True)
    return figures(proc.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="git ref to compare against")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("script", help="a script of bench/, e.g. health.py")
    parser.add_argument("script_args", nargs=argparse.REMAINDER, help="its arguments")
    args = parser.parse_args()
    script = [args.script, *(a for a in args.script_args if a != "--")]
    if not (HERE / "bench" / args.script).is_file():
        parser.error(f"no bench/{args.script}")
    with tempfile.TemporaryDirectory(prefix="mds-base-") as tmp:
        base = Path(tmp) / "tree"
        subprocess.run(
            ["git", "worktree", "add", "--detach", "-q", str(base), args.base], cwd=HERE, check=True
        )
        try:
            results: dict[str, dict[str, list[float]]] = {
                "base": defaultdict(list),
                "this": defaultdict(list),
            }
            for n in range(1, args.rounds + 1):
                for name, tree in (("base", base), ("this", HERE)):
                    print(f"== round {n}/{args.rounds}: {name} ({tree})", flush=True)
                    for label, value in run(tree, script).items():
                        results[name][label].append(value)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=HERE)
    print(f"\nmedian of {args.rounds} alternating rounds: {' '.join(script)}")
    print(f"{'figure':58} {args.base:>10} {'this tree':>10} {'this/base':>10}")
    for label, values in results["base"].items():
        mine = results["this"].get(label)
        if not mine:
            continue
        b, t = statistics.median(values), statistics.median(mine)
        share = f"{t / b:>10.1%}" if b else f"{'-':>10}"
        print(f"{label[:58]:58} {b:>9.1f}% {t:>9.1f}% {share}")


if __name__ == "__main__":
    main()
