"""The incremental commit of a build root (``ocitree.build.treecommit``) against ``ostree
commit --tree=dir=``: for the same final root both must give the same commit, byte for
byte, whatever the build did to the checkout."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ocitree.build import treecommit
from ocitree.ostree.repo import Repo
from ocitree.run import run
from support.gentree import commit_tree, generate_tree
from support.images import ocitree

pytestmark = pytest.mark.integration

TIMESTAMP = 1_700_000_000
SUBJECT = "ocitree build test"
STRINGS = (("version", "2.0"), ("ostree.linux", "6.1.0-test"))
VARIANTS = (
    ("ostree.bootable", "true"),
    ("rpmostree.rpmdb.pkglist", "@a(sssss) [('a', '0', '1', '2', 'noarch')]"),
)


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    if shutil.which("ostree") is None:
        pytest.skip("ostree not installed")
    if os.geteuid() != 0:
        pytest.skip("a bare repo's checkout keeps owners only as root")
    work = tmp_path_factory.mktemp("treecommit")
    info = generate_tree(work / "tree", size=3 << 20, components=10, seed=11)
    commit = commit_tree(info.path, work / "repo", "base", mode="bare")
    return work / "repo", commit


@pytest.fixture(scope="module")
def base_image(tmp_path_factory: pytest.TempPathFactory, base: tuple[Path, str]) -> Path:
    """The base tree with busybox as an image in an ``oci:`` directory (tag v1)."""
    busybox = shutil.which("busybox")
    if busybox is None or shutil.which("bwrap") is None:
        pytest.skip("busybox (busybox-static) or bwrap (bubblewrap) not installed")
    work = tmp_path_factory.mktemp("treecommit-image")
    tree = work / "tree"
    run(["ostree", f"--repo={base[0]}", "checkout", "--force-copy", base[1], tree])
    shutil.copy(busybox, tree / "usr/bin/busybox")
    for name in ("sh", "mkdir", "echo", "rm", "ln", "chmod"):
        (tree / "usr/bin" / name).symlink_to("busybox")
    commit_tree(tree, work / "repo", "base", mode="bare")
    repo, image = work / "repo", work / "img"
    from ocitree.cli.main import main

    assert main(["-q", "encapsulate", "--repo", str(repo), "base", f"oci:{image}:v1"]) == 0
    return image


def checkout(base: tuple[Path, str], dest: Path) -> Path:
    repo, commit = base
    run(["ostree", f"--repo={repo}", "checkout", "--force-copy", commit, dest])
    assert treecommit.snapshot(dest, commit) is not None
    return dest


def incremental(base: tuple[Path, str], root: Path) -> str | None:
    repo, commit = base
    return treecommit.commit(
        Repo(repo),
        root,
        parent=commit,
        subject=SUBJECT,
        timestamp=TIMESTAMP,
        metadata=treecommit.metadata_variant(STRINGS, VARIANTS),
    )


def full(base: tuple[Path, str], root: Path) -> str:
    """What the build ran before: ``ostree commit`` of the whole root."""
    repo, commit = base
    argv = [
        "ostree", f"--repo={repo}", "commit", f"--tree=dir={root}", f"--parent={commit}",
        "--orphan", "--no-bindings", f"--subject={SUBJECT}", f"--timestamp=@{TIMESTAMP}",
    ]  # fmt: skip
    argv += [f"--add-metadata-string={k}={v}" for k, v in STRINGS]
    argv += [f"--add-metadata={k}={v}" for k, v in VARIANTS]
    return run(argv).stdout.decode().split()[-1]


def assert_same_as_full(base: tuple[Path, str], root: Path) -> str:
    repo = base[0]
    ours = incremental(base, root)
    assert ours is not None
    # The incremental commit alone is complete and sound, before ostree writes anything.
    run(["ostree", f"--repo={repo}", "fsck", "--quiet"])
    theirs = full(base, root)
    if ours != theirs:
        r = Repo(repo)
        a = {e.path: (e.kind, e.checksum, e.meta) for e in r.iter_tree(r.commit(ours))}
        b = {e.path: (e.kind, e.checksum, e.meta) for e in r.iter_tree(r.commit(theirs))}
        diff = sorted((p, a.get(p), b.get(p)) for p in a.keys() | b.keys() if a.get(p) != b.get(p))
        raise AssertionError(f"incremental {ours} != full {theirs}: " + "\n".join(map(str, diff)))
    return ours


def files(root: Path) -> list[Path]:
    """Regular files of the checkout outside /usr/etc, in a stable order."""
    etc = root / "usr/etc"
    return sorted(
        p
        for p in (root / "usr").rglob("*")
        if p.is_file() and not p.is_symlink() and etc not in p.parents
    )


def symlinks(root: Path) -> list[Path]:
    etc = root / "usr/etc"
    return sorted(p for p in (root / "usr").rglob("*") if p.is_symlink() and etc not in p.parents)


def dirs_with_files(root: Path) -> list[Path]:
    return sorted(
        p
        for p in (root / "usr/share").rglob("*")
        if p.is_dir() and not p.is_symlink() and any(c.is_file() for c in p.iterdir())
    )


def test_unchanged_checkout_is_the_base_tree(base: tuple[Path, str], tmp_path: Path) -> None:
    root = checkout(base, tmp_path / "root")
    commit = assert_same_as_full(base, root)
    repo = Repo(base[0])
    ours, parent = repo.commit(commit), repo.commit(base[1])
    assert (ours.root_tree, ours.root_meta) == (parent.root_tree, parent.root_meta)
    assert ours.parent == base[1]
    assert ours.timestamp == TIMESTAMP
    assert ours.metadata["version"] == "2.0"


def test_every_kind_of_change(base: tuple[Path, str], tmp_path: Path) -> None:
    root = checkout(base, tmp_path / "root")
    f, links, dirs = files(root), symlinks(root), dirs_with_files(root)
    assert len(f) > 30 and len(links) > 3 and len(dirs) > 6
    # the builder shows /usr/etc as /etc while the steps run
    (root / "usr/etc").rename(root / "etc")
    with (root / "etc/passwd").open("a") as out:
        out.write("b5:x:1000:1000::/var/home/b5:/bin/sh\n")
    (root / "etc/new.conf").write_text("new\n")
    (root / "etc/new.d").mkdir()
    (root / "etc/new.d/empty").mkdir()

    # new files: one in an existing directory, a whole new tree, an empty directory
    (root / "usr/bin/newtool").write_bytes(b"#!/bin/sh\necho new\n")
    (root / "usr/bin/newtool").chmod(0o755)
    for i in range(5):
        d = root / f"usr/share/newtree/sub{i % 2}/deeper"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"n{i}.txt").write_text(f"new file {i}\n" * (i + 1))
    (root / "usr/share/newtree/link").symlink_to("sub0/deeper/n0.txt")
    (root / "usr/lib/empty").mkdir()
    # hardlinked new files, and a new hardlink to a base file
    (root / "usr/bin/hl-one").write_bytes(b"hardlinked\n")
    os.link(root / "usr/bin/hl-one", root / "usr/lib/hl-two")
    os.link(f[20], root / "usr/lib/hl-to-base")
    # content changed in place: appended, overwritten at the same size
    with f[0].open("ab") as out:
        out.write(b"appended\n")
    fd = os.open(f[1], os.O_WRONLY)
    os.pwrite(fd, b"XYZ", 0)
    os.close(fd)
    # metadata only: mode, owner, xattrs set and removed, times (same content)
    f[2].chmod(0o700)
    os.chown(f[3], 1234, 5678)
    os.setxattr(f[4], "user.test", b"set by a step")
    for name in os.listxattr(f[5]):
        os.removexattr(f[5], name)
    os.utime(f[6], (0, 0))
    # types: file -> symlink, symlink -> file, symlink retargeted, file -> dir
    f[7].unlink()
    f[7].symlink_to("/usr/bin/newtool")
    links[0].unlink()
    links[0].write_text("was a symlink\n")
    target = os.readlink(links[1])
    links[1].unlink()
    links[1].symlink_to(target + ".other")
    f[8].unlink()
    f[8].mkdir()
    (f[8] / "inside").write_text("was a file\n")
    # deleted: a file, a directory with its files; dir -> file; renamed file and dir
    f[9].unlink()
    shutil.rmtree(dirs[0])
    shutil.rmtree(dirs[1])
    dirs[1].write_text("was a directory\n")
    f[10].rename(root / "usr/lib/renamed")
    f[11].rename(f[12])  # replaces another file
    dirs[2].rename(dirs[2].with_name(dirs[2].name + "-moved"))
    # deleted and made again at once: the new file may get the freed inode number
    for p in f[13:19]:
        p.unlink()
        p.write_text("recreated\n")
    # a directory's own metadata: mode, owner, xattr
    dirs[3].chmod(0o700)
    os.chown(dirs[4], 42, 42)
    os.setxattr(dirs[4].parent, "user.test", b"dir xattr")
    # a directory made anew: some names of the old one again, with other content
    names = sorted(c.name for c in dirs[5].iterdir())
    shutil.rmtree(dirs[5])
    dirs[5].mkdir()
    (dirs[5] / names[0]).write_text("same name, new file\n")
    (dirs[5] / "other").write_text("new name\n")
    # a directory moved away and back under a new directory of the same name: the
    # file in it is the same inode at the same path
    kept = next(c for c in dirs[6].iterdir() if c.is_file())
    dirs[6].rename(root / "usr/away")
    dirs[6].mkdir()
    (root / "usr/away" / kept.name).rename(kept)
    shutil.rmtree(root / "usr/away")
    # a copy with the same content as a base file (same object, new path)
    shutil.copy2(f[21], root / "usr/lib/copy-of-base")
    (root / "etc").rename(root / "usr/etc")

    commit = assert_same_as_full(base, root)
    repo = Repo(base[0])
    assert repo.commit(commit).root_tree != repo.commit(base[1]).root_tree


def test_quick_succession_of_changes(base: tuple[Path, str], tmp_path: Path) -> None:
    """Changes right after the snapshot, in the same clock tick as the checkout's last
    files, and files deleted and made again many times (freed inode numbers reused)."""
    root = checkout(base, tmp_path / "root")
    f = files(root)
    for p in f[:40]:
        data = p.read_bytes()
        p.unlink()
        p.write_bytes(data[::-1] or b"x")
    assert_same_as_full(base, root)


def test_nothing_but_new_and_deleted_entries(base: tuple[Path, str], tmp_path: Path) -> None:
    root = checkout(base, tmp_path / "root")
    shutil.rmtree(root / "usr/share")
    (root / "usr/share").mkdir()
    (root / "usr/share/only").write_text("the only file\n")
    assert_same_as_full(base, root)


def _no_snapshot(root: Path) -> None:
    treecommit.snapshot_path(root).unlink()


def _fifo(root: Path) -> None:
    os.mkfifo(root / "usr/lib/a-fifo")


def _unknown_commit(root: Path) -> None:
    """A snapshot of a checkout of a commit the repo does not have."""
    treecommit.snapshot(root, "0" * 64)


@pytest.mark.parametrize("spoil", [_no_snapshot, _fifo, _unknown_commit])
def test_leaves_what_it_cannot_do_to_the_full_commit(
    base: tuple[Path, str], tmp_path: Path, spoil: Callable[[Path], None]
) -> None:
    root = checkout(base, tmp_path / "root")
    spoil(root)
    assert incremental(base, root) is None


def test_a_change_right_after_the_snapshot_is_seen(base: tuple[Path, str], tmp_path: Path) -> None:
    """Before Linux 6.13 ctimes come from a coarse clock: on a small tree the snapshot
    takes less than one tick, and a change made at once could keep the recorded ctime.
    The snapshot waits for the clock, so an in-place rewrite (same inode, same size) is
    still seen. (Newer kernels stamp a change after a stat() from a fine clock.)"""
    repo = base[0]
    small = tmp_path / "small"
    small.mkdir()
    (small / "a").write_bytes(b"0" * 64)
    out = run([
        "ostree", f"--repo={repo}", "commit", f"--tree=dir={small}", "--orphan",
        "--no-bindings", "--subject=small",
    ]).stdout  # fmt: skip
    small_base = (repo, out.decode().split()[-1])
    for i in range(5):
        root = checkout(small_base, tmp_path / f"root{i}")
        newest = max(ctime for _, ctime, _ in treecommit._scan(root).values())
        fd = os.open(root / "a", os.O_WRONLY)
        os.pwrite(fd, b"1" * 64, 0)
        os.close(fd)
        assert os.stat(root / "a").st_ctime_ns > newest
        assert_same_as_full(small_base, root)


BUILD = """\
FROM oci:{image}:v1
COPY payload /usr/share/payload
RUN mkdir -p /usr/lib/built && echo built > /usr/lib/built/stamp \\
 && ln -s stamp /usr/lib/built/link && chmod 0700 /usr/lib/built \\
 && echo 'b:x:1000:1000::/var/home/b:/bin/sh' >> /etc/passwd && rm -rf /usr/share/doc
"""


def test_build_commits_incrementally_what_ostree_commit_would(
    base_image: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``ocitree build`` takes the incremental path, and its tree is the one ``ostree
    commit`` makes of the final root (checked while that root exists)."""
    ctx = tmp_path / "ctx"
    (ctx / "payload/sub").mkdir(parents=True)
    (ctx / "payload/a.txt").write_text("payload\n" * 100)
    (ctx / "payload/sub/b.bin").write_bytes(os.urandom(70_000))
    (ctx / "Containerfile").write_text(BUILD.format(image=base_image))
    real = treecommit.commit
    made: list[str] = []

    def checked(repo: Repo, root: Path, **kw: Any) -> str | None:
        ours = real(repo, root, **kw)
        assert ours is not None, "the build fell back to the full commit"
        assert (root / "usr/etc/passwd").read_text().endswith("/bin/sh\n")
        argv = ["ostree", f"--repo={repo.path}", "commit", f"--tree=dir={root}", "--orphan"]
        theirs = run(argv).stdout.decode().split()[-1]
        a, b = repo.commit(ours), repo.commit(theirs)
        assert (a.root_tree, a.root_meta) == (b.root_tree, b.root_meta)
        made.append(ours)
        return ours

    monkeypatch.setattr(treecommit, "commit", checked)
    out = tmp_path / "out"
    r = ocitree(capsys, "build", "--json", "-t", f"oci:{out}:built",
                "--cache-dir", tmp_path / "cache", ctx)  # fmt: skip
    assert r.code == 0, r.err
    assert made == [json.loads(r.out)["commit"]]
    repo = Repo(tmp_path / "cache/repo")
    built = repo.commit(made[0])
    assert built.metadata["ostree.bootable"] is True and "version" in built.metadata
    paths = {e.path for e in repo.iter_tree(built)}
    assert {"usr/lib/built/link", "usr/share/payload/sub/b.bin"} <= paths
    assert not any(p.startswith("usr/share/doc") for p in paths)
