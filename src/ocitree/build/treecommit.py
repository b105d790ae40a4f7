"""Incremental ``ostree commit`` of a build root that was checked out from a base commit.

``ostree commit --tree=dir=ROOT`` reads and hashes every file of the root, although a
build changes few of them. Here the commit the root was checked out from (the *base*;
the new commit's parent may be another one) is the starting point instead:

1. Right after the checkout, :func:`snapshot` records every path of the root with its
   inode number, ``st_ctime_ns`` and file type (a file beside the root holds it, with the
   base's checksum). The checkout is a copy of the base, so at that moment each path is
   exactly the base's entry.
2. At commit time, :func:`commit` scans the root again. A path whose (inode, ctime, type)
   is the recorded one is still the base's entry. Every other path is *dirty*: new, or
   changed in content, mode, owner or xattrs; so are the directories above a dirty path
   and the directories an entry was deleted from. libostree's ``write_dfd_to_mtree``
   (what ``ostree commit`` runs) then writes the root into a ``MutableTree`` of the base,
   with a filter that skips every path that is not dirty: an unchanged file keeps
   its base entry, an unchanged subtree is not even read, and whatever is written is
   written by ostree's own code (content objects, xattrs, dirmeta) as a full commit
   would. Entries the root no longer has, or has with another type (a file that became a
   directory or back), are removed from the tree first.

Why the (inode, ctime) rule is safe: user space cannot set ``ctime`` (``utimensat`` sets
atime and mtime only); the kernel sets it to the current time on every change of an
inode's data, mode, owner, link count or xattrs, and on a rename. The same inode at the
same path with the same ctime therefore still has the content, metadata and xattrs it had
when the snapshot was taken. Before Linux 6.13 the kernel takes timestamps from a coarse
clock, so a later change could fall into the same clock tick as the snapshot:
:func:`snapshot` waits until the clock has passed the newest recorded ctime, after which
every change (including a new file that reuses a freed inode number) gets a ctime that no
recorded entry has. What this assumes: the system clock is not set backwards during the
build.

Anything this cannot do exactly as ``ostree commit`` (no snapshot, or one of a commit the
repo lacks, a repo that is not ``bare``, file types ostree rejects, names that are not
UTF-8, any error) makes :func:`commit` return ``None``: the caller then runs the full
commit. A root with an SELinux policy is the caller's to send to the full commit: ostree
relabels every file with the policy, which may differ from the base's labels.
"""

from __future__ import annotations

import os
import pickle
import stat
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ocitree.log import logger
from ocitree.ostree.repo import GLib, OSTree, Repo, RepoMode

# relative path ("" is the root) -> (st_ino, st_ctime_ns, S_IFMT of st_mode)
Entries = dict[str, tuple[int, int, int]]

_FORMAT = 1
_SETTLE_SECONDS = 2.0
_KINDS = (stat.S_IFDIR, stat.S_IFREG, stat.S_IFLNK)


class _Unsupported(Exception):
    """Something only the full commit handles (it then reports it, if it is an error)."""


@dataclass(frozen=True)
class Snapshot:
    commit: str  # the commit the root was checked out from
    entries: Entries


def snapshot_path(root: Path) -> Path:
    return root.with_name(f"{root.name}.snapshot")


def snapshot(root: Path, commit: str) -> Snapshot | None:
    """Record ``root``, just checked out from ``commit``, for :func:`commit`.

    Returns None (and records nothing) where the clock does not move past the newest
    ctime of the tree in time, or the tree cannot be read: the commit is then a full one."""
    try:
        entries = _scan(root)
        newest = max(ctime for _, ctime, _ in entries.values())
        if not _settle(root.parent, newest):
            logger.debug("no snapshot of %s: the clock did not pass its ctimes", root)
            return None
        snap = Snapshot(commit, entries)
        snapshot_path(root).write_bytes(pickle.dumps((_FORMAT, snap.commit, snap.entries)))
    except OSError as e:
        logger.debug("no snapshot of %s: %s", root, e)
        return None
    return snap


def load_snapshot(root: Path) -> Snapshot | None:
    try:
        fmt, commit_, entries = pickle.loads(snapshot_path(root).read_bytes())
    except (OSError, EOFError, TypeError, ValueError, pickle.UnpicklingError):
        return None
    return Snapshot(commit_, entries) if fmt == _FORMAT else None


def metadata_variant(
    strings: Sequence[tuple[str, str]], variants: Sequence[tuple[str, str]]
) -> GLib.Variant:
    """The ``a{sv}`` that ``ostree commit`` builds from ``--add-metadata-string=K=V``
    (``strings``) and ``--add-metadata=K=V`` (``variants``, GVariant text): strings
    first, then variants, each in the order given."""
    values = [(k, GLib.Variant("s", v)) for k, v in strings]
    values += [(k, GLib.Variant.parse(None, v, None, None)) for k, v in variants]
    return GLib.Variant.new_array(
        GLib.VariantType("{sv}"),
        [
            GLib.Variant.new_dict_entry(GLib.Variant("s", k), GLib.Variant.new_variant(v))
            for k, v in values
        ],
    )


def commit(
    repo: Repo,
    root: Path,
    *,
    parent: str,
    subject: str,
    timestamp: int,
    metadata: GLib.Variant,
) -> str | None:
    """Commit ``root`` as ``ostree commit --tree=dir=ROOT --parent=PARENT --orphan
    --no-bindings`` would, reusing the entries of the commit it was checked out from for
    what is unchanged since :func:`snapshot`; the commit's checksum, or None where only
    the full commit can."""
    snap = load_snapshot(root)
    if snap is None:
        logger.debug("incremental commit: no snapshot of %s", root)
        return None
    if repo.mode is not RepoMode.BARE:
        logger.debug("incremental commit: repo mode %s, not bare", repo.mode)
        return None
    try:
        base = repo.commit(snap.commit)
        now = _scan(root, strict=True)
    except (_Unsupported, OSError, GLib.Error) as e:
        logger.debug("incremental commit: %s", e)
        return None
    needed = _dirty(snap.entries, now)
    mtree = OSTree.MutableTree.new_from_checksum(repo.gi, base.root_tree, base.root_meta)
    gi = repo.gi
    gi.prepare_transaction(None)
    try:
        _remove_gone(mtree, needed, now)
        allow, skip = OSTree.RepoCommitFilterResult.ALLOW, OSTree.RepoCommitFilterResult.SKIP

        def only_dirty(_repo: object, path: str, _info: object, *_data: object) -> object:
            return allow if path[1:] in needed else skip

        modifier = OSTree.RepoCommitModifier.new(
            OSTree.RepoCommitModifierFlags.NONE, only_dirty, None
        )
        gi.write_dfd_to_mtree(-100, str(root), mtree, modifier, None)  # -100: AT_FDCWD
        _, tree = gi.write_mtree(mtree, None)
        _, checksum = gi.write_commit_with_time(
            parent, subject, None, metadata, tree, timestamp, None
        )
        gi.commit_transaction(None)
    except Exception as e:  # the full commit is right whatever went wrong here
        gi.abort_transaction(None)
        why = e.message if isinstance(e, GLib.Error) else repr(e)
        logger.warning("incremental commit failed (%s); committing the whole tree", why)
        return None
    except BaseException:
        gi.abort_transaction(None)
        raise
    logger.debug("incremental commit: %d of %d paths read again", len(needed), len(now))
    return str(checksum)


def _scan(root: Path, *, strict: bool = False) -> Entries:
    """(inode, ctime, type) of every path under ``root``, found with ``os.scandir``."""
    st = os.lstat(root)
    out: Entries = {"": (st.st_ino, st.st_ctime_ns, stat.S_IFMT(st.st_mode))}
    stack = [("", str(root))]
    while stack:
        rel, path = stack.pop()
        with os.scandir(path) as it:
            for entry in it:
                st = entry.stat(follow_symlinks=False)
                kind = stat.S_IFMT(st.st_mode)
                name = f"{rel}/{entry.name}" if rel else entry.name
                if strict:
                    if kind not in _KINDS:
                        raise _Unsupported(f"{name} is not a file, symlink or directory")
                    if not name.isascii():
                        try:
                            name.encode()
                        except UnicodeEncodeError:
                            raise _Unsupported(f"{name!r} is not UTF-8") from None
                out[name] = (st.st_ino, st.st_ctime_ns, kind)
                if kind == stat.S_IFDIR:
                    stack.append((name, entry.path))
    return out


def _dirty(before: Entries, now: Entries) -> set[str]:
    """Paths that are new or changed, directories an entry left, and all their parents."""
    marked = [path for path, seen in now.items() if before.get(path) != seen]
    marked += [_parent(path) for path in before.keys() - now.keys()]
    needed: set[str] = set()
    for path in marked:
        while path not in needed:
            needed.add(path)
            if not path:
                break
            path = _parent(path)
    return needed


def _parent(path: str) -> str:
    return path.rpartition("/")[0]


def _remove_gone(mtree: OSTree.MutableTree, needed: set[str], now: Entries) -> None:
    """Drop the base entries that are gone from a dirty directory or changed type."""
    for path in sorted(p for p in needed if p in now and now[p][2] == stat.S_IFDIR):
        sub = _subdir(mtree, path)
        if sub is None:
            continue  # a new directory: nothing of the base's to drop
        prefix = f"{path}/" if path else ""
        for name in sub.get_files():
            seen = now.get(prefix + name)
            if seen is None or seen[2] == stat.S_IFDIR:
                sub.remove(name, False)
        for name in sub.get_subdirs():
            seen = now.get(prefix + name)
            if seen is None or seen[2] != stat.S_IFDIR:
                sub.remove(name, False)


def _subdir(mtree: OSTree.MutableTree, path: str) -> OSTree.MutableTree | None:
    for name in path.split("/") if path else ():
        try:
            _, _, mtree = mtree.lookup(name)
        except GLib.Error:
            return None
        if mtree is None:
            return None
    return mtree


def _settle(directory: Path, newest: int) -> bool:
    """Wait until a change made in ``directory`` gets a ctime later than ``newest``."""
    fd, probe = tempfile.mkstemp(prefix=".ctime-", dir=directory)
    try:
        deadline = time.monotonic() + _SETTLE_SECONDS
        while True:
            os.fchmod(fd, 0o600)  # sets ctime to the kernel's current time
            if os.fstat(fd).st_ctime_ns > newest:
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.001)
    finally:
        os.close(fd)
        os.unlink(probe)
