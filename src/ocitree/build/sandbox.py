"""Run a build step in a sandbox of the build root (bubblewrap).

The root is a plain directory (never overlayfs, so renames of directories such as
SELinux's ``/etc/selinux/<type>/active`` behave). The step sees fresh ``/proc``, a
minimal ``/dev``, tmpfs ``/run`` and ``/tmp`` (so nothing written there reaches the
image), its secrets read-only for this step only, and no network unless asked. Mount
points bubblewrap has to create inside the root are removed again afterwards.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ocitree.errors import UserError
from ocitree.run import run


@dataclass(frozen=True)
class Mount:
    source: Path  # on the host
    target: str  # absolute, inside the root
    readonly: bool = True


@dataclass(frozen=True)
class StepResult:
    exit_code: int


def _inside(root: Path, target: str) -> Path:
    if not target.startswith("/") or ".." in Path(target).parts:
        raise UserError(f"mount target {target!r} must be an absolute path inside the image")
    return root / target.lstrip("/")


def _missing_parents(root: Path, path: Path) -> list[Path]:
    """The path and its parents below root that do not exist yet (deepest first)."""
    out = []
    p = path
    while p != root and not os.path.lexists(p):
        out.append(p)
        p = p.parent
    return out


def run_step(
    root: Path,
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    workdir: str = "/",
    mounts: Sequence[Mount] = (),
    network: bool = False,
    stdin: bytes | None = None,
) -> StepResult:
    """Run ``argv`` with ``root`` as ``/``; returns its exit code (output goes to ours)."""
    created: list[Path] = []
    for m in mounts:
        if m.target.startswith(("/run/", "/tmp/")):
            continue  # inside the step's own tmpfs
        created += _missing_parents(root, _inside(root, m.target))
    for d in ("proc", "dev", "run", "tmp"):
        created += _missing_parents(root, root / d)
    args: list[str | Path] = [
        "bwrap",
        "--bind",
        root,
        "/",
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--tmpfs",
        "/run",
        "--tmpfs",
        "/tmp",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--die-with-parent",
        "--new-session",
        "--clearenv",
        "--chdir",
        workdir,
    ]
    if not network:
        args.append("--unshare-net")
    else:
        args += ["--ro-bind", "/etc/resolv.conf", "/run/.ocitree-resolv.conf"]
    for key, value in env.items():
        args += ["--setenv", key, value]
    for m in mounts:
        args += ["--ro-bind" if m.readonly else "--bind", m.source, m.target]
    args += ["--", *argv]
    try:
        proc = run(args, check=False, capture=False, input=stdin)
    finally:
        _remove_mount_points(created)
    return StepResult(proc.returncode)


def _remove_mount_points(created: Sequence[Path]) -> None:
    """Remove the mount points made for a run (deepest first): empty files or
    directories; anything the run itself put there stays."""
    for path in created:
        if path.is_dir() and not path.is_symlink():
            if not any(path.iterdir()):
                path.rmdir()
        elif path.is_file() and path.stat().st_size == 0:
            path.unlink()


def run_host_with_mounts(
    root: Path,
    argv: Sequence[str],
    mounts: Sequence[Mount],
    *,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run a host command (the host's ``rpm --root``) with ``mounts`` placed inside the
    root, in a private mount namespace: the shims reach scriptlets rpm runs chrooted.
    The host's ``/dev`` and a ``/proc`` are mounted on the root's own directories, so
    that scriptlets find ``/dev/null`` (rather than making it a file of the image)."""
    created: list[Path] = []
    args: list[str | Path] = ["bwrap", "--dev-bind", "/", "/", "--die-with-parent"]
    for d, option in (("dev", "--dev-bind"), ("proc", "--proc")):
        target = root / d
        if target.is_dir() and not target.is_symlink():
            args += [option, "/dev", target] if d == "dev" else [option, target]
    for m in mounts:
        target = _inside(root, m.target)
        missing = _missing_parents(root, target)
        for p in reversed(missing):  # make the mount points, outermost first
            if p == target and not m.source.is_dir():
                p.touch()
            else:
                p.mkdir()
        created += missing
        args += ["--ro-bind" if m.readonly else "--bind", m.source, target]
    try:
        return run([*args, "--", *argv], check=False, env=env)
    finally:
        _remove_mount_points(created)
