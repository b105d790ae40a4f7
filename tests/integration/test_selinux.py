"""A derived image is labelled with the image's own SELinux policy, as it stands after the
derived layers (which may change it)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from integration.conftest import Committed
from ocitree.container.selinux import SELINUX_XATTR
from ocitree.ostree.repo import Repo, RepoMode
from ocitree.run import run
from support.gentree import commit_tree
from support.images import buildah_build, ocitree, pull_layout

pytestmark = pytest.mark.integration

FILE_CONTEXTS = (
    "/.*\tsystem_u:object_r:default_t:s0\n"
    "/usr/bin(/.*)?\tsystem_u:object_r:bin_t:s0\n"
    "/etc(/.*)?\tsystem_u:object_r:etc_t:s0\n"
)


def _label(repo: Repo, commit: str, path: str) -> str | None:
    c = repo.commit(commit)
    tree, parts = c.root_tree, path.split("/")
    for name in parts[:-1]:
        tree = next(t for n, t, _ in repo.dirtree(tree).dirs if n == name)
    csum = dict(repo.dirtree(tree).files)[parts[-1]]
    value = dict(repo.content(csum).xattrs).get(SELINUX_XATTR)
    return value.rstrip(b"\0").decode() if value else None


def test_derived_image_is_labelled_with_its_own_policy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], sample: Committed
) -> None:
    busybox = shutil.which("busybox")
    if shutil.which("buildah") is None or busybox is None:
        pytest.skip("buildah or busybox (busybox-static) not installed")
    tree = tmp_path / "tree"
    shutil.copytree(sample.tree.path, tree, symlinks=True)
    shutil.copy(busybox, tree / "usr/bin/busybox")
    for name in ("sh", "echo", "mkdir", "printf"):
        (tree / "usr/bin" / name).symlink_to("busybox")
    policy = tree / "usr/etc/selinux"
    (policy / "ocitree/contexts/files").mkdir(parents=True)
    (policy / "ocitree/policy").mkdir()
    (policy / "config").write_text("SELINUX=enforcing\nSELINUXTYPE=ocitree\n")
    (policy / "ocitree/policy/policy.33").write_text("stand-in policy for the test\n")
    (policy / "ocitree/contexts/files/file_contexts").write_text(FILE_CONTEXTS)
    # How the policy says that ostree's /usr/etc is /etc.
    (policy / "ocitree/contexts/files/file_contexts.subs_dist").write_text("/usr/etc /etc\n")
    commit_tree(tree, tmp_path / "repo", sample.ref, mode="bare")
    image = f"oci:{tmp_path / 'img'}"
    r = ocitree(capsys, "encapsulate", "--repo", tmp_path / "repo", sample.ref, f"{image}:v1")
    assert r.code == 0, r.err
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Containerfile").write_text(
        f"FROM {image}:v1\n"
        "RUN echo tool > /usr/bin/newtool && mkdir -p /usr/lib/app && echo d > /usr/lib/app/data"
        " && printf '/usr/lib/app(/.*)?\\tsystem_u:object_r:app_t:s0\\n'"
        " >> /etc/selinux/ocitree/contexts/files/file_contexts\n"
    )
    buildah_build(tmp_path, ctx, f"{image}:derived")
    repo = Repo.create(tmp_path / "device", RepoMode.BARE)
    pulled = pull_layout(tmp_path / "img", "derived", repo)
    assert _label(repo, pulled.commit, "usr/bin/newtool") == "system_u:object_r:bin_t:s0"
    assert _label(repo, pulled.commit, "usr/lib/app/data") == "system_u:object_r:app_t:s0"
    assert _label(repo, pulled.commit, "usr/lib/os-release") == "system_u:object_r:default_t:s0"
    assert _label(repo, pulled.commit, "usr/etc/selinux/config") == "system_u:object_r:etc_t:s0"
    run(["ostree", "fsck", f"--repo={tmp_path / 'device'}"])
    # Without derived layers nothing is relabelled: the base is used as it was committed.
    base = pull_layout(tmp_path / "img", "v1", repo, "base")
    assert _label(repo, base.commit, "usr/lib/os-release") is None
