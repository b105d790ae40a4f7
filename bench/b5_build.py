"""B5: derived build: ``ocitree build`` against ``buildah build`` + ``buildah push``.

The base: the generated tree (B1's bare repo when B1 ran, else generated here) with
busybox added as /bin/sh, committed (bare repo) and encapsulated into ``oci:BASE:base``.
The Containerfile, ``FROM oci:BASE:base``, COPYs a directory of about 50 MiB of new
files (half text, half random bytes) and RUNs a step that writes two files and appends
a line to /etc/passwd; no packages, nothing enabled.

Each run of either tool writes into a fresh copy of BASE, the destination that already
holds the base:
- ocitree: ``ocitree build -t oci:DEST:built --cache-dir CACHE`` (the cache repo keeps
  the base pulled between runs);
- buildah: ``buildah build --isolation chroot --layers=false`` (overlay storage if it
  works here, else vfs; private ``--root``/``--runroot``), then ``buildah push … oci:DEST:
  built``; the base stays in its storage between runs, the built image is removed after
  each (not timed).
One unmeasured warm-up run each (ocitree pulls the base into its cache, buildah into its
storage), then they alternate; the figures are ratios of medians. Bytes added: the
sizes of the blobs DEST gained. Limit: the COPY source and the files the RUN wrote (read
from the ocitree-built commit) as one tar through gzip -6.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import random
import re
import shutil
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from common import MIB, VENV_BIN, figure, fmt_seconds, info, median, timed

from ocitree.errors import CommandError
from ocitree.ostree.repo import Repo
from ocitree.run import Arg, find_tool, run
from support.gentree import commit_tree, generate_tree

TIME_TARGET = 0.7
BYTES_TARGET = 1.2
REF = "bench/b5-base"
OCITREE = VENV_BIN / "ocitree"
PAYLOAD_BYTES = 50 * MIB
APPLETS = ("sh", "mkdir", "echo", "cat")
# What the RUN step writes or changes, as paths of the built commit.
RUN_FILES = ("usr/lib/b5/stamp", "usr/lib/b5/joined.txt", "usr/etc/passwd")
CONTAINERFILE = """\
FROM oci:{base}:base
COPY payload /usr/share/b5-payload
RUN mkdir -p /usr/lib/b5 \\
 && echo "built by B5" > /usr/lib/b5/stamp \\
 && cat /usr/share/b5-payload/text/t000.txt /usr/share/b5-payload/text/t001.txt \\
      > /usr/lib/b5/joined.txt \\
 && echo 'b5:x:1000:1000::/var/home/b5:/bin/sh' >> /etc/passwd
"""
# ocitree --debug prints "  (STEP: 1.23s)" for each top-level step.
_STEP = re.compile(r"^  \((?P<title>.+): (?P<secs>\d+\.\d+)s\)$")
_PHASES = {
    "pull": "Pulling the base image",
    "checkout": "Checking out the base commit",
    "COPY": "COPY ",
    "RUN": "RUN ",
    "cleanup+lint": "Cleaning up and linting",
    "commit": "Committing the result",
}


@dataclass(frozen=True)
class Setup:
    work: Path
    base: Path  # oci layout, tag "base"
    context: Path
    containerfile: Path
    base_bytes: int
    payload_bytes: int


@dataclass
class Runs:
    seconds: list[float] = field(default_factory=list)
    added: list[int] = field(default_factory=list)
    phases: list[dict[str, float]] = field(default_factory=list)


def _base_tree(work: Path, size: int, base: tuple[Path, str] | None) -> tuple[Path, str]:
    """A bare repo and a ref of the generated tree with busybox: B1's plus an overlay."""
    busybox = find_tool("busybox", package="busybox-static")
    overlay = work / "busybox-overlay"
    (overlay / "usr/bin").mkdir(parents=True)
    shutil.copy(busybox, overlay / "usr/bin/busybox")
    for name in APPLETS:
        (overlay / "usr/bin" / name).symlink_to("busybox")
    if base is None:
        gen = generate_tree(work / "tree", size=size, components=60, seed=0)
        shutil.copytree(overlay, gen.path, symlinks=True, dirs_exist_ok=True)
        commit_tree(gen.path, work / "repo", REF, mode="bare")
        shutil.rmtree(gen.path)
        return work / "repo", REF
    repo_path, ref = base
    repo = Repo(repo_path)
    meta = repo.commit(repo.resolve(ref)).metadata
    argv: list[Arg] = [
        "ostree", "commit", f"--repo={repo_path}", f"--branch={REF}", f"--tree=ref={ref}",
        f"--tree=dir={overlay}", "--subject=B5 base", "--timestamp=@0", "--fsync=false",
    ]  # fmt: skip
    for key in ("version", "ostree.linux"):
        if isinstance(meta.get(key), str):
            argv.append(f"--add-metadata-string={key}={meta[key]}")
    if meta.get("ostree.bootable") is True:
        argv.append("--add-metadata=ostree.bootable=true")
    run(argv)
    return repo_path, REF


def _text_pool(rng: random.Random) -> bytes:
    words = [
        "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 10)))
        for _ in range(4000)
    ]
    lines = []
    for _ in range(20000):
        lines.append(" ".join(rng.choice(words) for _ in range(rng.randint(4, 14))))
    return ("\n".join(lines) + "\n").encode()


def make_payload(dest: Path, total: int, seed: int = 5) -> int:
    """About ``total`` bytes of new files: half text, half random; many small, a few large."""
    rng = random.Random(seed)
    pool = _text_pool(rng)
    written = 0
    i = 0
    while written < total:
        kind = "text" if i % 2 == 0 else "bin"
        size = rng.randint(1 * MIB, 4 * MIB) if i % 10 < 2 else rng.randint(4096, 96 * 1024)
        size = min(size, total - written) or 1
        if kind == "text":
            start = rng.randrange(len(pool))
            data = (pool[start:] + pool)[:size]
            while len(data) < size:
                data += pool[: size - len(data)]
        else:
            data = rng.randbytes(size)
        path = dest / kind / f"{kind[0]}{i // 2:03d}.{'txt' if kind == 'text' else 'bin'}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        written += size
        i += 1
    return written


def prepare(work: Path, size: int, base: tuple[Path, str] | None) -> Setup:
    work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    repo, ref = _base_tree(work, size, base)
    layout = work / "base"
    timed([OCITREE, "-q", "encapsulate", "--repo", repo, ref, f"oci:{layout}:base"])
    context = work / "context"
    payload_bytes = make_payload(context / "payload", PAYLOAD_BYTES)
    containerfile = context / "Containerfile"
    containerfile.write_text(CONTAINERFILE.format(base=layout))
    setup = Setup(work, layout, context, containerfile, _blob_bytes(layout), payload_bytes)
    info(
        f"base: {'B1 tree' if base else 'tree'} + busybox, image "
        f"{setup.base_bytes / MIB:.0f} MiB; payload {payload_bytes / MIB:.0f} MiB; "
        f"made in {time.perf_counter() - start:.0f} s"
    )
    return setup


def _blobs(layout: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in (layout / "blobs/sha256").iterdir()}


def _blob_bytes(layout: Path) -> int:
    return sum(_blobs(layout).values())


def _fresh_dest(setup: Setup, name: str) -> Path:
    dest = setup.work / name
    shutil.rmtree(dest, ignore_errors=True)
    run(["cp", "-a", "--reflink=auto", setup.base, dest])
    return dest


def _added(base: Path, dest: Path) -> int:
    before = _blobs(base)
    return sum(size for name, size in _blobs(dest).items() if name not in before)


def _phases(stderr: bytes, total: float) -> dict[str, float]:
    out = dict.fromkeys(_PHASES, 0.0)
    for line in stderr.decode(errors="replace").splitlines():
        m = _STEP.match(line)
        if m is None:
            continue
        for phase, prefix in _PHASES.items():
            if m["title"].startswith(prefix):
                out[phase] += float(m["secs"])
    out["encapsulate+rest"] = total - sum(out.values())
    return out


class Ocitree:
    def __init__(self, setup: Setup) -> None:
        self.setup = setup
        self.cache = setup.work / "ocitree-cache"
        self.commit = ""

    def once(self, runs: Runs | None) -> None:
        dest = _fresh_dest(self.setup, "dest-ocitree")
        t = timed([
            OCITREE, "--debug", "build", "--json", "-f", self.setup.containerfile,
            "-t", f"oci:{dest}:built", "--cache-dir", self.cache, self.setup.context,
        ])  # fmt: skip
        self.commit = json.loads(t.stdout)["commit"]
        if runs is not None:
            runs.seconds.append(t.seconds)
            runs.added.append(_added(self.setup.base, dest))
            runs.phases.append(_phases(t.stderr, t.seconds))
        shutil.rmtree(dest)

    def read(self, path: str) -> bytes:
        return run(["ostree", f"--repo={self.cache / 'repo'}", "cat", self.commit, path]).stdout


class Buildah:
    def __init__(self, setup: Setup) -> None:
        self.setup = setup
        self.root = setup.work / "buildah-root"
        # podman and buildah refuse a runroot path of 50 characters or more.
        self.runroot = Path(tempfile.mkdtemp(prefix="ocitree-b5-", dir="/tmp"))
        self.driver = "overlay"

    def _argv(self, *args: Arg) -> list[Arg]:
        return [
            "buildah", f"--root={self.root}", f"--runroot={self.runroot}",
            f"--storage-driver={self.driver}", *args,
        ]  # fmt: skip

    def warm_up(self) -> None:
        try:
            self.once(None)
        except CommandError as e:
            info(f"buildah with overlay storage failed ({e}); using vfs")
            self.close()
            self.runroot = Path(tempfile.mkdtemp(prefix="ocitree-b5-", dir="/tmp"))
            self.driver = "vfs"
            self.once(None)

    def once(self, runs: Runs | None) -> None:
        dest = _fresh_dest(self.setup, "dest-buildah")
        build = timed(
            self._argv(
                "build", "--isolation=chroot", "--layers=false", "-q",
                "-f", self.setup.containerfile, "-t", "localhost/b5:built", self.setup.context,
            )
        )  # fmt: skip
        push = timed(self._argv("push", "-q", "localhost/b5:built", f"oci:{dest}:built"))
        run(self._argv("rmi", "-f", "localhost/b5:built"))
        if runs is not None:
            total = build.seconds + push.seconds
            runs.seconds.append(total)
            runs.added.append(_added(self.setup.base, dest))
            runs.phases.append({"build": build.seconds, "push": push.seconds})
        shutil.rmtree(dest)

    def close(self) -> None:
        run(self._argv("rmi", "--all", "--force"), check=False)
        prefixes = (f"{self.root}/", f"{self.runroot}/")
        mounts = Path("/proc/self/mountinfo").read_text().splitlines()
        points = [m.split()[4] for m in mounts]
        for point in reversed(points):
            if point.startswith(prefixes) or point in (str(self.root), str(self.runroot)):
                run(["umount", "--lazy", point], check=False)
        shutil.rmtree(self.root, ignore_errors=True)
        shutil.rmtree(self.runroot, ignore_errors=True)


class _Counter(io.RawIOBase):
    def __init__(self) -> None:
        self.n = 0

    def writable(self) -> bool:
        return True

    def write(self, b: bytes) -> int:  # type: ignore[override]
        self.n += len(b)
        return len(b)


def added_content_gzip(setup: Setup, ours: Ocitree) -> tuple[int, int]:
    """(raw, gzip -6) bytes of one tar of the COPY source and the files the RUN wrote."""
    sink = _Counter()
    raw = 0
    with (
        gzip.GzipFile(fileobj=sink, mode="wb", compresslevel=6, mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w|", format=tarfile.PAX_FORMAT) as tar,
    ):
        tar.add(setup.context / "payload", arcname="usr/share/b5-payload")
        raw += setup.payload_bytes
        for path in RUN_FILES:
            data = ours.read(path)
            ti = tarfile.TarInfo(path)
            ti.size = len(data)
            ti.mode = 0o644
            tar.addfile(ti, io.BytesIO(data))
            raw += len(data)
    return raw, sink.n


def _fmt_phases(phases: list[dict[str, float]]) -> str:
    keys = list(phases[0])
    return ", ".join(f"{k} {median([p[k] for p in phases]):.1f}" for k in keys)


def bench(work: Path, size: int, runs: int, base: tuple[Path, str] | None = None) -> None:
    print(f"B5 derived build ({size / MIB:.0f} MiB base, {runs} runs each)", flush=True)
    for tool in ("buildah", "bwrap"):
        find_tool(tool)
    setup = prepare(work, size, base)
    ours, theirs = Ocitree(setup), Buildah(setup)
    try:
        start = time.perf_counter()
        ours.once(None)
        info(f"warm-up: ocitree {time.perf_counter() - start:.0f} s (base pulled into its cache)")
        start = time.perf_counter()
        theirs.warm_up()
        info(
            f"warm-up: buildah {time.perf_counter() - start:.0f} s (base pulled into its "
            f"{theirs.driver} storage)"
        )
        o, b = Runs(), Runs()
        for r in range(runs):
            for tool in ("ocitree", "buildah") if r % 2 == 0 else ("buildah", "ocitree"):
                if tool == "ocitree":
                    ours.once(o)
                else:
                    theirs.once(b)
    finally:
        theirs.close()
    raw, limit = added_content_gzip(setup, ours)
    t_ours, t_theirs = median(o.seconds), median(b.seconds)
    added_ours, added_theirs = median(o.added), median(b.added)
    figure("B5 time vs buildah", f"{t_ours / t_theirs:.2f}x", f"target <= {TIME_TARGET}")
    figure(
        "B5 bytes added vs gzip of added content",
        f"{added_ours / limit:.2f}x",
        f"target <= {BYTES_TARGET}",
    )
    figure(
        "B5 buildah bytes added vs gzip of added content",
        f"{added_theirs / limit:.2f}x",
        "information, no target",
    )
    info(
        f"added content: {raw / MIB:.1f} MiB, {limit / MIB:.1f} MiB as one tar through "
        f"gzip -6; bytes added: ocitree {added_ours / MIB:.1f} MiB, buildah "
        f"{added_theirs / MIB:.1f} MiB (base image {setup.base_bytes / MIB:.0f} MiB)"
    )
    info(f"ocitree build: {fmt_seconds(o.seconds)}")
    info(f"  median s per phase: {_fmt_phases(o.phases)}")
    info(f"buildah build + push ({theirs.driver}): {fmt_seconds(b.seconds)}")
    info(f"  median s per phase: {_fmt_phases(b.phases)}")
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    info(f"load average at the end: {load} on {len(os.sched_getaffinity(0))} CPUs")
