"""The ostree "tar format v1" of container layers: the repo skeleton, objects under
``sysroot/ostree/repo/objects``, and hardlinks from checkout paths to those objects."""

from __future__ import annotations

import functools
import io

from ocitree.container.tarwriter import TarWriter
from ocitree.ostree.repo import ContentObject, ObjectType, Repo, object_relpath

REPO_PREFIX = "sysroot/ostree/repo/"
REPO_CONFIG = b"[core]\nrepo_version=1\nmode=bare-split-xattrs\n"
_SKELETON_SUBDIRS = (
    "extensions",
    "refs",
    "refs/heads",
    "refs/mirrors",
    "refs/remotes",
    "state",
    "tmp",
    "tmp/cache",
)
SELINUX_XATTR = b"security.selinux"


def object_path(checksum: str, objtype: ObjectType) -> str:
    return REPO_PREFIX + "objects/" + object_relpath(checksum, objtype)


def xattrs_link_path(checksum: str) -> str:
    return REPO_PREFIX + "objects/" + f"{checksum[:2]}/{checksum[2:]}.file-xattrs-link"


def checkout_path(path: str) -> str:
    """The path a commit's file has in the tar stream: ``usr/etc`` is shown as ``etc``."""
    if path == "usr/etc" or path.startswith("usr/etc/"):
        return path[4:]
    return path


@functools.cache
def _skeleton() -> bytes:
    buf = io.BytesIO()
    tar = TarWriter(buf)
    for d in ("sysroot", "sysroot/ostree", "sysroot/ostree/repo", "sysroot/ostree/repo/objects"):
        tar.add_dir(d)
    for i in range(256):
        tar.add_dir(f"{REPO_PREFIX}objects/{i:02x}")
    for d in _SKELETON_SUBDIRS:
        tar.add_dir(REPO_PREFIX + d)
    tar.add_data(REPO_PREFIX + "config", REPO_CONFIG)
    return buf.getvalue()


def write_skeleton(tar: TarWriter) -> None:
    """The repo skeleton every layer starts with (the same bytes each time)."""
    tar.add_raw(_skeleton())


def pax_xattrs(xattrs: tuple[tuple[bytes, bytes], ...]) -> tuple[tuple[bytes, bytes], ...]:
    """Xattrs as PAX records: all but security.selinux, which container runtimes drop."""
    return tuple((k, v) for k, v in xattrs if k != SELINUX_XATTR)


def write_content(tar: TarWriter, repo: Repo, obj: ContentObject, paths: list[str]) -> None:
    """One content object (preceded by its xattrs link) and its checkout hardlinks."""
    objpath = object_path(obj.checksum, ObjectType.FILE)
    tar.add_data(xattrs_link_path(obj.checksum), obj.xattrs_variant)
    perm = obj.mode & 0o7777
    xattrs = pax_xattrs(obj.xattrs)
    if obj.symlink_target is not None:
        tar.add_symlink(objpath, obj.symlink_target, obj.uid, obj.gid, perm, xattrs)
    else:
        with repo.open_content(obj) as f:
            tar.add_file(objpath, obj.size, f, perm, obj.uid, obj.gid, xattrs)
    for path in paths:
        if obj.symlink_target is None and obj.size == 0:
            # Empty files are real files: a build that appends to one must not
            # modify the object under sysroot/ through the link.
            tar.add_file(checkout_path(path), 0, _EMPTY, perm, obj.uid, obj.gid, xattrs)
        else:
            tar.add_hardlink(checkout_path(path), objpath, perm, obj.uid, obj.gid)


class _Empty:
    def read(self, n: int = -1) -> bytes:
        return b""


_EMPTY = _Empty()
