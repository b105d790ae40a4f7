"""B3: device pull, import and deploy: ``ocitree rebase`` against skopeo copy + untar.

A generated tree is committed (bare repo), encapsulated and pushed to a loopback
``docker-registry`` (the image B4 starts from too). Each ocitree run rebases a fresh
sysroot on its own tmpfs (``init-fs``, ``os-init``, nothing deployed); TMPDIR is on the
same tmpfs, so a thread sampling its use every 0.1 s sees everything the pull writes
(under strace, the only file ocitree and skopeo write elsewhere is containers' small
blob-info cache in /var/lib/containers/cache).
The baseline, on a tmpfs too, is ``skopeo copy docker://… dir:X`` then every layer of X
(the manifest's layers, in order) through ``gzip -dc | tar -xf -`` into one directory.
The two alternate; the figures are ratios of medians.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from common import (
    MIB,
    VENV_BIN,
    DiskSampler,
    figure,
    fmt_seconds,
    info,
    init_sysroot,
    layers_bytes,
    layout_manifest,
    median,
    q,
    shell,
    timed,
    timed_rss,
    tmpfs,
)

from ocitree.run import Arg, run
from support.gentree import commit_tree, generate_tree
from support.registry import Registry

OSNAME = "bench"
REF = "bench/os"
NAME = "bench/os:stable"  # the registry tag the device follows (v1 in B3, v2 pushed in B4)
TIME_TARGET = 1.5
RSS_TARGET_MIB = 256
OCITREE = VENV_BIN / "ocitree"


@dataclass(frozen=True)
class DeviceImages:
    """v1 of the generated OS: commit, ``oci:`` layout and the registry it is pushed to."""

    work: Path
    size: int
    registry: Registry
    registry_storage: Path
    repo: Path  # bare repo; B4 commits v2 to ``ref`` on top of v1
    ref: str
    v1: str  # v1's commit checksum
    layout: Path  # oci layout, tag v1 (and v2 from B4)
    image_bytes: int  # v1's compressed layer bytes
    tree_bytes: int

    @property
    def docker_ref(self) -> str:
        return self.registry.ref(NAME)

    @property
    def imgref(self) -> str:
        return f"ostree-unverified-registry:{self.registry.host}/{NAME}"

    def tmpfs_size(self) -> str:
        """Room for a repo of the tree, a deployment, and a second copy should one occur."""
        return f"{(3 * self.size + (512 << 20)) // MIB}M"


def prepare(
    work: Path,
    size: int,
    registry: Registry,
    registry_storage: Path,
    base: tuple[Path, str] | None = None,
) -> DeviceImages:
    """Make v1 (or reuse ``base``, B1's bare repo of the same tree), encapsulate and push it."""
    work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    if base is not None:
        repo, ref = base
        v1 = run(["ostree", "rev-parse", f"--repo={repo}", ref]).stdout.decode().strip()
        tree_bytes = size
        info(f"v1: B1's commit {v1[:12]} of the same tree ({ref})")
    else:
        repo, ref = work / "repo", REF
        gen = generate_tree(work / "tree-v1", size=size, components=60, seed=0)
        v1 = commit_tree(gen.path, repo, ref, mode="bare")
        shutil.rmtree(gen.path)
        tree_bytes = gen.total_bytes
        info(
            f"v1: {tree_bytes / MIB:.0f} MiB tree generated and committed (bare repo) "
            f"in {time.perf_counter() - start:.0f} s"
        )
    layout = work / "oci"
    enc = timed([OCITREE, "-q", "encapsulate", "--repo", repo, ref, f"oci:{layout}:v1"])
    push = timed(
        [OCITREE, "-q", "push", f"oci:{layout}:v1", registry.ref(NAME), "--tls-verify=false"]
    )
    image_bytes = layers_bytes(layout_manifest(layout, "v1"))
    info(
        f"v1 image: {image_bytes / MIB:.0f} MiB compressed, encapsulated in {enc.seconds:.0f} s, "
        f"pushed to {registry.host} in {push.seconds:.0f} s"
    )
    return DeviceImages(
        work=work,
        size=size,
        registry=registry,
        registry_storage=registry_storage,
        repo=repo,
        ref=ref,
        v1=v1,
        layout=layout,
        image_bytes=image_bytes,
        tree_bytes=tree_bytes,
    )


@dataclass(frozen=True)
class RebaseRun:
    seconds: float
    rss_kib: int
    peak_disk: int  # bytes above the fresh sysroot's, on its tmpfs
    final_disk: int  # the same once the rebase is done: repo and deployment
    fetched: int


@dataclass(frozen=True)
class BaselineRun:
    copy_seconds: float
    untar_seconds: float
    peak_disk: int

    @property
    def seconds(self) -> float:
        return self.copy_seconds + self.untar_seconds


def rebase_fresh(images: DeviceImages, mnt: Path) -> tuple[Path, dict[str, object], RebaseRun]:
    """``ocitree rebase`` of a fresh sysroot at ``mnt/sysroot`` (``mnt`` a mounted tmpfs)."""
    sysroot = init_sysroot(mnt / "sysroot", OSNAME)
    tmp = mnt / "tmp"
    tmp.mkdir()
    argv: list[Arg] = [
        OCITREE, "rebase", images.imgref, "--sysroot", sysroot, "--tls-verify=false", "--json",
    ]  # fmt: skip
    with DiskSampler([mnt]) as disk:
        t, kib = timed_rss(argv, env={"TMPDIR": str(tmp)})
    result = json.loads(t.stdout)
    if not result.get("deployment"):
        raise RuntimeError(f"ocitree rebase deployed nothing: {result}")
    r = RebaseRun(
        t.seconds,
        kib,
        disk.peak_delta(0),
        disk.final_delta(0),
        int(result["fetched_bytes"]),
    )
    return sysroot, result, r


def _ocitree_run(images: DeviceImages, mnt: Path) -> RebaseRun:
    with tmpfs(mnt, images.tmpfs_size()):
        return rebase_fresh(images, mnt)[2]


def _baseline_run(images: DeviceImages, mnt: Path) -> BaselineRun:
    with tmpfs(mnt, images.tmpfs_size()):
        x, out, tmp = mnt / "x", mnt / "out", mnt / "tmp"
        out.mkdir()
        tmp.mkdir()
        with DiskSampler([mnt]) as disk:
            copy = timed(
                ["skopeo", "copy", "--src-tls-verify=false", images.docker_ref, f"dir:{x}"],
                env={"TMPDIR": str(tmp)},
            )
            # dir: names blobs by digest (no algorithm); manifest.json, version and the
            # config are in X too: only the manifest's layers are unpacked, in order.
            manifest = json.loads((x / "manifest.json").read_bytes())
            blobs = " ".join(q(x / layer["digest"].split(":")[1]) for layer in manifest["layers"])
            untar = timed(
                shell(f'for f in {blobs}; do gzip -dc "$f" | tar -xf - -C {q(out)}; done')
            )
    return BaselineRun(copy.seconds, untar.seconds, disk.peak_delta(0))


def bench(images: DeviceImages, runs: int) -> None:
    print(
        f"B3 device pull, import and deploy ({images.tree_bytes / MIB:.0f} MiB tree, "
        f"{images.image_bytes / MIB:.0f} MiB image, {runs} runs each)",
        flush=True,
    )
    # Both read the registry's blobs: have them in the page cache before either runs.
    run(["sh", "-c", f"find {q(images.registry_storage)} -type f -exec cat {{}} + >/dev/null"])
    mnt = images.work / "b3-mnt"
    ours: list[RebaseRun] = []
    base: list[BaselineRun] = []
    for r in range(runs):
        for name in ("ocitree", "baseline") if r % 2 == 0 else ("baseline", "ocitree"):
            if name == "ocitree":
                ours.append(_ocitree_run(images, mnt))
            else:
                base.append(_baseline_run(images, mnt))
    t_ours = median([x.seconds for x in ours])
    t_base = median([x.seconds for x in base])
    peak_rss = max(x.rss_kib for x in ours) / 1024
    peak_disk = max(x.peak_disk for x in ours)
    final_disk = median([x.final_disk for x in ours])
    figure("B3 time vs skopeo copy + untar", f"{t_ours / t_base:.2f}x", f"target <= {TIME_TARGET}")
    figure("B3 peak RSS", f"{peak_rss:.0f} MiB", f"target <= {RSS_TARGET_MIB}")
    figure(
        "B3 peak disk use",
        f"{peak_disk / MIB:.0f} MiB vs image {images.image_bytes / MIB:.0f} MiB",
        f"target: no second full copy; repo and deployment at the end {final_disk / MIB:.0f} MiB",
    )
    info(
        f"ocitree rebase: {fmt_seconds([x.seconds for x in ours])}, "
        f"{images.tree_bytes / MIB / t_ours:.0f} MiB/s of tree, "
        f"fetched {ours[-1].fetched / MIB:.0f} MiB"
    )
    info(
        f"skopeo copy + untar: {fmt_seconds([x.seconds for x in base])} "
        f"(copy {fmt_seconds([x.copy_seconds for x in base])}; "
        f"untar {fmt_seconds([x.untar_seconds for x in base])})"
    )
    info(f"ocitree peak RSS per run (MiB): {', '.join(f'{x.rss_kib / 1024:.0f}' for x in ours)}")
    info(
        f"disk: peak above the end {(peak_disk - final_disk) / MIB:.0f} MiB "
        f"({(peak_disk - final_disk) / images.image_bytes:.2f}x the image); "
        f"baseline peak {max(x.peak_disk for x in base) / MIB:.0f} MiB"
    )
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    info(f"load average at the end: {load} on {len(os.sched_getaffinity(0))} CPUs")
