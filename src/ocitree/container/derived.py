"""Derived layers (what ``COPY``/``RUN`` in podman, buildah or docker add on top of an
ostree image) → ostree: each layer becomes a commit of its own, then the layers are
merged onto the base commit in order.

A derived layer is an ordinary OCI layer. On import: ``etc`` becomes ``usr/etc``; ``var``
is kept; the contents of ``run``, ``tmp``, ``proc``, ``sys`` and ``dev`` are dropped; files
under ``sysroot/`` are not part of the tree, but a changed file that the base had
hardlinked into ``sysroot/ostree/repo/objects`` arrives as that object plus hardlinks to
it, and the first hardlink outside ``sysroot/`` becomes the real file. Whiteouts
(``.wh.NAME``) and opaque markers (``.wh..wh..opq``) are kept in the layer's commit as
empty files and applied when merging, like overlayfs would.

Nothing here extracts to the filesystem: entries become objects in the repo and entries
of an in-memory tree, so a hostile tar cannot write outside the repo. It is still
refused, whole, when an entry's path leaves the root (``..``, absolute paths), a
hardlink points at something not in the layer, a path goes through a symlink, or it
holds a device node or fifo outside ``/dev``.
"""

from __future__ import annotations

import tarfile
from dataclasses import dataclass, field

from ocitree.container.blobstream import Decompressor, chunks
from ocitree.errors import ImageFormatError
from ocitree.ostree.repo import GLib, OSTree, Repo, xattrs_to_variant

EXCLUDED_TOPLEVEL = ("run", "tmp", "proc", "sys", "dev")
WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
IMPLICIT_DIRS_KEY = "ocitree.implicit-dirs"
_MAX_PATH = 4096
S_IFDIR = 0o040000
S_IFREG = 0o100000


def dirmeta_variant(uid: int, gid: int, mode: int, xattrs: GLib.Variant) -> GLib.Variant:
    """A dirmeta ``(uuua(ayay))``; ostree keeps the integers big-endian."""
    return GLib.Variant.new_tuple(
        GLib.Variant("u", _be32(uid)),
        GLib.Variant("u", _be32(gid)),
        GLib.Variant("u", _be32(S_IFDIR | (mode & 0o7777))),
        xattrs,
    )


def _be32(v: int) -> int:
    return int.from_bytes(v.to_bytes(4, "big"), "little")


def write_dirmeta(
    repo: Repo,
    uid: int = 0,
    gid: int = 0,
    mode: int = 0o755,
    xattrs: tuple[tuple[bytes, bytes], ...] = (),
) -> str:
    v = dirmeta_variant(uid, gid, mode, xattrs_to_variant(xattrs))
    _, csum = repo.gi.write_metadata(OSTree.ObjectType.DIR_META, None, v, None)
    return csum if isinstance(csum, str) else bytes(csum).hex()


@dataclass
class _Dir:
    meta: str | None = None  # dirmeta checksum; None = implicit (no entry in the layer)
    files: dict[str, str] = field(default_factory=dict)
    dirs: dict[str, _Dir] = field(default_factory=dict)


def normalize(name: str) -> list[str] | None:
    """Path parts of a derived-layer entry as it lands in the ostree tree, or None to drop.

    Raises ImageFormatError for paths that escape the root.
    """
    if len(name) > _MAX_PATH:
        raise ImageFormatError(f"tar entry name of {len(name)} bytes is implausibly long")
    if name.startswith("/"):
        raise ImageFormatError(f"tar entry {name!r} has an absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise ImageFormatError(f"tar entry {name!r} leaves the root with '..'")
    if not parts:
        return []
    top = parts[0]
    if top == "etc":
        return ["usr", "etc", *parts[1:]]
    if top in EXCLUDED_TOPLEVEL:
        return [top] if len(parts) == 1 else None
    if top == "sysroot":
        return None
    return parts


class DerivedLayerImporter:
    """Imports one derived layer into a commit of its own (see the module docstring)."""

    def __init__(self, repo: Repo) -> None:
        self.repo = repo
        self.root = _Dir()
        self._by_path: dict[str, str] = {}  # tree path -> content checksum, for hardlinks
        self._sysroot_objects: dict[str, str] = {}  # sysroot/… object path -> checksum
        self._default_meta: str | None = None
        self._empty: str | None = None

    def import_tar(self, stream: Decompressor) -> None:
        with tarfile.open(fileobj=stream, mode="r|") as tf:  # type: ignore[call-overload]
            for m in tf:
                self._entry(tf, m)

    def _entry(self, tf: tarfile.TarFile, m: tarfile.TarInfo) -> None:
        raw = m.name.removeprefix("./")
        parts = normalize(raw)
        in_sysroot = parts is None and raw.split("/", 1)[0] == "sysroot"
        if m.isdev() and not (parts is None or parts[:1] == ["dev"]):
            raise ImageFormatError(f"tar entry {m.name!r} is a device node or fifo")
        if parts is None and not (in_sysroot and (m.isreg() or m.issym())):
            return
        if m.isdir():
            if parts:
                d = self._dir(parts, create_leaf=True)
                d.meta = write_dirmeta(self.repo, m.uid, m.gid, m.mode, _pax_xattrs(m))
            else:
                self.root.meta = write_dirmeta(self.repo, m.uid, m.gid, m.mode, _pax_xattrs(m))
            return
        if m.islnk():
            csum = self._link_target(m)
        elif m.issym():
            if len(m.linkname) > _MAX_PATH:
                raise ImageFormatError(f"symlink {m.name!r} has an implausibly long target")
            csum = self.repo.gi.write_symlink(
                None, m.uid, m.gid, xattrs_to_variant(_pax_xattrs(m)), m.linkname, None
            )
        elif m.isreg():
            csum = self._regfile(tf, m)
        else:
            raise ImageFormatError(f"tar entry {m.name!r} has an unsupported type")
        if in_sysroot:
            self._sysroot_objects[raw] = csum
            return
        assert parts is not None
        if not parts:
            raise ImageFormatError(f"tar entry {m.name!r} replaces the root directory")
        name = parts[-1]
        if name.startswith(WHITEOUT) and not m.isreg():
            raise ImageFormatError(f"whiteout {m.name!r} is not a regular file")
        parent = self._dir(parts[:-1], create_leaf=False)
        parent.dirs.pop(name, None)
        parent.files[name] = csum
        self._by_path["/".join(parts)] = csum

    def _regfile(self, tf: tarfile.TarFile, m: tarfile.TarInfo) -> str:
        writer = self.repo.gi.write_regfile(
            None,
            m.uid,
            m.gid,
            S_IFREG | (m.mode & 0o7777),
            m.size,
            xattrs_to_variant(_pax_xattrs(m)),
        )
        f = tf.extractfile(m)
        if f is not None:
            for chunk in chunks(f):
                writer.write_bytes(GLib.Bytes.new(chunk), None)
        return str(writer.finish(None))

    def _link_target(self, m: tarfile.TarInfo) -> str:
        target = m.linkname.removeprefix("./")
        if target in self._sysroot_objects:
            return self._sysroot_objects[target]
        parts = normalize(target)
        if parts is None or "/".join(parts) not in self._by_path:
            raise ImageFormatError(
                f"hardlink {m.name!r} points at {m.linkname!r}, which is not in this layer"
            )
        return self._by_path["/".join(parts)]

    def _dir(self, parts: list[str], *, create_leaf: bool) -> _Dir:
        d = self.root
        for i, p in enumerate(parts):
            if p in d.files:
                if i == len(parts) - 1 and create_leaf:
                    del d.files[p]
                else:
                    raise ImageFormatError(
                        f"tar entry goes through {'/'.join(parts[: i + 1])!r}, which this "
                        "layer made a file or symlink"
                    )
            d = d.dirs.setdefault(p, _Dir())
        return d

    def commit(self) -> str:
        """Write the layer's tree as a commit; returns its checksum."""
        implicit: list[str] = []
        mt = OSTree.MutableTree.new()
        self._fill(mt, self.root, "", implicit)
        _, root = self.repo.gi.write_mtree(mt, None)
        meta = GLib.Variant("a{sv}", {IMPLICIT_DIRS_KEY: GLib.Variant("as", implicit)})
        _, csum = self.repo.gi.write_commit_with_time(None, None, None, meta, root, 0, None)
        # Partial until the caller's transaction is in (see store._write_commit).
        self.repo.gi.mark_commit_partial(csum, True)
        return str(csum)

    def _fill(self, mt: OSTree.MutableTree, d: _Dir, path: str, implicit: list[str]) -> None:
        if d.meta is None:
            implicit.append(path)
            if self._default_meta is None:
                self._default_meta = write_dirmeta(self.repo)
            mt.set_metadata_checksum(self._default_meta)
        else:
            mt.set_metadata_checksum(d.meta)
        for name, csum in sorted(d.files.items()):
            mt.replace_file(name, csum)
        for name, sub in sorted(d.dirs.items()):
            _, child = mt.ensure_dir(name)
            self._fill(child, sub, f"{path}/{name}" if path else name, implicit)


def _pax_xattrs(m: tarfile.TarInfo) -> tuple[tuple[bytes, bytes], ...]:
    out = []
    for key, value in m.pax_headers.items():
        if key.startswith("SCHILY.xattr."):
            name = key.removeprefix("SCHILY.xattr.").encode("utf-8", "surrogateescape")
            out.append((name, value.encode("utf-8", "surrogateescape")))
    return tuple(sorted(out))


def subdir(mt: OSTree.MutableTree, parts: tuple[str, ...]) -> OSTree.MutableTree | None:
    """The subdirectory at ``parts`` of a mutable tree, or None."""
    node = mt
    for name in parts:
        sub = node.get_subdirs().get(name)
        if sub is None:
            return None
        node = sub
    return node


def merge(repo: Repo, base: str | None, layers: list[str]) -> OSTree.MutableTree:
    """The base commit's tree with the derived layer commits applied in order."""
    if base is not None:
        mt = OSTree.MutableTree.new_from_commit(repo.gi, base)
    else:
        mt = OSTree.MutableTree.new()
        mt.set_metadata_checksum(write_dirmeta(repo))
    for layer in layers:
        c = repo.commit(layer)
        implicit = set(c.metadata.get(IMPLICIT_DIRS_KEY, []))
        _apply(repo, mt, c.root_tree, c.root_meta, "", implicit)
    return mt


def _apply(
    repo: Repo,
    mt: OSTree.MutableTree,
    tree_csum: str,
    meta_csum: str,
    path: str,
    implicit: set[str],
) -> None:
    if path not in implicit:
        mt.set_metadata_checksum(meta_csum)
    tree = repo.dirtree(tree_csum)
    names = {n for n, _ in tree.files}
    if OPAQUE in names:
        for name in list(mt.get_files().keys()) + list(mt.get_subdirs().keys()):
            mt.remove(name, True)
    for name, csum in tree.files:
        if name == OPAQUE:
            continue
        if name.startswith(WHITEOUT):
            mt.remove(name[len(WHITEOUT) :], True)
            continue
        mt.remove(name, True)
        mt.replace_file(name, csum)
    for name, sub_tree, sub_meta in tree.dirs:
        sub_path = f"{path}/{name}" if path else name
        if name in mt.get_files():
            if sub_path in implicit:
                raise ImageFormatError(
                    f"a derived layer writes through /{sub_path}, which is not a directory"
                )
            mt.remove(name, False)
        _, child = mt.ensure_dir(name)
        _apply(repo, child, sub_tree, sub_meta, sub_path, implicit)
