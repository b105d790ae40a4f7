"""Read access to an ostree repository: commits, the tree they name, and content objects.

libostree (through PyGObject) opens the repo and parses metadata; content bytes are read
straight from the object files where the repo mode allows, which is much faster than
streaming them through GIO from Python.
"""

from __future__ import annotations

import enum
import struct
import sys
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Protocol

import gi

gi.require_version("OSTree", "1.0")
from gi.repository import Gio as Gio  # noqa: E402
from gi.repository import GLib as GLib  # noqa: E402  (re-exported, version pinned above)
from gi.repository import OSTree as OSTree  # noqa: E402

from ocitree.errors import UserError  # noqa: E402

S_IFMT = 0o170000
S_IFLNK = 0o120000
S_IFREG = 0o100000


class ObjectType(enum.StrEnum):
    COMMIT = "commit"
    COMMITMETA = "commitmeta"
    DIRTREE = "dirtree"
    DIRMETA = "dirmeta"
    FILE = "file"


class RepoMode(enum.StrEnum):
    BARE = "bare"
    BARE_USER = "bare-user"
    BARE_USER_ONLY = "bare-user-only"
    BARE_SPLIT_XATTRS = "bare-split-xattrs"
    ARCHIVE = "archive"


_MODE_NAMES = {
    OSTree.RepoMode.BARE: RepoMode.BARE,
    OSTree.RepoMode.BARE_USER: RepoMode.BARE_USER,
    OSTree.RepoMode.BARE_USER_ONLY: RepoMode.BARE_USER_ONLY,
    OSTree.RepoMode.ARCHIVE: RepoMode.ARCHIVE,
}

_GI_TYPES = {
    ObjectType.COMMIT: OSTree.ObjectType.COMMIT,
    ObjectType.DIRTREE: OSTree.ObjectType.DIR_TREE,
    ObjectType.DIRMETA: OSTree.ObjectType.DIR_META,
}

Xattrs = tuple[tuple[bytes, bytes], ...]


class Reader(Protocol):
    """A closable binary stream; ``read(n)`` may return fewer bytes, b"" at the end."""

    def read(self, n: int = -1, /) -> bytes: ...

    def close(self) -> None: ...

    def __enter__(self) -> Reader: ...

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None, /
    ) -> None: ...


def object_relpath(checksum: str, objtype: ObjectType, *, archive: bool = False) -> str:
    """Path of an object below ``objects/``: ``ab/cdef….file``."""
    suffix = "filez" if archive and objtype is ObjectType.FILE else objtype.value
    return f"{checksum[:2]}/{checksum[2:]}.{suffix}"


def xattrs_to_variant(xattrs: Xattrs) -> GLib.Variant:
    """The ``a(ayay)`` variant ostree stores, names NUL-terminated, sorted by name."""
    children = [
        GLib.Variant.new_tuple(
            GLib.Variant("ay", k + b"\0"),
            GLib.Variant("ay", v),
        )
        for k, v in sorted(xattrs)
    ]
    return GLib.Variant.new_array(GLib.VariantType("(ayay)"), children)


def parse_xattrs(data: bytes) -> Xattrs:
    """Parse the serialized ``a(ayay)`` variant into (name, value) pairs, names without NUL."""
    if not data:
        return ()
    v = GLib.Variant.new_from_bytes(GLib.VariantType("a(ayay)"), GLib.Bytes.new(data), False)
    out: list[tuple[bytes, bytes]] = []
    for i in range(v.n_children()):
        child = v.get_child_value(i)
        name = bytes(child.get_child_value(0).get_data_as_bytes().get_data() or b"")
        value = bytes(child.get_child_value(1).get_data_as_bytes().get_data() or b"")
        out.append((name.rstrip(b"\0"), value))
    return tuple(out)


def variant_bytes(v: GLib.Variant) -> bytes:
    return bytes(v.get_data_as_bytes().get_data() or b"")


@dataclass(frozen=True)
class ContentObject:
    """One ``.file`` object: its header fields, xattrs, and how to read its data."""

    checksum: str
    uid: int
    gid: int
    mode: int  # with S_IFMT, as ostree stores it
    size: int
    symlink_target: str | None
    xattrs: Xattrs
    xattrs_variant: bytes  # the serialized a(ayay), as the tar format stores it

    @property
    def is_symlink(self) -> bool:
        return (self.mode & S_IFMT) == S_IFLNK


@dataclass(frozen=True)
class Commit:
    checksum: str
    variant: bytes  # the serialized commit object
    detached: bytes | None  # the serialized .commitmeta, if any
    subject: str
    body: str
    timestamp: int
    parent: str | None
    root_tree: str
    root_meta: str
    metadata: dict[str, Any]


@dataclass(frozen=True)
class DirMeta:
    uid: int
    gid: int
    mode: int
    xattrs: Xattrs


@dataclass(frozen=True)
class DirTree:
    files: tuple[tuple[str, str], ...]  # (name, content checksum)
    dirs: tuple[tuple[str, str, str], ...]  # (name, dirtree checksum, dirmeta checksum)


class Repo:
    """An opened ostree repository."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        if not (self.path / "config").is_file() or not (self.path / "objects").is_dir():
            raise UserError(
                f"{self.path} is not an ostree repository",
                hint="give the directory made by 'ostree init' (it has config and objects/)",
            )
        self.gi = OSTree.Repo.new(Gio.File.new_for_path(str(self.path)))
        try:
            self.gi.open(None)
        except GLib.Error as e:
            raise UserError(f"cannot open ostree repository {self.path}: {e.message}") from e
        self.mode = _MODE_NAMES.get(self.gi.get_mode(), RepoMode.BARE_SPLIT_XATTRS)
        self._objects = self.path / "objects"

    @classmethod
    def create(cls, path: Path, mode: RepoMode = RepoMode.ARCHIVE) -> Repo:
        gi_mode = {v: k for k, v in _MODE_NAMES.items()}[mode]
        path.mkdir(parents=True, exist_ok=True)
        repo = OSTree.Repo.new(Gio.File.new_for_path(str(path)))
        repo.create(gi_mode, None)
        return cls(path)

    # -- refs and commits -------------------------------------------------------------

    def resolve(self, rev: str) -> str:
        try:
            _, checksum = self.gi.resolve_rev(rev, False)
        except GLib.Error as e:
            refs = sorted(self.refs())
            known = ", ".join(refs[:8]) if refs else "none"
            raise UserError(
                f"ref or commit {rev!r} not found in {self.path}",
                hint=f"refs in this repo: {known}",
            ) from e
        return str(checksum)

    def refs(self) -> list[str]:
        _, refs = self.gi.list_refs(None, None)
        return list(refs.keys())

    def set_ref(self, ref: str, checksum: str | None) -> None:
        self.gi.set_ref_immediate(None, ref, checksum, None)

    def read_metadata(self, objtype: ObjectType, checksum: str) -> bytes:
        """The serialized bytes of a metadata object (identical in every repo mode)."""
        path = self._objects / object_relpath(checksum, objtype)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            if objtype is ObjectType.COMMITMETA:
                raise
            # Objects may live in a parent repo (e.g. a sysroot's repo); ask libostree.
            _, v = self.gi.load_variant(_GI_TYPES[objtype], checksum)
            return variant_bytes(v)

    def commit(self, checksum: str) -> Commit:
        raw = self.read_metadata(ObjectType.COMMIT, checksum)
        v = GLib.Variant.new_from_bytes(
            GLib.VariantType("(a{sv}aya(say)sstayay)"), GLib.Bytes.new(raw), False
        )
        try:
            detached: bytes | None = self.read_metadata(ObjectType.COMMITMETA, checksum)
        except FileNotFoundError:
            detached = None
        parent = bytes(variant_bytes(v.get_child_value(1)))
        meta = v.get_child_value(0).unpack()
        return Commit(
            checksum=checksum,
            variant=raw,
            detached=detached,
            subject=v.get_child_value(3).get_string(),
            body=v.get_child_value(4).get_string(),
            # ostree stores the timestamp big-endian inside the variant.
            timestamp=int.from_bytes(
                v.get_child_value(5).get_uint64().to_bytes(8, sys.byteorder), "big"
            ),
            parent=parent.hex() if parent else None,
            root_tree=variant_bytes(v.get_child_value(6)).hex(),
            root_meta=variant_bytes(v.get_child_value(7)).hex(),
            metadata=dict(meta),
        )

    def dirtree(self, checksum: str) -> DirTree:
        raw = self.read_metadata(ObjectType.DIRTREE, checksum)
        v = GLib.Variant.new_from_bytes(
            GLib.VariantType("(a(say)a(sayay))"), GLib.Bytes.new(raw), False
        )
        fv, dv = v.get_child_value(0), v.get_child_value(1)
        files = []
        for i in range(fv.n_children()):
            c = fv.get_child_value(i)
            files.append(
                (c.get_child_value(0).get_string(), variant_bytes(c.get_child_value(1)).hex())
            )
        dirs = []
        for i in range(dv.n_children()):
            c = dv.get_child_value(i)
            dirs.append(
                (
                    c.get_child_value(0).get_string(),
                    variant_bytes(c.get_child_value(1)).hex(),
                    variant_bytes(c.get_child_value(2)).hex(),
                )
            )
        return DirTree(tuple(files), tuple(dirs))

    def dirmeta(self, checksum: str) -> DirMeta:
        raw = self.read_metadata(ObjectType.DIRMETA, checksum)
        uid, gid, mode = struct.unpack(">III", raw[:12])
        return DirMeta(uid, gid, mode, parse_xattrs(raw[12:]) if len(raw) > 12 else ())

    # -- content ------------------------------------------------------------------------

    def content(self, checksum: str) -> ContentObject:
        """Header fields and xattrs of a content object."""
        try:
            _, stream, info, xattrs = self.gi.load_file(checksum, None)
        except GLib.Error as e:
            raise UserError(f"content object {checksum} is missing or corrupt: {e.message}") from e
        if stream is not None:
            stream.close(None)
        xraw = variant_bytes(xattrs) if xattrs is not None else b""
        target = info.get_symlink_target()
        return ContentObject(
            checksum=checksum,
            uid=info.get_attribute_uint32("unix::uid"),
            gid=info.get_attribute_uint32("unix::gid"),
            mode=info.get_attribute_uint32("unix::mode"),
            size=0 if target is not None else info.get_size(),
            symlink_target=target,
            xattrs=parse_xattrs(xraw),
            xattrs_variant=xraw,
        )

    def open_content(self, obj: ContentObject) -> Reader:
        """A binary stream of a regular file object's data."""
        if self.mode is RepoMode.ARCHIVE:
            path = self._objects / object_relpath(obj.checksum, ObjectType.FILE, archive=True)
            f = path.open("rb")
            (header_len,) = struct.unpack(">I", f.read(4))
            f.seek(8 + header_len)
            return _InflateReader(f)
        if self.mode is RepoMode.BARE:
            return (self._objects / object_relpath(obj.checksum, ObjectType.FILE)).open("rb")
        _, stream, _, _ = self.gi.load_file(obj.checksum, None)
        return _GioReader(stream)

    def iter_tree(self, commit: Commit) -> Iterator[TreeEntry]:
        """Walk the commit's tree depth-first in ostree order (files, then subdirectories)."""
        yield from self._walk("", commit.root_tree, commit.root_meta)

    def _walk(self, path: str, tree_csum: str, meta_csum: str) -> Iterator[TreeEntry]:
        tree = self.dirtree(tree_csum)
        yield TreeEntry(path, "dir", tree_csum, meta_csum)
        for name, csum in tree.files:
            yield TreeEntry(f"{path}/{name}" if path else name, "file", csum, "")
        for name, sub_tree, sub_meta in tree.dirs:
            yield from self._walk(f"{path}/{name}" if path else name, sub_tree, sub_meta)


@dataclass(frozen=True)
class TreeEntry:
    """A path of a commit: ``kind`` is ``dir`` (checksum = dirtree, meta = dirmeta) or ``file``."""

    path: str  # relative, no leading slash; "" is the root
    kind: str
    checksum: str
    meta: str


class _InflateReader:
    """Reads the raw-deflate payload of an archive-mode ``.filez`` object.

    ``read(n)`` may return fewer than ``n`` bytes; it returns b"" only at the end.
    """

    def __init__(self, f: IO[bytes]) -> None:
        self._f = f
        self._z = zlib.decompressobj(-15)

    def read(self, n: int = -1) -> bytes:
        limit = n if n > 0 else 0
        while True:
            if self._z.unconsumed_tail:
                out = self._z.decompress(self._z.unconsumed_tail, limit)
            else:
                chunk = self._f.read(1 << 20)
                if not chunk:
                    return self._z.flush()
                out = self._z.decompress(chunk, limit)
            if out or self._z.eof:
                return out

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> _InflateReader:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None, /
    ) -> None:
        self.close()


class _GioReader:
    def __init__(self, stream: Gio.InputStream) -> None:
        self._s = stream

    def read(self, n: int = -1) -> bytes:
        size = n if n >= 0 else 1 << 20
        out = bytearray()
        while True:
            b = self._s.read_bytes(size - len(out) if n >= 0 else size, None).get_data() or b""
            if not b:
                break
            out += b
            if n >= 0 and len(out) >= n:
                break
        return bytes(out)

    def close(self) -> None:
        self._s.close(None)

    def __enter__(self) -> _GioReader:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None, /
    ) -> None:
        self.close()
