"""The test-data generator is deterministic, OS-shaped, and its v2 changes what it says."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
from pathlib import Path

import pytest

from ocitree.run import run
from support.gentree import (
    COMPONENT_XATTR,
    KERNEL_COMPONENT,
    commit_tree,
    generate_tree,
    parse_size,
)

SIZE = 4 * 1024 * 1024
needs_ostree = pytest.mark.skipif(shutil.which("ostree") is None, reason="ostree not installed")

Entry = tuple[str, int, int, int, str, tuple[tuple[str, bytes], ...]]


def snapshot(root: Path) -> dict[str, Entry]:
    """Every entry below root: type, mode, owner, content digest or target, xattrs."""
    entries: dict[str, Entry] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                kind, data = "l", os.readlink(path)
            elif stat.S_ISDIR(st.st_mode):
                kind, data = "d", ""
            else:
                kind, data = "f", hashlib.sha256(path.read_bytes()).hexdigest()
            xattrs = tuple(
                sorted(
                    (k, os.getxattr(path, k, follow_symlinks=False))
                    for k in os.listxattr(path, follow_symlinks=False)
                )
            )
            rel = str(path.relative_to(root))
            entries[rel] = (kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, data, xattrs)
    return entries


def component_of(entry: Entry) -> str | None:
    for key, value in entry[5]:
        if key == COMPONENT_XATTR:
            return value.decode()
    return None


def test_same_arguments_give_byte_identical_trees(tmp_path: Path) -> None:
    a = generate_tree(tmp_path / "a", size=SIZE, components=20, seed=7)
    b = generate_tree(tmp_path / "b", size=SIZE, components=20, seed=7)
    assert snapshot(a.path) == snapshot(b.path)
    assert (a.total_bytes, a.file_count, a.components) == (
        b.total_bytes,
        b.file_count,
        b.components,
    )


def test_another_seed_gives_another_tree(tmp_path: Path) -> None:
    a = generate_tree(tmp_path / "a", size=SIZE, components=20, seed=1)
    b = generate_tree(tmp_path / "b", size=SIZE, components=20, seed=2)
    assert snapshot(a.path) != snapshot(b.path)


def test_tree_is_laid_out_like_an_ostree_commit_root(tmp_path: Path) -> None:
    info = generate_tree(tmp_path / "t", size=SIZE, components=10)
    root = info.path
    assert not (root / "etc").exists()
    assert os.readlink(root / "bin") == "usr/bin"
    assert os.readlink(root / "ostree") == "sysroot/ostree"
    for d in ("sysroot", "boot", "dev", "proc", "sys", "run", "tmp", "var", "usr/etc"):
        assert (root / d).is_dir() and not (root / d).is_symlink(), d
    release = (root / "usr/etc/os-release").read_text()
    assert "ID=ocitree-sample\n" in release and "VERSION_ID=1\n" in release
    modules = root / "usr/lib/modules" / info.kver
    assert os.getxattr(modules / "vmlinuz", COMPONENT_XATTR) == KERNEL_COMPONENT.encode()
    assert COMPONENT_XATTR not in os.listxattr(modules / "initramfs.img")
    assert (root / "usr/share/pkg-000/empty").stat().st_size == 0


def test_every_packaged_file_is_tagged_and_sizes_add_up(tmp_path: Path) -> None:
    info = generate_tree(tmp_path / "t", size=SIZE, components=15)
    snap = snapshot(info.path)
    files = {p: e for p, e in snap.items() if e[0] == "f"}
    untagged = {p for p, e in files.items() if component_of(e) is None}
    assert untagged == {
        "usr/lib/os-release",
        "usr/etc/passwd",
        "usr/etc/group",
        "usr/share/misc/magic",
        f"usr/lib/modules/{info.kver}/initramfs.img",
        *(f"usr/lib/ocitree-unpackaged/data-{j}" for j in range(4)),
    }
    with_test_xattr = [p for p, e in files.items() if "user.test" in dict(e[5])]
    assert len(with_test_xattr) >= 2 * 15
    seen: dict[str, int] = {}
    inodes: set[int] = set()
    for p, e in files.items():
        st = (info.path / p).stat()
        name = component_of(e)
        if name is not None and st.st_ino not in inodes:
            seen[name] = seen.get(name, 0) + st.st_size
        inodes.add(st.st_ino)
    assert seen == dict(info.components)
    assert len(info.components) == 16
    assert abs(info.total_bytes - SIZE) < SIZE * 0.05
    assert info.file_count == sum(1 for e in snap.values() if e[0] != "d")
    # Symlinks of a component point at that component's files.
    assert os.readlink(info.path / "usr/lib64/libpkg-003.so.1") == "libpkg-003.so.1.0.0"
    hardlinked = (info.path / "usr/libexec/pkg-003/pkg-003").stat()
    assert hardlinked.st_ino == (info.path / "usr/bin/pkg-003").stat().st_ino


def test_v2_changes_exactly_the_changed_components(tmp_path: Path) -> None:
    v1 = generate_tree(tmp_path / "v1", size=SIZE, components=40, seed=3)
    v2 = generate_tree(tmp_path / "v2", size=SIZE, components=40, seed=3, version=2)
    assert v1.changed_components == ()
    assert len(v2.changed_components) == 2
    a, b = snapshot(v1.path), snapshot(v2.path)
    differing = {p for p in a.keys() | b.keys() if a.get(p) != b.get(p)}
    owners = {component_of(a.get(p) or b[p]) for p in differing if (a.get(p) or b[p])[0] == "f"}
    assert owners == {None, *v2.changed_components}
    assert {p for p in differing if component_of(a.get(p) or b[p]) is None} == {
        "usr/lib/os-release"
    }
    assert "VERSION_ID=2\n" in (v2.path / "usr/lib/os-release").read_text()
    for name in v2.changed_components:
        mine = {p for p, e in a.items() if e[0] == "f" and component_of(e) == name}
        assert len(mine - b.keys()) == 1, "one file deleted"
        added = {p for p, e in b.items() if e[0] == "f" and component_of(e) == name} - a.keys()
        assert len(added) == 1, "one file added"
        rewritten = {p for p in mine & b.keys() if a[p] != b[p]}
        assert len(rewritten) >= 0.6 * len(mine)
    for name, size in v1.components.items():
        if name not in v2.changed_components:
            assert v2.components[name] == size


def test_nonempty_destination_is_refused(tmp_path: Path) -> None:
    (tmp_path / "x").write_text("x")
    with pytest.raises(FileExistsError):
        generate_tree(tmp_path, size=SIZE)


def test_parse_size_takes_binary_suffixes() -> None:
    assert parse_size("100M") == 100 * 1024 * 1024
    assert parse_size("1G") == 1 << 30
    assert parse_size("1.5k") == 1536
    assert parse_size("4096") == 4096


@needs_ostree
def test_commit_is_reproducible_and_fsck_clean(tmp_path: Path) -> None:
    info = generate_tree(tmp_path / "t", size=SIZE, components=10)
    first = commit_tree(info.path, tmp_path / "r1", "sample/x86_64")
    second = commit_tree(info.path, tmp_path / "r2", "sample/x86_64", mode="bare")
    assert len(first) == 64 and first == second
    run(["ostree", "fsck", f"--repo={tmp_path / 'r1'}"])
    show = ["ostree", "show", f"--repo={tmp_path / 'r1'}", first]
    assert run([*show, "--print-metadata-key=ostree.bootable"]).stdout.strip() == b"true"
    linux = run([*show, "--print-metadata-key=ostree.linux"]).stdout.strip()
    assert linux == f"'{info.kver}'".encode()
    assert run([*show, "--print-metadata-key=version"]).stdout.strip() == b"'1'"
    assert b"Date:  1970-01-01 00:00:00 +0000" in run(show).stdout
    listing = run(["ostree", "ls", "-X", f"--repo={tmp_path / 'r1'}", first, "/usr/bin/pkg-000"])
    assert b"user.component" in listing.stdout
