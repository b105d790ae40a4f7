"""Helpers shared by the benchmarks: work dirs, timing, medians, result lines, tmpfs
mounts, device sysroots, disk-use sampling."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ocitree.errors import CommandError
from ocitree.run import Arg, run

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = ROOT / ".venv" / "bin"
FIXTURES = ROOT / "tests" / "fixtures"
MIB = 1 << 20
WORK_PARENT = Path("/var/tmp")


@contextmanager
def workdir(prefix: str = "ocitree-bench-") -> Iterator[Path]:
    """A fresh directory under /var/tmp (not /tmp, which may be a small tmpfs), removed after."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=WORK_PARENT))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@dataclass(frozen=True)
class Timed:
    seconds: float
    stdout: bytes
    stderr: bytes


def timed(argv: Sequence[Arg], *, env: dict[str, str] | None = None) -> Timed:
    """Run a command to completion (through ocitree.run.run) and time it, wall clock."""
    start = time.perf_counter()
    proc = run(argv, env=env)
    seconds = time.perf_counter() - start
    return Timed(seconds, proc.stdout or b"", proc.stderr or b"")


def shell(pipeline: str) -> list[str]:
    """argv that runs a shell pipeline (the baselines are pipelines) with pipefail."""
    return ["bash", "-c", "set -o pipefail; " + pipeline]


def q(path: Arg) -> str:
    return shlex.quote(os.fspath(path))


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def figure(name: str, value: str, target: str) -> None:
    """One result line: ``name: value (target …)``."""
    print(f"{name}: {value} ({target})", flush=True)


def info(text: str) -> None:
    """An informational line (not a figure), indented."""
    print(f"  {text}", flush=True)


def fmt_seconds(values: Sequence[float]) -> str:
    runs = ", ".join(f"{v:.2f}" for v in values)
    return f"median {median(values):.2f} s of [{runs}]"


def timed_rss(argv: Sequence[Arg], *, env: dict[str, str] | None = None) -> tuple[Timed, int]:
    """:func:`timed` under ``/usr/bin/time -f %M``: also the peak RSS in KiB (-1 if unknown).

    The figure is the largest resident set of any single process of the command's tree
    (wait4's ru_maxrss), not their sum.
    """
    t = timed(["/usr/bin/time", "-f", "%M", *argv], env=env)
    lines = t.stderr.decode(errors="replace").strip().splitlines()
    kib = int(lines[-1]) if lines and lines[-1].strip().isdigit() else -1
    return t, kib


@contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs mounted at ``path`` (made if absent) until exit; needs root.

    Device sysroots must live on one: libostree freezes and thaws the filesystem that
    holds a sysroot's /boot when it writes deployments (tmpfs refuses FIFREEZE and
    libostree falls back to syncfs), and that must never be the machine's own.
    """
    path.mkdir(parents=True, exist_ok=True)
    run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", path])
    try:
        yield path
    finally:
        try:
            run(["umount", path])
        except CommandError:
            run(["umount", "--lazy", path], check=False)


def can_mount_tmpfs() -> str | None:
    """None, or why this process cannot mount a tmpfs."""
    if os.geteuid() != 0:
        return "mounting a tmpfs needs root"
    probe = Path(tempfile.mkdtemp(prefix="ocitree-bench-probe-", dir=WORK_PARENT))
    try:
        with tmpfs(probe, "1M"):
            return None
    except CommandError as e:
        return str(e)
    finally:
        probe.rmdir()


def init_sysroot(sysroot: Path, osname: str) -> Path:
    """A fresh ostree sysroot (``init-fs``, ``os-init``) at ``sysroot``."""
    sysroot.mkdir(parents=True, exist_ok=True)
    run(["ostree", "admin", "init-fs", sysroot])
    run(["ostree", "admin", "os-init", osname, f"--sysroot={sysroot}"])
    return sysroot


def fs_used(path: Path) -> int:
    """Bytes in use on the filesystem holding ``path`` (as df counts them)."""
    st = os.statvfs(path)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


class DiskSampler:
    """Samples :func:`fs_used` of some paths every ``interval`` s in a thread.

    ``base`` is what was in use on entry, ``peak`` the most seen while running (both
    per path, in bytes); ``final`` is the last sample, taken on exit.
    """

    def __init__(self, paths: Sequence[Path], interval: float = 0.1) -> None:
        self.paths = list(paths)
        self.interval = interval
        self.base = [fs_used(p) for p in self.paths]
        self.peak = list(self.base)
        self.final = list(self.base)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="disk-sampler", daemon=True)

    def _sample(self) -> list[int]:
        now = [fs_used(p) for p in self.paths]
        self.peak = [max(a, b) for a, b in zip(self.peak, now, strict=True)]
        return now

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> DiskSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.final = self._sample()

    def peak_delta(self, i: int = 0) -> int:
        return self.peak[i] - self.base[i]

    def final_delta(self, i: int = 0) -> int:
        return self.final[i] - self.base[i]


def layout_manifest(layout: Path, tag: str) -> dict[str, object]:
    """The manifest tagged ``tag`` in the OCI layout at ``layout``."""
    index = json.loads((layout / "index.json").read_bytes())
    for m in index["manifests"]:
        if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag:
            digest = m["digest"].removeprefix("sha256:")
            return dict(json.loads((layout / "blobs" / "sha256" / digest).read_bytes()))
    raise KeyError(f"no tag {tag!r} in {layout}")


def layers_bytes(manifest: dict[str, object]) -> int:
    """Sum of the (compressed) layer sizes of a manifest."""
    layers = manifest["layers"]
    assert isinstance(layers, list)
    return sum(int(layer["size"]) for layer in layers)
