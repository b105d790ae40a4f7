"""``bootc container lint``'s checks on a finished build root (FORMAT.md): fatal
findings stop the build naming the path at fault; warnings are printed."""

from __future__ import annotations

import os
import shlex
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

TOPLEVEL_DIRS = ("dev", "proc", "sys", "run", "tmp", "var")
# tmpfiles.d line types that create their path
_CREATING = frozenset("fFdDvqQpLcbC")


@dataclass(frozen=True)
class Finding:
    fatal: bool
    path: str
    message: str

    def __str__(self) -> str:
        return f"/{self.path}: {self.message}"


def lint(root: Path) -> list[Finding]:
    """Check a build root laid out as a running system (``/etc``, not ``/usr/etc``)."""
    out: list[Finding] = []

    def fatal(path: str, message: str) -> None:
        out.append(Finding(True, path, message))

    def warn(path: str, message: str) -> None:
        out.append(Finding(False, path, message))

    var_run = root / "var/run"
    if os.path.lexists(var_run) and not var_run.is_symlink():
        fatal("var/run", "must be a symlink (to ../run)")
    if (root / "usr/etc").exists() and (root / "etc").exists():
        fatal("usr/etc", "both /etc and /usr/etc exist")
    modules = root / "usr/lib/modules"
    kernels = (
        sorted(p.name for p in modules.iterdir() if (p / "vmlinuz").exists())
        if (modules.is_dir())
        else []
    )
    if len(kernels) > 1:
        fatal("usr/lib/modules", f"more than one kernel: {', '.join(kernels)}")
    for d in TOPLEVEL_DIRS:
        if not (root / d).is_dir() or (root / d).is_symlink():
            fatal(d, "must be a directory")
    if os.path.lexists(root / "sysroot") and not (root / "sysroot").is_dir():
        fatal("sysroot", "must be a directory")
    ostree_link = root / "ostree"
    if os.path.lexists(ostree_link) and (
        not ostree_link.is_symlink() or os.readlink(ostree_link) != "sysroot/ostree"
    ):
        fatal("ostree", "must be a symlink to sysroot/ostree")
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            try:
                name.encode("utf-8")
                if p.is_symlink():
                    os.readlink(p).encode("utf-8")
            except UnicodeEncodeError:
                fatal(rel.encode("utf-8", "replace").decode(), "name or link target is not UTF-8")
    for name in ("etc/hostname", "etc/resolv.conf"):
        p = root / name
        if p.is_file() and not p.is_symlink() and p.stat().st_size == 0:
            warn(name, "empty file left by a build tool")
    log = root / "var/log"
    if log.is_dir():
        for p in sorted(log.rglob("*")):
            if p.is_file() and not p.is_symlink() and p.stat().st_size > 0:
                warn(str(p.relative_to(root)), "non-empty file in /var/log")
    for name in ("boot", "run", "tmp"):
        top = root / name
        if top.is_dir() and not top.is_symlink() and any(top.iterdir()):
            warn(name, "is not empty")
    _check_var(root, warn)
    return out


def _check_var(root: Path, warn: Callable[[str, str], None]) -> None:
    var = root / "var"
    if not var.is_dir():
        return
    declared = tmpfiles_paths(root)
    for p in sorted(var.iterdir()):
        rel = "/" + str(p.relative_to(root))
        if p.name in ("tmp", "run", "lock") or rel in declared:
            continue
        if p.is_dir() and not p.is_symlink() and not any(p.iterdir()):
            continue
        if any(rel == d or rel.startswith(d + "/") or d.startswith(rel + "/") for d in declared):
            continue
        warn(rel.lstrip("/"), "content in /var without a tmpfiles.d entry")


def tmpfiles_paths(root: Path) -> set[str]:
    """The paths the tmpfiles.d files of ``root`` create (``d``, ``L``, ``C``, ``f``…
    lines; quotes removed)."""
    paths = set()
    for d in ("usr/lib/tmpfiles.d", "etc/tmpfiles.d"):
        base = root / d
        if not base.is_dir() or base.is_symlink():
            continue
        for conf in base.glob("*.conf"):
            if not stat.S_ISREG(conf.lstat().st_mode):
                continue
            for line in conf.read_text(errors="replace").splitlines():
                try:
                    fields = shlex.split(line, comments=True)
                except ValueError:
                    continue
                if len(fields) >= 2 and fields[0][:1] in _CREATING:
                    paths.add(fields[1])
    return paths
