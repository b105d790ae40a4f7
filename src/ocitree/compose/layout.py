"""Make an installed root ostree-ready, the way rpm-ostree lays out a commit.

In this order, on a root with a real ``/etc`` and ``/var``:

1. The kernel: ``usr/lib/modules/<kver>/vmlinuz`` (or ``boot/vmlinuz-<kver>``, moved
   there) and its ``initramfs.img`` (or ``boot/initramfs-<kver>.img``, Debian's
   ``boot/initrd.img-<kver>``, moved there). Where the tree has dracut, the initramfs
   is always made anew with it, with ostree's module (``--add ostree --no-hostonly
   --reproducible``, as rpm-ostree does; an initramfs the kernel package's scriptlets
   made is dropped: it lacks ostree's module). Without dracut, the shipped initramfs is
   used as it is (it must be able to boot an ostree deployment); with neither, an error.
   Other ``boot/<name>-<kver>`` files (config, System.map) join the kernel; the rest of
   ``/boot`` (the bootloader: ``efi/``, ``grub2/``) goes to ``usr/lib/ostree-boot``,
   where anaconda and bootupd look for it. Rescue kernels are dropped.
2. The rpmdb under ``usr/share/rpm`` (moved from ``var/lib/rpm`` or
   ``usr/lib/sysimage/rpm``), its sqlite journal folded in (:func:`tidy_rpmdb`),
   ``%_dbpath`` set for the image's rpm by a macros file, ``/var/lib/rpm`` and
   ``/usr/lib/sysimage/rpm`` links to it.
3. The toplevel links: ``home → var/home``, ``root → var/roothome``, ``srv → var/srv``,
   ``mnt → var/mnt``, ``media → run/media``, ``usr/local → ../var/usrlocal``,
   ``ostree → sysroot/ostree``, ``opt → var/opt``; what the directories held moves
   under ``var/`` first, except package content of ``/opt``, which moves to
   ``usr/lib/opt`` with a link in ``/var/opt`` so that updates reach it. ``/tmp`` is a
   directory (mode 1777), as osbuild makes it for RHEL for Edge.
4. ``/var``: ostree gives each deployment's stateroot its own ``/var``, seeded only by
   systemd-tmpfiles. Every directory and link under ``var/`` becomes a ``d``/``L`` line of
   ``usr/lib/tmpfiles.d/ocitree-var.conf`` (owners by name), and every file is kept in
   ``usr/share/factory/var/`` with a ``C`` line that copies it on first boot (rpm-ostree
   drops such files; nothing is lost here). ``var/cache``, ``var/log`` and ``var/tmp``
   contents and machine-specific state (random seed, journal catalog) are dropped.
   Paths another tmpfiles.d file creates keep that declaration.
5. ``/etc`` becomes ``usr/etc``; ``machine-id`` is emptied (each device makes its own),
   backups such as ``passwd-`` go, and locked accounts' password-change dates are
   blanked as rpm-ostree does (they would differ with the day of the build). Where the
   tree has nss-altfiles, accounts move to ``/usr/lib/passwd`` and ``/usr/lib/group``
   (root and the wheel and docker groups stay) and ``nsswitch.conf`` reads them, as
   rpm-ostree lays them out.

The tree is the product of packages and tools: a link in it must never lead the layout
out of it. Every path the layout writes, moves or removes is checked to have no link
among its directories (:func:`_inside`); a tree whose ``/var``, ``/etc``, ``/boot`` or
rpmdb directory is a link is refused.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ocitree.build.lint import tmpfiles_paths
from ocitree.build.packages import RPMDB_DIRS, tidy_rpmdb
from ocitree.build.sandbox import run_step
from ocitree.errors import UserError
from ocitree.log import logger, step

TMPFILES_VAR = "usr/lib/tmpfiles.d/ocitree-var.conf"
FACTORY = "usr/share/factory"
RPM_MACROS = "usr/lib/rpm/macros.d/macros.ocitree"
OSTREE_BOOT = "usr/lib/ostree-boot"
OPT_IN_USR = "usr/lib/opt"
TOPLEVEL_LINKS = (
    ("home", "var/home"),
    ("root", "var/roothome"),
    ("srv", "var/srv"),
    ("mnt", "var/mnt"),
    ("media", "run/media"),
    ("usr/local", "../var/usrlocal"),
    ("ostree", "sysroot/ostree"),
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
# Directories the commit has, empty: mount points and the deployment's own.
EMPTY_DIRS = {
    "boot": 0o755, "dev": 0o755, "proc": 0o555, "sys": 0o555, "run": 0o755,
    "sysroot": 0o755, "var": 0o755, "tmp": 0o1777,
}  # fmt: skip
TRANSIENT_VAR = ("var/cache", "var/log", "var/tmp")
MACHINE_STATE = (
    "var/lib/systemd/random-seed",
    "var/lib/systemd/catalog/database",
    "var/lib/plymouth/boot-duration",
)
DEBIAN_BOOT_LINKS = ("vmlinuz", "vmlinuz.old", "initrd.img", "initrd.img.old")
ETC_GROUP_MEMBERS = ("root", "wheel", "docker")  # with nss-altfiles, stay in /etc/group
ETC_BACKUPS = ("passwd-", "group-", "shadow-", "gshadow-", "subuid-", "subgid-", ".pwd.lock")
_SAFE = re.compile(r"[A-Za-z0-9/._+:@,=-]+")


@dataclass(frozen=True)
class Kernel:
    version: str


def make_ostree_ready(root: Path, *, source_date_epoch: int) -> Kernel:
    """Lay out ``root`` as an ostree commit (module docstring); returns its kernel."""
    for rel in ("var", "etc", "boot", "usr", "usr/lib", "usr/share"):
        _real_dir(root, rel, required=False)
    with step("Laying out the tree for ostree"):
        kernel = _kernel(root, source_date_epoch)
        _rpmdb(root)
        opt_links = _toplevel_links(root)
        _var_to_tmpfiles(root, opt_links)
        _etc(root)
        make_dirs(root, "usr/etc")
        for rel, mode in EMPTY_DIRS.items():
            path = _inside(root, rel)
            if path.is_dir() and not path.is_symlink():
                for child in list(path.iterdir()):
                    _remove(child)
            else:
                if os.path.lexists(path):
                    _remove(path)
                path.mkdir()
            os.chmod(path, mode)
    return kernel


# --------------------------------------------------------------------------- paths


def _inside(root: Path, rel: str) -> Path:
    """``root/rel``, refused if one of its directories in the tree is a link (a link
    could lead outside). The last component may be anything; callers check it."""
    path = root
    parts = PurePosixPath(rel).parts
    for i, part in enumerate(parts):
        if part in ("..", "/"):
            raise UserError(f"path {rel!r} leaves the tree")
        path = path / part
        if i < len(parts) - 1 and path.is_symlink():
            shown = "/" + "/".join(parts[: i + 1])
            raise UserError(
                f"{shown} is a symbolic link in the tree ({os.readlink(path)}); "
                "the ostree layout needs it to be a directory",
            )
    return path


def _real_dir(root: Path, rel: str, *, required: bool = True) -> Path | None:
    """``root/rel`` as a directory that is no link; None if absent and not required."""
    path = _inside(root, rel)
    if path.is_symlink():
        raise UserError(
            f"/{rel} is a symbolic link in the tree ({os.readlink(path)}); "
            "the ostree layout needs it to be a directory"
        )
    if not path.is_dir():
        if required:
            raise UserError(f"/{rel} is missing from the tree or not a directory")
        return None
    return path


def _write(root: Path, rel: str, text: str) -> None:
    path = _inside(root, rel)
    if os.path.lexists(path):
        _remove(path)
    make_dirs(root, str(PurePosixPath(rel).parent))
    path.write_text(text)
    os.chmod(path, 0o644)


def make_dirs(root: Path, rel: str, mode: int = 0o755) -> Path:
    """Make ``root/rel`` and its missing parents with ``mode`` (not the umask's)."""
    path = root
    for part in PurePosixPath(rel).parts:
        path = path / part
        if path.is_symlink():
            raise UserError(f"/{path.relative_to(root)} is a symbolic link in the tree")
        if not path.is_dir():
            path.mkdir()
            os.chmod(path, mode)
    return path


# --------------------------------------------------------------------------- kernel


def _kernel(root: Path, epoch: int) -> Kernel:
    modules = _real_dir(root, "usr/lib/modules", required=False)
    boot = _real_dir(root, "boot", required=False)
    kvers = {p.parent.name for p in modules.glob("*/vmlinuz")} if modules else set()
    if boot is not None:
        kvers |= {p.name.removeprefix("vmlinuz-") for p in boot.glob("vmlinuz-*")}
    kvers = {k for k in kvers if not k.startswith("0-rescue")}
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
    dest = make_dirs(root, f"usr/lib/modules/{kver}")
    for name in DEBIAN_BOOT_LINKS:  # links into /boot, which a deployment's /boot is not
        p = root / name
        if p.is_symlink():
            p.unlink()
    if boot is not None:
        for p in sorted(boot.iterdir()):
            name = p.name
            if name == f"vmlinuz-{kver}":
                _move(p, dest / "vmlinuz")
            elif name in (f"initramfs-{kver}.img", f"initrd.img-{kver}"):  # Fedora, Debian
                _move(p, dest / "initramfs.img")
            elif name.endswith(f"-{kver}") and p.is_file() and not p.is_symlink():
                _move(p, dest / name.removesuffix(f"-{kver}"))
            elif name in ("loader", "loader.0", "loader.1") or "rescue" in name:
                _remove(p)
            elif _is_machine_dir(root, p):
                _remove(p)  # kernel-install's entries of the build's machine id
            else:
                _move(p, make_dirs(root, OSTREE_BOOT) / name)
    dracut = next(
        (d for d in ("usr/bin/dracut", "usr/sbin/dracut") if os.path.lexists(root / d)), None
    )
    if dracut is not None:
        (dest / "initramfs.img").unlink(missing_ok=True)
        _dracut(root, "/" + dracut, kver, epoch)
        return Kernel(kver)
    if not (dest / "initramfs.img").is_file():
        raise UserError(
            f"kernel {kver} ships no initramfs and the tree has no dracut to make one",
            hint='add dracut to the blueprint: [[packages]] name = "dracut"',
        )
    return Kernel(kver)


def _is_machine_dir(root: Path, p: Path) -> bool:
    if not (p.is_dir() and re.fullmatch(r"[0-9a-f]{32}", p.name)):
        return False
    mid = root / "etc/machine-id"
    if not mid.is_file() or mid.is_symlink():
        return True
    return mid.read_text().strip() in ("", p.name, "f" * 32)


def _dracut(root: Path, dracut: str, kver: str, epoch: int) -> None:
    with step(f"Making the initramfs of {kver} with the tree's dracut"):
        argv = [
            dracut, "--no-hostonly", "--reproducible", "--add", "ostree", "--force",
            "--kver", kver, f"/usr/lib/modules/{kver}/initramfs.img",
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
    made = root / f"usr/lib/modules/{kver}/initramfs.img"
    if not made.is_file() or made.is_symlink():
        raise UserError(f"dracut made no initramfs for {kver}")
    os.chmod(made, 0o644)


# --------------------------------------------------------------------------- rpmdb


def _rpmdb(root: Path) -> None:
    found = None
    for rel in RPMDB_DIRS:
        d = _inside(root, rel)
        if d.is_dir() and not d.is_symlink() and any(d.iterdir()):
            found = rel
            break
    if found is None:
        return  # not an rpm tree (debootstrap, mkosi of another distro)
    target = _inside(root, "usr/share/rpm")
    if found != "usr/share/rpm":
        if target.is_symlink() or (target.exists() and any(target.iterdir())):
            raise UserError(f"the tree has two rpm databases: /{found} and /usr/share/rpm")
        if target.exists():
            target.rmdir()
        os.rename(root / found, target)
    tidy_rpmdb(root)
    _write(
        root,
        RPM_MACROS,
        "# written by ocitree compose: the rpmdb of an ostree commit\n%_dbpath /usr/share/rpm\n",
    )
    for rel, link in (
        ("var/lib/rpm", "../../usr/share/rpm"),
        ("usr/lib/sysimage/rpm", "../../share/rpm"),
    ):
        path = _inside(root, rel)
        if os.path.lexists(path):
            _remove(path)
        make_dirs(root, str(PurePosixPath(rel).parent))
        path.symlink_to(link)


# --------------------------------------------------------------------------- toplevel


def _toplevel_links(root: Path) -> list[str]:
    opt_links = _opt(root)
    for link, target in TOPLEVEL_LINKS:
        path = _inside(root, link)
        if path.is_symlink():
            continue
        if path.is_dir():
            if target.startswith(("var/", "../var/")):
                dest = make_dirs(
                    root, os.path.normpath(os.path.join(os.path.dirname(link), target))
                )
                for child in sorted(path.iterdir()):
                    _move(child, dest / child.name)
            elif any(path.iterdir()):
                logger.debug("dropping the content of /%s: it is the device's", link)
            shutil.rmtree(path)
        elif os.path.lexists(path):
            raise UserError(f"/{link} is a file; an ostree commit needs it to be a link")
        path.symlink_to(target)
    return opt_links


def _opt(root: Path) -> list[str]:
    """Package content of /opt moves to /usr/lib/opt (so updates reach it), each entry
    linked from /var/opt; /opt becomes the link to var/opt."""
    opt = _inside(root, "opt")
    names: list[str] = []
    if opt.is_dir() and not opt.is_symlink():
        for child in sorted(opt.iterdir()):
            _move(child, make_dirs(root, OPT_IN_USR) / child.name)
            names.append(child.name)
        opt.rmdir()
    elif os.path.lexists(opt) and not opt.is_symlink():
        raise UserError("/opt is a file; an ostree commit needs it to be a link")
    if not opt.is_symlink():
        opt.symlink_to("var/opt")
    return names


# --------------------------------------------------------------------------- /var


def _path_field(path: str) -> str:
    """``path`` as the path field of a tmpfiles.d line (quoted if it needs to be; ``%``
    doubled: tmpfiles expands specifiers)."""
    path = path.replace("%", "%%")
    if _SAFE.fullmatch(path):
        return path
    if "'" in path or "\\" in path or not path.isprintable():
        raise UserError(
            f"{path!r} cannot be written in a tmpfiles.d line",
            hint="rename it in the package or tree that makes it",
        )
    return f"'{path}'"


def _arg_field(text: str) -> str:
    """``text`` as the argument of an ``L``/``C`` line (C escapes, ``%`` doubled)."""
    return "".join(
        c
        if _SAFE.fullmatch(c)
        else "%%"
        if c == "%"
        else "".join(f"\\x{b:02x}" for b in c.encode())
        for c in text
    )


def _names(root: Path, db: str) -> dict[int, str]:
    out: dict[int, str] = {}
    path = _inside(root, f"etc/{db}")
    if path.is_file() and not path.is_symlink():
        for line in path.read_text(errors="replace").splitlines():
            fields = line.split(":")
            if len(fields) > 2 and fields[2].isdigit():
                out.setdefault(int(fields[2]), fields[0])
    return out


def _var_to_tmpfiles(root: Path, opt_links: list[str] | None = None) -> None:
    var = _real_dir(root, "var", required=False)
    declared = tmpfiles_paths(root)
    users, groups = _names(root, "passwd"), _names(root, "group")

    def owner(st: os.stat_result) -> str:
        return f"{users.get(st.st_uid, st.st_uid)} {groups.get(st.st_gid, st.st_gid)}"

    lines = ["# written by ocitree compose: /var of the composed tree, made on each deployment"]
    lines += [f"d {p} {mode:04o} root root -" for p, mode in LAYOUT_DIRS if p not in declared]
    seen = {p for p, _ in LAYOUT_DIRS}
    for name in opt_links or ():
        lines.append(
            f"L {_path_field('/var/opt/' + name)} - - - - /{OPT_IN_USR}/{_arg_field(name)}"
        )
    if var is not None:
        for rel in (*TRANSIENT_VAR, *MACHINE_STATE):
            p = _inside(root, rel)
            if p.is_dir() and not p.is_symlink():
                for child in list(p.iterdir()):
                    _remove(child)
            elif p.is_file() and rel in MACHINE_STATE:
                p.unlink()
        for dirpath, dirnames, filenames in os.walk(var):
            dirnames.sort()
            for name in sorted(dirnames + filenames):
                p = Path(dirpath) / name
                path = "/" + str(p.relative_to(root))
                st = p.lstat()
                if path not in seen and path not in declared:
                    lines += _var_entry(root, p, path, st, owner(st))
                seen.add(path)
        for child in list(var.iterdir()):
            _remove(child)
    _write(root, TMPFILES_VAR, "\n".join(lines) + "\n")


def _var_entry(root: Path, p: Path, path: str, st: os.stat_result, owner: str) -> list[str]:
    if stat.S_ISDIR(st.st_mode):
        return [f"d {_path_field(path)} {stat.S_IMODE(st.st_mode):04o} {owner} -"]
    if stat.S_ISLNK(st.st_mode):
        return [f"L {_path_field(path)} - - - - {_arg_field(os.readlink(p))}"]
    if not stat.S_ISREG(st.st_mode):
        logger.warning("dropping %s: a special file cannot be kept in /var", path)
        return []
    rel = f"{FACTORY}{path}"
    _factory_parents(root, p.parent, rel)
    factory = _inside(root, rel)
    if os.path.lexists(factory):
        _remove(factory)
    shutil.copyfile(p, factory, follow_symlinks=False)
    # the owner first: chown clears setuid bits and file capabilities
    os.chown(factory, st.st_uid, st.st_gid, follow_symlinks=False)
    os.chmod(factory, stat.S_IMODE(st.st_mode))
    shutil.copystat(p, factory, follow_symlinks=False)
    return [f"C {_path_field(path)} - - - - /{FACTORY}{_arg_field(path)}"]


def _factory_parents(root: Path, source_dir: Path, rel: str) -> None:
    """The factory copy's directories, with the modes and owners of the /var ones."""
    path = root
    source = root
    factory_parts = len(PurePosixPath(FACTORY).parts)
    for i, part in enumerate(PurePosixPath(rel).parent.parts):
        path = path / part
        if i >= factory_parts:
            source = source / part
        if path.is_symlink():
            raise UserError(f"/{path.relative_to(root)} is a symbolic link in the tree")
        if not path.is_dir():
            path.mkdir()
            st = source.lstat() if i >= factory_parts else None
            if st is not None:
                os.chown(path, st.st_uid, st.st_gid)
                os.chmod(path, stat.S_IMODE(st.st_mode))
            else:
                os.chmod(path, 0o755)


# --------------------------------------------------------------------------- /etc


def _etc(root: Path) -> None:
    etc = _real_dir(root, "etc", required=False)
    if etc is None:
        return
    for name in ETC_BACKUPS:
        p = etc / name
        if os.path.lexists(p):
            p.unlink()
    machine_id = etc / "machine-id"
    if machine_id.is_file() and not machine_id.is_symlink():
        machine_id.write_text("")
    shadow = etc / "shadow"
    if shadow.is_file() and not shadow.is_symlink():
        st = shadow.stat()
        shadow.write_text(
            "".join(_blank_locked(line) + "\n" for line in shadow.read_text().splitlines())
        )
        os.chmod(shadow, stat.S_IMODE(st.st_mode))
    if _has_altfiles(root):
        _split_accounts(root, etc)
    usr_etc = _inside(root, "usr/etc")
    if usr_etc.is_symlink() or (usr_etc.exists() and any(usr_etc.iterdir())):
        raise UserError("the tree has both /etc and /usr/etc with content")
    if usr_etc.exists():
        usr_etc.rmdir()
    etc.rename(usr_etc)


def _has_altfiles(root: Path) -> bool:
    return any(root.glob("usr/lib*/libnss_altfiles.so*")) or any(
        root.glob("usr/lib/*/libnss_altfiles.so*")
    )


def _split_accounts(root: Path, etc: Path) -> None:
    """rpm-ostree's nss-altfiles layout: the accounts packages and the blueprint made
    live in ``/usr/lib/passwd`` and ``/usr/lib/group``, which every commit replaces, so
    that a device whose ``/etc/passwd`` was changed locally (and is no longer merged)
    still gets the users a later commit adds. ``/etc`` keeps root, and the groups users
    are added to on a device (wheel, docker)."""
    for db, keep in (("passwd", _is_root), ("group", _is_etc_group)):
        path = etc / db
        if not path.is_file() or path.is_symlink():
            continue
        lines = path.read_text().splitlines()
        kept = [line for line in lines if keep(line)]
        moved = [line for line in lines if not keep(line)]
        lib = _inside(root, f"usr/lib/{db}")
        if os.path.lexists(lib) and (lib.is_symlink() or not lib.is_file()):
            raise UserError(f"/usr/lib/{db} is not a file")
        old = lib.read_text().splitlines() if lib.exists() else []
        names = {line.split(":", 1)[0] for line in old}
        moved = old + [line for line in moved if line.split(":", 1)[0] not in names]
        _write(root, f"usr/lib/{db}", "".join(line + "\n" for line in moved))
        mode = stat.S_IMODE(path.stat().st_mode)
        path.write_text("".join(line + "\n" for line in kept))
        os.chmod(path, mode)
    nsswitch = etc / "nsswitch.conf"
    if nsswitch.is_file() and not nsswitch.is_symlink():
        nsswitch.write_text(
            "".join(_with_altfiles(line) + "\n" for line in nsswitch.read_text().splitlines())
        )


def _is_root(line: str) -> bool:
    fields = line.split(":")
    return len(fields) > 2 and fields[2] == "0"


def _is_etc_group(line: str) -> bool:
    return line.split(":", 1)[0] in ETC_GROUP_MEMBERS


def _with_altfiles(line: str) -> str:
    """``passwd: files`` → ``passwd: files altfiles`` (and for group)."""
    key, sep, sources = line.partition(":")
    words = sources.split()
    if not sep or key.strip() not in ("passwd", "group") or "altfiles" in words:
        return line
    lead = sources[: len(sources) - len(sources.lstrip())]
    at = words.index("files") + 1 if "files" in words else 0
    return f"{key}:{lead}" + " ".join([*words[:at], "altfiles", *words[at:]])


def _blank_locked(line: str) -> str:
    """A shadow line with the password-change date blanked if the account is locked."""
    fields = line.split(":")
    if len(fields) > 2 and fields[1][:1] in ("!", "*"):
        fields[2] = ""
    return ":".join(fields)


# --------------------------------------------------------------------------- helpers


def _move(src: Path, dest: Path) -> None:
    """Move ``src`` to ``dest`` (both in the tree, checked by the caller), merging
    directories; never through a link at ``dest``."""
    if dest.is_dir() and not dest.is_symlink() and src.is_dir() and not src.is_symlink():
        for child in sorted(src.iterdir()):
            _move(child, dest / child.name)
        src.rmdir()
        return
    if os.path.lexists(dest):
        _remove(dest)
    os.rename(src, dest)


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    else:
        p.unlink()
