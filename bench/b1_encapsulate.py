"""B1: encapsulate throughput against tar | gzip -6 (S) and tar | pigz -6 (P).

A generated tree is committed to a *bare* repo (much faster to commit than archive) and
checked out (hardlinks into the repo, so no second copy); every run of ocitree writes a
fresh ``oci:`` directory, removed right after. The three commands alternate in rotating
order and the figures are ratios of medians.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from common import MIB, VENV_BIN, figure, fmt_seconds, info, median, q, shell, timed

from ocitree.run import run
from support.gentree import commit_tree, generate_tree

REF = "bench/b1"
S_TARGET = 0.6
P_TARGET = 1.3
RSS_TARGET_MIB = 256


@dataclass(frozen=True)
class B1Data:
    repo: Path
    ref: str
    checkout: Path
    total_bytes: int
    file_count: int


def prepare(work: Path, size: int) -> B1Data:
    """Generate, commit (bare repo) and check out the test tree."""
    tree = work / "tree"
    repo = work / "repo"
    checkout = work / "checkout"
    gen = generate_tree(tree, size=size, components=60, seed=0)
    commit_tree(tree, repo, REF, mode="bare")
    shutil.rmtree(tree)
    run(["ostree", "checkout", f"--repo={repo}", REF, str(checkout)])
    return B1Data(repo, REF, checkout, gen.total_bytes, gen.file_count)


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _ocitree_run(data: B1Data, dest: Path) -> tuple[float, int, int]:
    """One encapsulate run; returns (seconds, peak RSS in KiB, image bytes)."""
    t = timed([
        "/usr/bin/time", "-f", "%M",
        VENV_BIN / "ocitree", "-q", "encapsulate", "--repo", data.repo, data.ref,
        f"oci:{dest}:bench",
    ])  # fmt: skip
    lines = t.stderr.decode(errors="replace").strip().splitlines()
    rss_kib = int(lines[-1]) if lines and lines[-1].strip().isdigit() else -1
    size = _dir_bytes(dest)
    shutil.rmtree(dest)
    return t.seconds, rss_kib, size


def bench(work: Path, size: int, runs: int) -> B1Data:
    print(f"B1 encapsulate throughput ({size / MIB:.0f} MiB tree, {runs} runs each)", flush=True)
    data = prepare(work, size)
    info(f"tree: {data.total_bytes / MIB:.0f} MiB in {data.file_count} paths, bare repo")
    nproc = len(os.sched_getaffinity(0))
    src = q(data.checkout)
    pipes = {
        "S": f"tar -cf - -C {src} . | gzip -6 | sha256sum",
        "P": f"tar -cf - -C {src} . | pigz -6 -p {nproc} | sha256sum",
    }
    times: dict[str, list[float]] = {"ocitree": [], "S": [], "P": []}
    rss: list[int] = []
    image_bytes = 0
    order = ["ocitree", "S", "P"]
    for r in range(runs):
        for name in order[r % 3 :] + order[: r % 3]:
            if name == "ocitree":
                secs, kib, image_bytes = _ocitree_run(data, work / f"oci-{r}")
                rss.append(kib)
            else:
                secs = timed(shell(pipes[name])).seconds
            times[name].append(secs)
    ours, s, p = (median(times[k]) for k in ("ocitree", "S", "P"))
    peak_mib = max(rss) / 1024
    figure("B1 time vs single-stream gzip", f"{ours / s:.2f}x", f"target <= {S_TARGET}")
    figure("B1 time vs pigz", f"{ours / p:.2f}x", f"target <= {P_TARGET}")
    figure("B1 peak RSS", f"{peak_mib:.0f} MiB", f"target <= {RSS_TARGET_MIB}")
    info(
        f"ocitree encapsulate: {fmt_seconds(times['ocitree'])}, "
        f"{data.total_bytes / MIB / ours:.0f} MiB/s, image {image_bytes / MIB:.0f} MiB"
    )
    info(f"S tar|gzip -6|sha256sum: {fmt_seconds(times['S'])}")
    info(f"P tar|pigz -6 -p {nproc}|sha256sum: {fmt_seconds(times['P'])}")
    info(f"ocitree peak RSS per run (MiB): {', '.join(f'{k / 1024:.0f}' for k in rss)}")
    return data
