"""Benchmarks of docs BENCHMARKS.md (B1, B2): ``bench/run.py [--only b1|b2] [--size SIZE]``.

Prints one line per figure, ``name: value (target …)``; indented lines are information.
Exits 0 whether or not targets are met.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(_ROOT / "src"), str(_ROOT / "tests")]

import b1_encapsulate  # noqa: E402
import b2_chunking  # noqa: E402
from common import workdir  # noqa: E402

from support.gentree import parse_size  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--only", choices=["b1", "b2"], action="append", help="run only this benchmark (repeatable)"
    )
    parser.add_argument(
        "--size",
        type=parse_size,
        default=os.environ.get("BENCH_SIZE", "1G"),
        help="tree size for B1, e.g. 300M, 1G (default: $BENCH_SIZE or 1G)",
    )
    parser.add_argument(
        "--runs",
        type=int,
        default=3,
        help="runs of each command, medians taken (default and minimum: 3)",
    )
    args = parser.parse_args(argv)
    if args.runs < 3:
        parser.error("--runs must be at least 3 (figures are medians of at least 3 runs)")
    selected = args.only or ["b1", "b2"]
    start = time.perf_counter()
    with workdir() as work:
        tree_repo = None
        if "b1" in selected:
            data = b1_encapsulate.bench(work / "b1", args.size, args.runs)
            tree_repo = (data.repo, data.ref)
        if "b2" in selected:
            b2_chunking.bench(tree_repo)
    print(f"  total {time.perf_counter() - start:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
