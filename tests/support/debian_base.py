"""A real distribution userland as an ostree base image: Debian 12 minbase via debootstrap.

:func:`debian_rootfs` runs ``debootstrap --variant=minbase`` once per machine and keeps
the result as a tar in :data:`CACHE_DIR` (later runs, and other test workers, reuse it;
a file lock keeps two workers from bootstrapping at once). Where debootstrap is missing
or cannot reach the mirror, the test is skipped with the reason.

:func:`make_ostree_tree` turns that root into what an rpm-ostree-built RHEL for Edge
commit looks like:

- ``/etc`` stored as ``/usr/etc``; ``/var`` empty; ``/dev``, ``/proc``, ``/run``, ``/tmp``
  empty; a toplevel ``sysroot`` directory and ``ostree -> sysroot/ostree``;
  ``home -> var/home``, ``root -> var/roothome`` and the other ``/var`` links;
- ``/bin/sh`` is bash (RHEL's choice; Debian's dash would not brace-expand the seed's
  ``rm -rf /etc/{pki,rhsm,yum.repos.d}``);
- a stand-in kernel and initramfs in ``usr/lib/modules/<kver>/``;
- rpm keeps its database where ostree images do: ``/usr/etc/rpm/macros.ocitree`` sets
  ``%_dbpath /usr/share/rpm`` and an rpmdb is made there. The userland came from dpkg, so
  that rpmdb holds one package, ``debian-userland``, that provides what the base offers
  rpm packages (``/bin/sh`` above all: every scriptlet requires it), the way the rpmdb
  of a RHEL image lists bash;
- an SELinux policy store in ``/usr/etc/selinux/targeted/active`` (dummy module files),
  so a scriptlet that does libsemanage's commit renames directories of the base. There
  is deliberately no ``/etc/selinux/config``: with one, a commit is labelled with the
  image's policy, which needs a real compiled policy.

:func:`build_debian_base` commits the tree and encapsulates it with ``ocitree``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ocitree.build.packages import tidy_rpmdb
from ocitree.run import run
from support.gentree import commit_tree
from support.microshift import Package, build_package

CACHE_DIR = Path("/var/tmp/ocitree-test-cache")
CACHE_TAR = CACHE_DIR / "debian-minbase.tar"
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
# bash and sed are Essential (minbase has them anyway); rpm for the image's own rpm,
# systemd for a real systemctl and the unit directories.
INCLUDE = ("rpm", "systemd", "bash", "sed")
# Bulk nothing here uses, dropped before caching (what slim images drop): apt's
# downloads and lists, documentation, translations, and perl's non-base modules (the
# rpm package depends on perl for rpmbuild's helpers; rpm itself does not use it).
PRUNE = (
    "var/cache/apt",
    "var/lib/apt/lists",
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "usr/share/locale",
    "usr/share/perl",
    "usr/lib/*/perl",
)
CACHE_KEY = f"debootstrap --variant=minbase --include={','.join(INCLUDE)} {SUITE} {MIRROR}\n" + (
    "prune " + " ".join(PRUNE) + "\nformat 1\n"
)
REF = "debian/12/x86_64/edge"
OSNAME = "debian"
KVER = "6.1.0-ocitree-debian"
RPMDB = "/usr/share/rpm"
SELINUX_ACTIVE = "usr/etc/selinux/targeted/active"
SELINUX_FILES = {
    "commit_num": b"\x01\x00\x00\x00",
    "file_contexts": b"/.*\tsystem_u:object_r:default_t:s0\n",
    "homedir_template": b"HOME_DIR\t-d\tsystem_u:object_r:user_home_dir_t:s0\n",
    "modules/100/base/cil": b"(base module stand-in)\n",
    "modules/100/base/lang_ext": b"pp\n",
    "modules/100/kernel/cil": b"(kernel module stand-in)\n",
    "modules/100/kernel/lang_ext": b"pp\n",
}
_NETWORK_FAILURES = (
    "Failed getting release file",
    "Couldn't download",
    "Temporary failure resolving",
    "Could not resolve",
    "unable to resolve",
    "Connection refused",
    "Network is unreachable",
    "Connection timed out",
)
_VAR_LINKS = {
    "home": "var/home",
    "root": "var/roothome",
    "opt": "var/opt",
    "srv": "var/srv",
    "mnt": "var/mnt",
    "media": "run/media",
}
_TAR = ("tar", "--numeric-owner", "--xattrs", "--xattrs-include=*")
_EMPTIED = ("dev", "proc", "sys", "run", "tmp", "boot", "var")


@dataclass(frozen=True)
class DebianBase:
    image: Path  # an OCI layout
    tag: str
    repo: Path  # bare repo with the commit, for installing a device
    ref: str
    commit: str
    kver: str

    @property
    def reference(self) -> str:
        return f"oci:{self.image}:{self.tag}"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _cached() -> bool:
    key = CACHE_TAR.with_suffix(".key")
    return CACHE_TAR.is_file() and key.is_file() and key.read_text() == CACHE_KEY


def _prune(root: Path) -> None:
    for pattern in PRUNE:
        for p in root.glob(pattern):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()


def debian_rootfs() -> Path:
    """The cached tar of a Debian minbase root; made with debootstrap the first time."""
    if _cached():
        return CACHE_TAR
    if shutil.which("debootstrap") is None:
        pytest.skip("debootstrap is not installed (apt-get install debootstrap)")
    if os.geteuid() != 0:
        pytest.skip("debootstrap needs root")
    with _locked(CACHE_DIR / "debian-minbase.lock"):
        if _cached():  # another worker made it while we waited
            return CACHE_TAR
        work = CACHE_DIR / f"debootstrap.{os.getpid()}"
        shutil.rmtree(work, ignore_errors=True)
        root = work / "root"
        try:
            argv: list[str | Path] = [
                "debootstrap", "--variant=minbase", f"--include={','.join(INCLUDE)}",
                SUITE, root, MIRROR,
            ]  # fmt: skip
            proc = run(argv, check=False, timeout=1800)
            if proc.returncode != 0:
                # debootstrap says what failed on stdout ("E: Failed getting release file").
                text = (proc.stdout + proc.stderr).decode(errors="replace")
                log = root / "debootstrap/debootstrap.log"
                if log.is_file():
                    text += log.read_text(errors="replace")
                errors = [ln for ln in text.splitlines() if ln.startswith("E:")]
                reason = errors[-1] if errors else f"exit code {proc.returncode}"
                if any(s in text for s in _NETWORK_FAILURES):
                    pytest.skip(f"debootstrap cannot reach {MIRROR}: {reason}")
                raise RuntimeError(f"debootstrap failed: {reason}")
            _prune(root)
            # Device nodes cannot be committed to ostree; the build gives /dev its own.
            for d in ("dev", "proc", "sys", "run", "tmp"):
                _empty(root / d)
            tmp_tar = work / "rootfs.tar"
            run([*_TAR, "-C", root, "-cf", tmp_tar, "."])
            CACHE_TAR.with_suffix(".key").unlink(missing_ok=True)
            tmp_tar.rename(CACHE_TAR)
            CACHE_TAR.with_suffix(".key").write_text(CACHE_KEY)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return CACHE_TAR


def _empty(d: Path) -> None:
    if not d.is_dir() or d.is_symlink():
        return
    for p in d.iterdir():
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()


def _fix_etc_links(etc: Path) -> None:
    """Relative links out of /etc (``os-release -> ../usr/lib/os-release``) would point
    elsewhere from /usr/etc: make them absolute."""
    root = etc.parent
    for dirpath, dirnames, filenames in os.walk(etc):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            if not p.is_symlink():
                continue
            target = os.readlink(p)
            if target.startswith("/"):
                continue
            resolved = os.path.normpath(os.path.join(os.path.relpath(dirpath, root), target))
            if resolved != "etc" and not resolved.startswith("etc/"):
                p.unlink()
                p.symlink_to("/" + resolved)


def userland_package() -> Package:
    """What the dpkg-installed base offers rpm packages, as one rpmdb entry."""
    return Package(
        "debian-userland",
        "12",
        "1",
        "noarch",
        provides=("/bin/sh", "/bin/bash", "/usr/bin/sed", "bash", "sed", "systemd"),
    )


def make_ostree_tree(tar: Path, tree: Path, workdir: Path, *, preset: bytes | None = None) -> None:
    """Unpack the cached root into ``tree`` laid out as an ostree commit (module doc).

    ``preset``: the content of a ``99-default-disable.preset`` to add, as RHEL has one.
    """
    tree.mkdir(parents=True)
    run([*_TAR, "-C", tree, "-xpf", tar])
    for d in _EMPTIED:
        (tree / d).mkdir(exist_ok=True)
        _empty(tree / d)
    (tree / "tmp").chmod(0o1777)
    etc = tree / "etc"
    for name in ("hostname", "resolv.conf", "machine-id"):  # the build host's, or per machine
        with contextlib.suppress(FileNotFoundError):
            (etc / name).unlink()
    _fix_etc_links(etc)
    (tree / "usr/bin/sh").unlink()
    (tree / "usr/bin/sh").symlink_to("bash")
    for name, target in _VAR_LINKS.items():
        p = tree / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif os.path.lexists(p):
            p.unlink()
        p.symlink_to(target)
    local = tree / "usr/local"
    if local.is_dir() and not local.is_symlink():
        shutil.rmtree(local)
    local.symlink_to("../var/usrlocal")
    (tree / "sysroot").mkdir()
    (tree / "ostree").symlink_to("sysroot/ostree")
    modules = tree / "usr/lib/modules" / KVER
    modules.mkdir(parents=True)
    (modules / "vmlinuz").write_bytes(b"stand-in kernel " + KVER.encode() + b"\n")
    (modules / "initramfs.img").write_bytes(b"stand-in initramfs " + KVER.encode() + b"\n")
    if preset is not None:
        (tree / "usr/lib/systemd/system-preset/99-default-disable.preset").write_bytes(preset)
    etc.rename(tree / "usr/etc")
    macros = tree / "usr/etc/rpm/macros.ocitree"
    macros.parent.mkdir(parents=True, exist_ok=True)
    macros.write_text(f"# rpm's database where ostree images keep it\n%_dbpath {RPMDB}\n")
    for rel, data in SELINUX_FILES.items():
        p = tree / SELINUX_ACTIVE / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    rpm: list[str | Path] = ["rpm", "--root", tree, "--dbpath", RPMDB]
    rpm += ["--define", "_db_backend sqlite"]
    run([*rpm, "--initdb"])
    userland = build_package(workdir, userland_package())
    run([*rpm, "-i", "--justdb", "--nodeps", "--noscripts", "--nosignature", userland])
    tidy_rpmdb(tree)  # as a composed base has it: the database alone


def build_debian_base(
    workdir: Path, tag: str = "base", *, preset: bytes | None = None
) -> DebianBase:
    """The Debian minbase as an encapsulated ostree image in ``workdir/image``."""
    for tool in ("ostree", "rpm", "rpmbuild", "tar"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    tar = debian_rootfs()
    tree = workdir / "tree"
    make_ostree_tree(tar, tree, workdir / "rpms", preset=preset)
    repo = workdir / "repo"
    commit = commit_tree(tree, repo, REF, mode="bare", subject="Debian 12 minbase")
    shutil.rmtree(tree)
    from ocitree.cli.main import main

    image = workdir / "image"
    code = main(["-q", "encapsulate", "--repo", str(repo), REF, f"oci:{image}:{tag}"])
    assert code == 0, "ocitree encapsulate failed on the Debian base"
    return DebianBase(image, tag, repo, REF, commit, KVER)
