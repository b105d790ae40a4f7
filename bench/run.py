"""Benchmarks of docs BENCHMARKS.md (B1-B5): ``bench/run.py [--only b1|…|b5] [--size SIZE]``.

Prints one line per figure, ``name: value (target …)``; indented lines are information.
Exits 0 whether or not targets are met, and when a benchmark fails (it says so).
B3 and B4 need root (device sysroots live on tmpfs mounts) and docker-registry; B5
needs buildah and bubblewrap.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(_ROOT / "src"), str(_ROOT / "tests")]

import b1_encapsulate  # noqa: E402
import b2_chunking  # noqa: E402
import b3_device  # noqa: E402
import b4_update  # noqa: E402
import b5_build  # noqa: E402
from common import can_mount_tmpfs, info, workdir  # noqa: E402

from support.gentree import parse_size  # noqa: E402
from support.registry import start_registry  # noqa: E402

ALL = ["b1", "b2", "b3", "b4", "b5"]


@contextmanager
def guarded(name: str, failed: list[str]) -> Iterator[None]:
    """Report a benchmark that fails and go on with the others (the exit code stays 0)."""
    start = time.perf_counter()
    try:
        yield
    except Exception as e:
        traceback.print_exc()
        print(f"{name.upper()} failed: {type(e).__name__}: {e}", flush=True)
        failed.append(name)
    info(f"{name.upper()} took {time.perf_counter() - start:.0f} s")


def _device_benches(
    work: Path, size: int, runs: int, selected: list[str], base: tuple[Path, str] | None
) -> None:
    why = can_mount_tmpfs()
    if why is not None:
        print(f"B3/B4 skipped: cannot mount a tmpfs for device sysroots: {why}", flush=True)
        return
    failed: list[str] = []
    with start_registry(work / "registry") as reg:
        try:
            images = b3_device.prepare(work / "device", size, reg, work / "registry/storage", base)
        except Exception as e:
            traceback.print_exc()
            print(f"B3/B4 failed to set up: {type(e).__name__}: {e}", flush=True)
            return
        if "b3" in selected:
            with guarded("b3", failed):
                b3_device.bench(images, runs)
        if "b4" in selected:
            with guarded("b4", failed):
                b4_update.bench(images)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--only", choices=ALL, action="append", help="run only this benchmark (repeatable)"
    )
    parser.add_argument(
        "--size",
        type=parse_size,
        default=os.environ.get("BENCH_SIZE", "1G"),
        help="tree size for B1, B3, B4, B5, e.g. 300M, 1G (default: $BENCH_SIZE or 1G)",
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
    selected = args.only or ALL
    start = time.perf_counter()
    with workdir() as work:
        tree_repo = None
        if "b1" in selected:
            data = b1_encapsulate.bench(work / "b1", args.size, args.runs)
            tree_repo = (data.repo, data.ref)
        if "b2" in selected:
            b2_chunking.bench(tree_repo)
        if "b5" in selected:
            # Before B4, which moves B1's ref to v2.
            with guarded("b5", []):
                b5_build.bench(work / "b5", args.size, args.runs, tree_repo)
        if "b3" in selected or "b4" in selected:
            _device_benches(work / "dev", args.size, args.runs, selected, tree_repo)
    print(f"  total {time.perf_counter() - start:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
