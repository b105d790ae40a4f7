"""COPY and ADD into a build root: paths resolved inside the root (symlinks never lead
out of it), sources confined to the build context, ownership and modes as asked."""

from __future__ import annotations

import glob
import os
import shutil
import tarfile
from pathlib import Path, PurePosixPath

from ocitree.errors import UserError

_MAX_LINKS = 40


def resolve_in_root(root: Path, path: str) -> Path:
    """``path`` (absolute, as the image sees it) on the host, following symlinks the way
    a chroot would: absolute link targets and ``..`` never leave ``root``."""
    parts = [p for p in PurePosixPath("/" + path).parts[1:] if p not in ("", ".")]
    resolved: list[str] = []
    links = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = root.joinpath(*resolved, part)
        if candidate.is_symlink() and parts:  # the last component stays a link
            links += 1
            if links > _MAX_LINKS:
                raise UserError(f"too many levels of symbolic links in {path}")
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            parts = [p for p in PurePosixPath(target).parts if p not in ("/", "", ".")] + parts
            continue
        resolved.append(part)
    return root.joinpath(*resolved)


def _ids(root: Path, chown: str) -> tuple[int, int]:
    user, _, group = chown.partition(":")

    def lookup(name: str, db: str) -> int:
        if name.isdigit():
            return int(name)
        for line in (
            (root / "etc" / db).read_text().splitlines() if (root / "etc" / db).exists() else []
        ):
            fields = line.split(":")
            if fields and fields[0] == name and len(fields) > 2:
                return int(fields[2])
        raise UserError(
            f"--chown: no {'user' if db == 'passwd' else 'group'} {name!r} in the image"
        )

    uid = lookup(user, "passwd")
    gid = lookup(group, "group") if group else uid
    return uid, gid


def context_sources(context: Path, patterns: tuple[str, ...]) -> list[Path]:
    ctx = context.resolve()
    out: list[Path] = []
    for pattern in patterns:
        matches = sorted(glob.glob(str(ctx / pattern.lstrip("/")), include_hidden=True))
        if not matches:
            raise UserError(f"COPY source {pattern!r} is not in the build context {context}")
        for m in matches:
            real = Path(m).resolve()
            if real != ctx and ctx not in real.parents:
                raise UserError(f"COPY source {pattern!r} leaves the build context")
            out.append(Path(m))
    return out


def copy_into(
    root: Path,
    sources: list[Path],
    dest: str,
    *,
    chown: str | None,
    chmod: int | None,
    unpack: bool = False,
) -> None:
    """COPY/ADD ``sources`` to ``dest`` (absolute, inside the image)."""
    ids = _ids(root, chown) if chown else None
    to_dir = dest.endswith("/") or len(sources) > 1 or (resolve_in_root(root, dest).is_dir())
    for src in sources:
        if unpack and src.is_file() and tarfile.is_tarfile(src):
            target_dir = resolve_in_root(root, dest)
            target_dir.mkdir(parents=True, exist_ok=True)
            unpack_tar(src, root, dest)
            continue
        if src.is_dir():
            target = resolve_in_root(root, dest)
            _copy_tree(src, target, ids, chmod)
            continue
        name = dest.rstrip("/") + "/" + src.name if to_dir else dest
        target = resolve_in_root(root, name)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_symlink() or target.exists():
            if target.is_dir() and not target.is_symlink():
                raise UserError(f"COPY would replace the directory {name} with a file")
            target.unlink()
        shutil.copy2(src, target, follow_symlinks=False)
        _own(target, ids, chmod)


def _own(path: Path, ids: tuple[int, int] | None, chmod: int | None) -> None:
    if ids is not None:
        os.chown(path, *ids, follow_symlinks=False)
    if chmod is not None and not path.is_symlink():
        path.chmod(chmod)


def _copy_tree(src: Path, target: Path, ids: tuple[int, int] | None, chmod: int | None) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for entry in sorted(src.iterdir()):
        dest = target / entry.name
        if entry.is_dir() and not entry.is_symlink():
            if dest.is_symlink() or (dest.exists() and not dest.is_dir()):
                dest.unlink()
            _copy_tree(entry, dest, ids, chmod)
            shutil.copystat(entry, dest)
        else:
            if dest.is_symlink() or dest.exists():
                if dest.is_dir() and not dest.is_symlink():
                    shutil.rmtree(dest)
                else:
                    dest.unlink()
            shutil.copy2(entry, dest, follow_symlinks=False)
        _own(dest, ids, chmod)


def unpack_tar(
    archive: Path, root: Path, dest: str, *, what: str = "", skip_devices: bool = False
) -> None:
    """Unpack a tar with its entries confined below ``dest`` of ``root`` (``what``: how
    messages name it, ``ADD NAME`` by default). Device nodes are refused, or with
    ``skip_devices`` left out (a root filesystem's ``/dev``). Modes, owners and file
    modification times are kept."""
    what = what or f"ADD {archive.name}"
    try:
        tf = tarfile.open(archive)  # noqa: SIM115 (closed by the with below)
    except (tarfile.TarError, OSError) as e:
        why = getattr(e, "strerror", None) or "not a tar archive (plain, gz, bz2, xz)"
        raise UserError(f"{what}: {why}") from e
    with tf:
        for m in tf.getmembers():
            name = PurePosixPath(m.name)
            if name.is_absolute() or ".." in name.parts:
                raise UserError(f"{what}: entry {m.name!r} leaves the destination")
            if m.isdev() and skip_devices:
                continue
            if m.isdev():
                raise UserError(f"{what}: entry {m.name!r} is a device node")
            target = resolve_in_root(root, f"{dest.rstrip('/')}/{m.name}")
            if m.islnk():
                link_target = resolve_in_root(root, f"{dest.rstrip('/')}/{m.linkname}")
                if not link_target.is_file() or link_target.is_symlink():
                    raise UserError(
                        f"{what}: hard link {m.name!r} points at {m.linkname!r}, "
                        "which is no file before it in the archive"
                    )
                target.parent.mkdir(parents=True, exist_ok=True)
                os.link(link_target, target)
                continue
            _extract(tf, m, target, what)


def _extract(tf: tarfile.TarFile, m: tarfile.TarInfo, target: Path, what: str) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if m.isdir():
        target.mkdir(exist_ok=True)
    elif m.issym():
        if target.is_symlink() or target.exists():
            target.unlink()
        target.symlink_to(m.linkname)
    elif m.isreg():
        f = tf.extractfile(m)
        assert f is not None
        with target.open("wb") as out:
            shutil.copyfileobj(f, out)
    else:
        raise UserError(f"{what}: entry {m.name!r} has an unsupported type")
    os.chown(target, m.uid, m.gid, follow_symlinks=False)
    if not m.issym():
        target.chmod(m.mode & 0o7777)
    os.utime(target, (m.mtime, m.mtime), follow_symlinks=False)
