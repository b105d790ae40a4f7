"""Make an installed root ostree-ready, the way rpm-ostree lays out a commit.

In this order, on a root with a real ``/etc`` and ``/var``:

1. The kernel: ``usr/lib/modules/<kver>/vmlinuz`` (or ``boot/vmlinuz-<kver>``, moved
   there) and its ``initramfs.img`` (``boot/initramfs-<kver>.img`` moved; else made with
   the tree's own dracut, ``--no-hostonly --reproducible``, as rpm-ostree does; else an
   error). Other ``boot/<name>-<kver>`` files (config, System.map) join them; ``/boot``
   is left empty for the deployment's.
2. The rpmdb under ``usr/share/rpm`` (moved from ``var/lib/rpm``), its sqlite journal
   folded in, ``%_dbpath`` set for the image's rpm by a macros file, and
   ``/var/lib/rpm`` a link to it.
3. The toplevel links: ``home → var/home``, ``root → var/roothome``, ``opt → var/opt``,
   ``srv → var/srv``, ``mnt → var/mnt``, ``media → run/media``,
   ``usr/local → ../var/usrlocal``, ``ostree → sysroot/ostree``, ``tmp → sysroot/tmp``;
   what the directories held moves under ``var/`` first.
4. ``/var``: ostree gives each deployment's stateroot its own ``/var``, seeded only by
   systemd-tmpfiles. Every directory and link under ``var/`` becomes a ``d``/``L`` line of
   ``usr/lib/tmpfiles.d/ocitree-var.conf``, and every file is kept in
   ``usr/share/factory/var/`` with a ``C`` line that copies it on first boot (rpm-ostree
   drops such files; nothing is lost here). ``var/cache``, ``var/log`` and ``var/tmp``
   contents are dropped. Paths another tmpfiles.d file declares keep that declaration.
5. ``/etc`` becomes ``usr/etc``; an empty ``machine-id`` stays empty, backups such as
   ``passwd-`` and ``.pwd.lock`` go.
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import stat
from dataclasses import dataclass
from pathlib import Path

from ocitree.build.lint import tmpfiles_paths
from ocitree.build.packages import RPMDB_DIRS
from ocitree.build.sandbox import run_step
from ocitree.errors import UserError
from ocitree.log import logger, step

TMPFILES_VAR = "usr/lib/tmpfiles.d/ocitree-var.conf"
FACTORY = "usr/share/factory"
RPM_MACROS = "usr/lib/rpm/macros.d/macros.ocitree"
TOPLEVEL_LINKS = (
    ("home", "var/home"),
    ("root", "var/roothome"),
    ("opt", "var/opt"),
    ("srv", "var/srv"),
    ("mnt", "var/mnt"),
    ("media", "run/media"),
    ("usr/local", "../var/usrlocal"),
    ("ostree", "sysroot/ostree"),
    ("tmp", "sysroot/tmp"),
)
# Directories the links above point at, made by systemd-tmpfiles on each deployment.
LAYOUT_DIRS = (
    ("/var/home", 0o755),
    ("/var/roothome", 0o700),
    ("/var/opt", 0o755),
    ("/var/srv", 0o755),
    ("/var/mnt", 0o755),
    ("/var/usrlocal", 0o755),
    ("/run/media", 0o755),
)
EMPTY_DIRS = ("boot", "dev", "proc", "sys", "run", "sysroot", "var", "usr/etc")
TRANSIENT_VAR = ("var/cache", "var/log", "var/tmp", "var/run", "var/lock")
ETC_BACKUPS = ("passwd-", "group-", "shadow-", "gshadow-", "subuid-", "subgid-", ".pwd.lock")
_SAFE_PATH = re.compile(r"[A-Za-z0-9/._+:@%,=-]+")


@dataclass(frozen=True)
class Kernel:
    version: str
    initramfs_made: bool  # True: dracut made it here


def make_ostree_ready(root: Path, *, source_date_epoch: int) -> Kernel:
    """Lay out ``root`` as an ostree commit (module docstring); returns its kernel."""
    with step("Laying out the tree for ostree"):
        kernel = _kernel(root, source_date_epoch)
        _rpmdb(root)
        _toplevel_links(root)
        _var_to_tmpfiles(root)
        _etc(root)
        for d in EMPTY_DIRS:
            (root / d).mkdir(parents=True, exist_ok=True)
    return kernel


# --------------------------------------------------------------------------- kernel


def _kernel(root: Path, epoch: int) -> Kernel:
    modules = root / "usr/lib/modules"
    boot = root / "boot"
    kvers = {p.parent.name for p in modules.glob("*/vmlinuz")}
    kvers |= {p.name.removeprefix("vmlinuz-") for p in boot.glob("vmlinuz-*")}
    kvers.discard("0-rescue")
    if not kvers:
        raise UserError(
            "the tree has no kernel (no usr/lib/modules/<kver>/vmlinuz or boot/vmlinuz-<kver>)",
            hint='add the kernel package to the blueprint: [[packages]] name = "kernel"',
        )
    if len(kvers) > 1:
        raise UserError(
            f"the tree has {len(kvers)} kernels ({', '.join(sorted(kvers))}); an ostree "
            "commit boots exactly one",
            hint="install one kernel package",
        )
    kver = kvers.pop()
    dest = modules / kver
    dest.mkdir(parents=True, exist_ok=True)
    if boot.is_dir():
        for p in sorted(boot.iterdir()):
            name = p.name
            if name == f"vmlinuz-{kver}":
                _move(p, dest / "vmlinuz")
            elif name == f"initramfs-{kver}.img":
                _move(p, dest / "initramfs.img")
            elif name.endswith(f"-{kver}") and p.is_file():
                _move(p, dest / name.removesuffix(f"-{kver}"))
            else:
                logger.debug("dropping /boot/%s from the commit", name)
                _remove(p)
    made = False
    if not (dest / "initramfs.img").exists():
        _dracut(root, kver, epoch)
        made = True
    return Kernel(kver, made)


def _dracut(root: Path, kver: str, epoch: int) -> None:
    dracut = next(
        (d for d in ("usr/bin/dracut", "usr/sbin/dracut") if os.path.lexists(root / d)), None
    )
    if dracut is None:
        raise UserError(
            f"kernel {kver} ships no initramfs and the tree has no dracut to make one",
            hint='add dracut to the blueprint: [[packages]] name = "dracut"',
        )
    with step(f"Making the initramfs of {kver} with the tree's dracut"):
        argv = [
            "/" + dracut, "--no-hostonly", "--reproducible", "--force", "--kver", kver,
            f"/usr/lib/modules/{kver}/initramfs.img",
        ]  # fmt: skip
        env = {
            "PATH": "/usr/sbin:/usr/bin",
            "SOURCE_DATE_EPOCH": str(epoch),
            "DRACUT_NO_XATTR": "1",
        }
        result = run_step(root, argv, env=env)
    if result.exit_code != 0:
        raise UserError(
            f"dracut failed to make the initramfs of {kver} (exit code {result.exit_code})",
            hint="its messages above say why",
        )


# --------------------------------------------------------------------------- rpmdb


def _rpmdb(root: Path) -> None:
    found = next((d for d in RPMDB_DIRS if (root / d).is_dir() and any((root / d).iterdir())), None)
    if found is None:
        return  # not an rpm tree (debootstrap, mkosi of another distro)
    target = root / "usr/share/rpm"
    if found != "usr/share/rpm":
        if target.exists() and any(target.iterdir()):
            raise UserError(f"the tree has two rpm databases: /{found} and /usr/share/rpm")
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            target.rmdir()
        shutil.move(root / found, target)
    sqlite = target / "rpmdb.sqlite"
    wal = target / "rpmdb.sqlite-wal"
    if sqlite.exists() and wal.exists() and wal.stat().st_size:
        con = sqlite3.connect(sqlite)
        try:
            con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            con.close()
    for junk in ("rpmdb.sqlite-wal", "rpmdb.sqlite-shm", ".rpm.lock", ".dbenv.lock"):
        (target / junk).unlink(missing_ok=True)
    macros = root / RPM_MACROS
    macros.parent.mkdir(parents=True, exist_ok=True)
    macros.write_text(
        "# written by ocitree compose: the rpmdb of an ostree commit\n%_dbpath /usr/share/rpm\n"
    )
    var_rpm = root / "var/lib/rpm"
    if not os.path.lexists(var_rpm):
        var_rpm.parent.mkdir(parents=True, exist_ok=True)
        var_rpm.symlink_to("../../usr/share/rpm")


# --------------------------------------------------------------------------- toplevel


def _toplevel_links(root: Path) -> None:
    for link, target in TOPLEVEL_LINKS:
        path = root / link
        if path.is_symlink():
            continue
        if path.is_dir():
            if target.startswith(("var/", "../var/")):
                dest = root / _under(link, target)
                dest.mkdir(parents=True, exist_ok=True)
                for child in sorted(path.iterdir()):
                    _move(child, dest / child.name)
            elif any(path.iterdir()):
                logger.debug("dropping the content of /%s: it is the device's", link)
            shutil.rmtree(path)
        elif path.exists():
            raise UserError(f"/{link} is a file; an ostree commit needs it to be a link")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.symlink_to(target)


def _under(link: str, target: str) -> str:
    """The root-relative path a toplevel link's relative ``target`` names."""
    return os.path.normpath(os.path.join(os.path.dirname(link), target))


# --------------------------------------------------------------------------- /var


def _quote(path: str) -> str:
    """``path`` for a tmpfiles.d line: C escapes for what is not plainly safe."""
    return "".join(
        c if _SAFE_PATH.fullmatch(c) else "".join(f"\\x{b:02x}" for b in c.encode()) for c in path
    )


def _var_to_tmpfiles(root: Path) -> None:
    var = root / "var"
    declared = tmpfiles_paths(root)
    lines = [
        "# written by ocitree compose: /var of the composed tree, made on each deployment",
    ]
    lines += [f"d {p} {mode:04o} root root -" for p, mode in LAYOUT_DIRS if p not in declared]
    seen = {p for p, _ in LAYOUT_DIRS}
    for rel in TRANSIENT_VAR:
        d = root / rel
        if d.is_dir() and not d.is_symlink():
            for child in d.iterdir():
                _remove(child)
    if var.is_dir():
        for dirpath, dirnames, filenames in os.walk(var):
            dirnames.sort()
            for name in sorted(dirnames + filenames):
                p = Path(dirpath) / name
                path = "/" + str(p.relative_to(root))
                st = p.lstat()
                if path in seen or path in declared:
                    pass
                elif stat.S_ISDIR(st.st_mode):
                    mode = stat.S_IMODE(st.st_mode)
                    lines.append(f"d {_quote(path)} {mode:04o} {st.st_uid} {st.st_gid} -")
                elif stat.S_ISLNK(st.st_mode):
                    lines.append(f"L {_quote(path)} - - - - {_quote(os.readlink(p))}")
                elif stat.S_ISREG(st.st_mode):
                    factory = root / FACTORY / path.lstrip("/")
                    factory.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(p, factory, follow_symlinks=False)
                    os.chown(factory, st.st_uid, st.st_gid)
                    lines.append(f"C {_quote(path)} - - - - /{FACTORY}{_quote(path)}")
                else:
                    logger.warning("dropping %s: a special file cannot be kept in /var", path)
                seen.add(path)
        for child in list(var.iterdir()):
            _remove(child)
    conf = root / TMPFILES_VAR
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text("\n".join(lines) + "\n")


# --------------------------------------------------------------------------- /etc


def _etc(root: Path) -> None:
    etc = root / "etc"
    if not etc.is_dir():
        return
    for name in ETC_BACKUPS:
        (etc / name).unlink(missing_ok=True)
    usr_etc = root / "usr/etc"
    if usr_etc.exists() and any(usr_etc.iterdir()):
        raise UserError("the tree has both /etc and /usr/etc with content")
    if usr_etc.exists():
        usr_etc.rmdir()
    etc.rename(usr_etc)


# --------------------------------------------------------------------------- helpers


def _move(src: Path, dest: Path) -> None:
    if dest.is_dir() and not dest.is_symlink() and src.is_dir() and not src.is_symlink():
        for child in sorted(src.iterdir()):
            _move(child, dest / child.name)
        src.rmdir()
        return
    if os.path.lexists(dest):
        _remove(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.rename(src, dest)


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    else:
        p.unlink()
