"""The image is an ordinary container image too: umoci and buildah read and build on it."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import pytest

from integration.conftest import Committed
from ocitree.run import run
from support.gentree import commit_tree
from support.images import buildah_build, ocitree

pytestmark = pytest.mark.integration


def _snapshot(root: Path, *, skip: tuple[str, ...]) -> dict[str, tuple[object, ...]]:
    """Path → (type, mode, uid, gid, link target or content, user/security xattrs)."""
    out: dict[str, tuple[object, ...]] = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if rel.startswith(skip):
                continue
            st = p.lstat()
            if stat.S_ISLNK(st.st_mode):
                what: object = os.readlink(p)
            elif stat.S_ISREG(st.st_mode):
                what = p.read_bytes()
            else:
                what = None
            xattrs = tuple(
                sorted(
                    (k, os.getxattr(p, k, follow_symlinks=False))
                    for k in os.listxattr(p, follow_symlinks=False)
                    if k.startswith("user.")
                )
            )
            out[rel] = (
                stat.S_IFMT(st.st_mode),
                stat.S_IMODE(st.st_mode),
                st.st_uid,
                st.st_gid,
                what,
                xattrs,
            )
    return out


def test_umoci_unpack_equals_ostree_checkout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], sample: Committed
) -> None:
    if shutil.which("umoci") is None:
        pytest.skip("umoci not installed")
    r = ocitree(
        capsys, "encapsulate", "--repo", sample.repo, sample.ref, f"oci:{tmp_path / 'img'}:v1"
    )
    assert r.code == 0, r.err
    run(["umoci", "unpack", "--image", f"{tmp_path / 'img'}:v1", tmp_path / "bundle"])
    run(["ostree", f"--repo={sample.repo}", "checkout", sample.ref, tmp_path / "checkout"])
    checkout = tmp_path / "checkout"
    # The image shows /usr/etc as /etc, like a booted ostree system.
    (checkout / "usr/etc").rename(checkout / "etc")
    image = _snapshot(tmp_path / "bundle/rootfs", skip=("sysroot/ostree", "var/tmp"))
    expected = _snapshot(checkout, skip=("sysroot/ostree", "var/tmp"))
    assert image.keys() == expected.keys()
    for path, facts in expected.items():
        assert image[path] == facts, path


def test_buildah_builds_from_the_image(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], sample: Committed
) -> None:
    busybox = shutil.which("busybox")
    if shutil.which("buildah") is None or busybox is None:
        pytest.skip("buildah or busybox (busybox-static) not installed")
    # The generated tree has no shell; give it a static busybox as /usr/bin/sh.
    tree = tmp_path / "tree"
    shutil.copytree(sample.tree.path, tree, symlinks=True)
    shutil.copy(busybox, tree / "usr/bin/busybox")
    (tree / "usr/bin/sh").symlink_to("busybox")
    commit_tree(tree, tmp_path / "repo", sample.ref, mode="bare")
    r = ocitree(
        capsys, "encapsulate", "--repo", tmp_path / "repo", sample.ref, f"oci:{tmp_path / 'img'}:v1"
    )
    assert r.code == 0, r.err
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Containerfile").write_text(
        f"FROM oci:{tmp_path / 'img'}:v1\n"
        "RUN test -f /usr/lib/os-release && echo built > /etc/derived && "
        "busybox rm /usr/lib/ocitree-unpackaged/* \n"
    )
    buildah_build(tmp_path, ctx, f"oci:{tmp_path / 'derived'}:1")
    r = ocitree(capsys, "inspect", "--json", f"oci:{tmp_path / 'derived'}:1")
    assert r.code == 0, r.err
    info = json.loads(r.out)
    assert info["commit"] and info["layers"][-1]["kind"] == "derived"
