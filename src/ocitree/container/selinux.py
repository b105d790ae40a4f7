"""Label a merged tree with the image's own SELinux policy.

When an image has derived layers, files they added carry no label (container builds
don't set ``security.selinux``), and a layer may even change the policy. So, as
ostree-ext does, the merged tree is labelled from the policy the merged tree itself
holds (``usr/etc/selinux/config`` and that policy's file contexts). Only objects whose
label changes are rewritten; everything the base already labelled right is reused.
"""

from __future__ import annotations

import stat
import tempfile
from pathlib import Path

from ocitree.container.derived import S_IFDIR, subdir, write_dirmeta
from ocitree.log import step
from ocitree.ostree.repo import Gio, GLib, OSTree, Repo, xattrs_to_variant

SELINUX_XATTR = b"security.selinux"
_POLICY_DIR = ("usr", "etc", "selinux")


def _materialize(repo: Repo, mt: OSTree.MutableTree, dest: Path) -> None:
    """Write a subtree's files (regular files and symlinks) below ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    for name, csum in mt.get_files().items():
        obj = repo.content(csum)
        if obj.symlink_target is not None:
            (dest / name).symlink_to(obj.symlink_target)
            continue
        with repo.open_content(obj) as src, (dest / name).open("wb") as out:
            while chunk := src.read(1 << 20):
                out.write(chunk)
    for name, sub in mt.get_subdirs().items():
        _materialize(repo, sub, dest / name)


def load_policy(repo: Repo, mt: OSTree.MutableTree, workdir: Path) -> OSTree.SePolicy | None:
    """The SELinux policy the tree holds, or None when it has none."""
    policy_dir = subdir(mt, _POLICY_DIR)
    if policy_dir is None or "config" not in policy_dir.get_files():
        return None
    _materialize(repo, policy_dir, workdir.joinpath(*_POLICY_DIR))
    try:
        policy = OSTree.SePolicy.new(Gio.File.new_for_path(str(workdir)), None)
    except GLib.Error:
        return None
    return policy if policy.get_name() else None


def relabel(repo: Repo, mt: OSTree.MutableTree) -> int:
    """Label every file and directory of ``mt`` with the tree's own policy, if it has one.

    Returns how many objects got a new label.
    """
    with tempfile.TemporaryDirectory(prefix="ocitree-sepolicy-") as tmp:
        policy = load_policy(repo, mt, Path(tmp))
        if policy is None:
            return 0
        with step(f"Labelling the tree with its SELinux policy {policy.get_name()!r}"):
            return _relabel_dir(repo, policy, mt, "/")


def _label(policy: OSTree.SePolicy, path: str, mode: int) -> bytes | None:
    _, label = policy.get_label(path, mode, None)
    return label.encode() + b"\0" if label else None


def _with_label(
    xattrs: tuple[tuple[bytes, bytes], ...], label: bytes | None
) -> tuple[tuple[bytes, bytes], ...]:
    rest = tuple((k, v) for k, v in xattrs if k != SELINUX_XATTR)
    return tuple(sorted((*rest, (SELINUX_XATTR, label)))) if label else rest


def _relabel_dir(repo: Repo, policy: OSTree.SePolicy, mt: OSTree.MutableTree, path: str) -> int:
    changed = 0
    meta_csum = mt.get_metadata_checksum()
    meta = repo.dirmeta(meta_csum)
    label = _label(policy, path, S_IFDIR | meta.mode)
    xattrs = _with_label(meta.xattrs, label)
    if xattrs != meta.xattrs:
        mt.set_metadata_checksum(write_dirmeta(repo, meta.uid, meta.gid, meta.mode, xattrs))
        changed += 1
    base = path.rstrip("/") + "/"
    for name, csum in list(mt.get_files().items()):
        obj = repo.content(csum)
        label = _label(policy, base + name, obj.mode)
        xattrs = _with_label(obj.xattrs, label)
        if xattrs == obj.xattrs:
            continue
        variant = xattrs_to_variant(xattrs)
        if obj.symlink_target is not None:
            new = repo.gi.write_symlink(None, obj.uid, obj.gid, variant, obj.symlink_target, None)
        else:
            writer = repo.gi.write_regfile(
                None, obj.uid, obj.gid, stat.S_IFREG | (obj.mode & 0o7777), obj.size, variant
            )
            with repo.open_content(obj) as src:
                while chunk := src.read(1 << 20):
                    writer.write_bytes(GLib.Bytes.new(chunk), None)
            new = writer.finish(None)
        mt.replace_file(name, str(new))
        changed += 1
    for name, sub in list(mt.get_subdirs().items()):
        changed += _relabel_dir(repo, policy, sub, base + name)
    return changed
