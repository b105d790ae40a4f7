"""ostree-format layers (tar format v1) → objects in an ostree repository.

Reads layer 0 (the commit, its metadata objects and any content not in a chunk) and the
chunk layers up to ``ostree.final-diffid``. libostree verifies each object against its
checksum as it is written. Both forms of xattrs are taken: the ``.file-xattrs-link``
holding the variant, and the older hardlink to a ``.file-xattrs`` object (or v0's
``repo/xattrs/<sha256>``). Everything outside ``sysroot/ostree/repo/objects`` is ignored.
"""

from __future__ import annotations

import hashlib
import tarfile

from ocitree.container.blobstream import Decompressor, chunks
from ocitree.container.ostree_tar import REPO_PREFIX
from ocitree.errors import ImageFormatError
from ocitree.ostree.repo import GLib, OSTree, Repo

_META_TYPES = {
    "commit": (OSTree.ObjectType.COMMIT, "(a{sv}aya(say)sstayay)"),
    "dirtree": (OSTree.ObjectType.DIR_TREE, "(a(say)a(sayay))"),
    "dirmeta": (OSTree.ObjectType.DIR_META, "(uuua(ayay))"),
}
_OBJECTS = REPO_PREFIX + "objects/"
_XATTRS_V0 = REPO_PREFIX + "xattrs/"
_MAX_XATTRS = 1 << 20


class OstreeLayerImporter:
    """Writes the objects of one ostree-format layer; ``content`` lists the .file objects.

    ``objects_only`` is for chunk layers, where a metadata object is an error.
    """

    def __init__(self, repo: Repo, *, objects_only: bool = False) -> None:
        self.repo = repo
        self.objects_only = objects_only
        self.commit: str | None = None
        self.count = 0
        self.content: list[str] = []
        self._xattrs: dict[str, bytes] = {}  # content checksum -> a(ayay) bytes
        # .file-xattrs objects (and v0's repo/xattrs/ files) by the sha256 of their bytes
        self._xattr_objects: dict[str, bytes] = {}

    def import_tar(self, stream: Decompressor) -> None:
        with tarfile.open(fileobj=stream, mode="r|") as tf:  # type: ignore[call-overload]
            for member in tf:
                name = member.name.removeprefix("./")
                if name.startswith(_XATTRS_V0) and member.isreg():
                    self._cache_xattrs(tf, member, name[len(_XATTRS_V0) :])
                    continue
                if not name.startswith(_OBJECTS):
                    continue
                rel = name[len(_OBJECTS) :]
                try:
                    prefix, rest = rel.split("/")
                    stem, objtype = rest.split(".", 1)
                except ValueError:
                    continue
                checksum = prefix + stem
                if len(checksum) != 64 or not all(c in "0123456789abcdef" for c in checksum):
                    raise ImageFormatError(f"malformed object path {name!r}")
                self._entry(tf, member, checksum, objtype, name)

    def _read_small(self, tf: tarfile.TarFile, m: tarfile.TarInfo, name: str) -> bytes:
        if m.size > _MAX_XATTRS:
            raise ImageFormatError(f"{name}: xattrs of {m.size} bytes are implausibly large")
        return self._read(tf, m)

    def _cache_xattrs(self, tf: tarfile.TarFile, m: tarfile.TarInfo, expected: str) -> None:
        data = self._read_small(tf, m, m.name)
        if hashlib.sha256(data).hexdigest() != expected:
            raise ImageFormatError(f"{m.name} does not match its checksum")
        self._xattr_objects[expected] = data

    def _read(self, tf: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
        f = tf.extractfile(member)
        return f.read() if f is not None else b""

    def _entry(
        self, tf: tarfile.TarFile, m: tarfile.TarInfo, csum: str, objtype: str, name: str
    ) -> None:
        if self.objects_only and (objtype in _META_TYPES or objtype == "commitmeta"):
            raise ImageFormatError(f"metadata object {name} in a chunk layer")
        if objtype in _META_TYPES:
            gtype, sig = _META_TYPES[objtype]
            data = self._read(tf, m)
            v = GLib.Variant.new_from_bytes(GLib.VariantType(sig), GLib.Bytes.new(data), False)
            self.repo.gi.write_metadata(gtype, csum, v, None)
            if objtype == "commit":
                if self.commit is not None:
                    raise ImageFormatError("more than one commit object in the image")
                self.commit = csum
            self.count += 1
        elif objtype == "commitmeta":
            data = self._read(tf, m)
            v = GLib.Variant.new_from_bytes(GLib.VariantType("a{sv}"), GLib.Bytes.new(data), False)
            self.repo.gi.write_commit_detached_metadata(csum, v, None)
        elif objtype == "file-xattrs":
            self._cache_xattrs(tf, m, csum)
        elif objtype in ("file-xattrs-link", "xattrs"):
            # v1: the variant itself, or a hardlink to a .file-xattrs object;
            # v0 ("<file>.xattrs"): a hardlink to repo/xattrs/<sha256>.
            if m.islnk():
                key = _xattrs_key(m.linkname)
                if key not in self._xattr_objects:
                    raise ImageFormatError(f"{name} links to a missing xattrs object")
                self._xattrs[csum] = self._xattr_objects[key]
            elif m.isreg() and objtype == "file-xattrs-link":
                self._xattrs[csum] = self._read_small(tf, m, name)
            else:
                raise ImageFormatError(f"{name}: unexpected tar entry type for xattrs")
        elif objtype == "file":
            self._content(tf, m, csum, name)
        else:
            raise ImageFormatError(f"unknown object type in {name!r}")

    def _content(self, tf: tarfile.TarFile, m: tarfile.TarInfo, csum: str, name: str) -> None:
        if csum not in self._xattrs:
            raise ImageFormatError(f"missing xattrs reference for {name}")
        xv = GLib.Variant.new_from_bytes(
            GLib.VariantType("a(ayay)"), GLib.Bytes.new(self._xattrs.pop(csum)), False
        )
        try:
            if m.issym():
                self.repo.gi.write_symlink(csum, m.uid, m.gid, xv, m.linkname, None)
            elif m.isreg():
                writer = self.repo.gi.write_regfile(
                    csum, m.uid, m.gid, 0o100000 | m.mode, m.size, xv
                )
                f = tf.extractfile(m)
                assert f is not None
                for chunk in chunks(f):
                    writer.write_bytes(GLib.Bytes.new(chunk), None)
                writer.finish(None)
            else:
                raise ImageFormatError(f"{name} is neither a regular file nor a symlink")
        except GLib.Error as e:
            if "checksum" not in e.message.lower() and "corrupt" not in e.message.lower():
                raise  # e.g. no space left: the store reports it as such
            raise ImageFormatError(f"object {csum} is corrupt: {e.message}") from e
        self.count += 1
        self.content.append(csum)


def _xattrs_key(linkname: str) -> str:
    """The xattrs checksum a link names: ``objects/ab/cd….file-xattrs`` or ``xattrs/<sha>``."""
    parts = linkname.removeprefix("./").split("/")
    if len(parts) >= 2 and parts[-2] == "xattrs":
        return parts[-1]
    return (parts[-2] if len(parts) >= 2 else "") + parts[-1].split(".", 1)[0]
