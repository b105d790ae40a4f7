"""Real RPMs for tests: build small packages with rpmbuild, install them into a tree.

:func:`build_rpm` writes a spec whose ``%install`` copies a staged tree of the given
files into the buildroot; the ``brp`` post-install scripts are disabled so the payload
holds exactly the given bytes. :func:`install_into_tree` installs packages into a tree
with the host's rpm (nothing from the packages runs: ``--noscripts``) and moves ``etc/``
to ``usr/etc/`` the way an ostree commit stores it, so the rpmdb's ``/etc/...`` paths
refer to ``usr/etc/...`` in the tree as on a real ostree system.

Debian's rpm defaults ``_dbpath`` to ``~/.rpmdb``, so the database path is always given;
its backend is sqlite (``rpmdb.sqlite``), which is also made explicit.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from ocitree.run import run

CHANGELOG_AUTHOR = "ocitree tests <tests@example.com>"
_CHANGELOG_DATE = "%a %b %d %Y"
_EXEC_DIRS = ("bin", "sbin", "libexec")


def changelog_date(when: datetime) -> str:
    """A date as a ``%changelog`` entry wants it, e.g. ``Mon Jan 02 2023``."""
    return when.strftime(_CHANGELOG_DATE)


def _file_mode(path: str) -> int:
    parts = path.strip("/").split("/")
    return 0o755 if any(p in _EXEC_DIRS for p in parts[:-1]) else 0o644


def _check_path(path: str) -> str:
    if not path.startswith("/") or ".." in path.split("/") or path.endswith("/"):
        raise ValueError(f"{path!r} is not an absolute file path")
    if any(c in path for c in '"\n%'):
        raise ValueError(f"{path!r} has characters a spec file cannot take")
    return path


def _spec(
    name: str,
    version: str,
    release: str,
    arch: str,
    stage: Path,
    paths: Sequence[str],
    changelog: Sequence[tuple[str, str]],
    requires: Sequence[str],
) -> str:
    lines = [
        # Keep the payload byte-identical to the given files: no stripping, no
        # bytecompiling, no debuginfo, no build-id links.
        "%global __os_install_post %{nil}",
        "%global debug_package %{nil}",
        "%global _build_id_links none",
        f"Name: {name}",
        f"Version: {version}",
        f"Release: {release}",
        f"Summary: ocitree test package {name}",
        "License: MIT",
    ]
    if arch == "noarch":
        lines.append("BuildArch: noarch")
    lines += [f"Requires: {r}" for r in requires]
    lines += [
        "",
        "%description",
        f"Test package {name} built by the ocitree test suite.",
        "",
        "%install",
        f'cp -a "{stage}/." "%{{buildroot}}/"',
        "",
        "%files",
    ]
    for p in paths:
        prefix = "%config(noreplace) " if p.startswith("/etc/") else ""
        lines.append(f'{prefix}"{p}"')
    if changelog:
        lines += ["", "%changelog"]
        # rpmbuild wants the entries newest first.
        entries = sorted(
            changelog, key=lambda e: datetime.strptime(e[0], _CHANGELOG_DATE), reverse=True
        )
        for date, text in entries:
            lines.append(f"* {date} {CHANGELOG_AUTHOR} - {version}-{release}")
            lines += [f"- {t}" if i == 0 else f"  {t}" for i, t in enumerate(text.splitlines())]
            lines.append("")
    return "\n".join(lines) + "\n"


def build_rpm(
    workdir: Path,
    name: str,
    version: str,
    files: dict[str, bytes],
    *,
    changelog: Sequence[tuple[str, str]] = (),
    requires: Sequence[str] = (),
    release: str = "1",
    arch: str = "noarch",
) -> Path:
    """Build the package ``name`` holding ``files`` (absolute path -> content); return it.

    ``changelog`` entries are ``(date, text)`` with dates like ``Mon Jan 02 2023`` (the
    weekday must match; see :func:`changelog_date`), in any order. Files under a
    ``bin``, ``sbin`` or ``libexec`` directory get mode 0755, others 0644; files under
    ``/etc`` are ``%config(noreplace)``.
    """
    if not files:
        raise ValueError("a test package needs at least one file")
    workdir = workdir.resolve()
    base = workdir / f"{name}-{version}-{release}"
    stage = base / "stage"
    topdir = base / "rpmbuild"
    stage.mkdir(parents=True)
    paths = sorted(_check_path(p) for p in files)
    for p in paths:
        dest = stage / p.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(files[p])
        dest.chmod(_file_mode(p))
    spec = base / f"{name}.spec"
    spec.write_text(
        _spec(name, version, release, arch, stage, paths, changelog, requires), encoding="utf-8"
    )
    argv: list[str | os.PathLike[str]] = [
        "rpmbuild",
        "-bb",
        "--define",
        f"_topdir {topdir}",
        "--define",
        f"_tmppath {base / 'tmp'}",
    ]
    if arch != "noarch":
        argv += ["--target", arch]
    (base / "tmp").mkdir()
    run([*argv, spec], hint="rpmbuild comes with Debian's rpm package")
    rpm_arch = "noarch" if arch == "noarch" else arch
    out = topdir / "RPMS" / rpm_arch / f"{name}-{version}-{release}.{rpm_arch}.rpm"
    if not out.is_file():
        built = sorted(topdir.glob("RPMS/*/*.rpm"))
        if len(built) != 1:
            raise FileNotFoundError(f"rpmbuild did not write {out} (found {built})")
        out = built[0]
    return out


def _merge_move(src: Path, dest: Path) -> None:
    """Move ``src`` to ``dest``; if ``dest`` is a directory, merge into it recursively."""
    if not dest.exists() and not dest.is_symlink():
        dest.parent.mkdir(parents=True, exist_ok=True)
        src.rename(dest)
        return
    src_is_dir = stat.S_ISDIR(src.lstat().st_mode)
    dest_is_dir = stat.S_ISDIR(dest.lstat().st_mode)
    if src_is_dir and dest_is_dir:
        for child in sorted(src.iterdir()):
            _merge_move(child, dest / child.name)
        src.rmdir()
        return
    if dest_is_dir:
        shutil.rmtree(dest)
    else:
        dest.unlink()
    src.rename(dest)


def install_into_tree(tree: Path, rpms: Sequence[Path], dbpath: str = "/usr/share/rpm") -> None:
    """Install ``rpms`` into ``tree`` with the host's rpm, rpmdb at ``tree/dbpath``.

    Scripts, dependencies, architecture and signatures are not checked. Afterwards
    ``tree/etc`` is moved to ``tree/usr/etc`` (merged into it if it exists), the layout of
    an ostree commit.
    """
    if not dbpath.startswith("/"):
        raise ValueError(f"dbpath {dbpath!r} must be absolute (inside the tree)")
    tree = tree.resolve()
    tree.mkdir(parents=True, exist_ok=True)
    argv: list[str | os.PathLike[str]] = [
        "rpm",
        "--root",
        tree,
        "--dbpath",
        dbpath,
        "--define",
        "_db_backend sqlite",
        "-i",
        "--nodeps",
        "--noscripts",
        "--ignorearch",
        "--ignoreos",
        "--nosignature",
        "--nodigest",
    ]
    run([*argv, *(p.resolve() for p in rpms)])
    etc = tree / "etc"
    if etc.is_dir() and not etc.is_symlink():
        _merge_move(etc, tree / "usr" / "etc")
