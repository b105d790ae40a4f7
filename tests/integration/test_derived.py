"""Images built FROM an ocitree image by buildah import with their derived layers applied."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from integration.conftest import Committed
from integration.test_interop import _snapshot
from ocitree.container.store import pull
from ocitree.device.update import open_source
from ocitree.oci.reference import OstreeImageReference
from ocitree.oci.skopeo import RegistryOptions
from ocitree.ostree.repo import Repo, RepoMode
from ocitree.run import run
from support.gentree import commit_tree
from support.images import buildah_build, ocitree, pull_layout

pytestmark = pytest.mark.integration

CONTAINERFILE = """\
FROM {base}
RUN echo added > /usr/share/added.txt \\
 && echo changed >> /usr/lib/os-release \\
 && rm -f /usr/etc/passwd /etc/group \\
 && echo motd > /etc/motd \\
 && rm -rf /usr/lib/ocitree-unpackaged && mkdir /usr/lib/ocitree-unpackaged \\
 && echo fresh > /usr/lib/ocitree-unpackaged/only-this \\
 && mkdir -p /var/lib/app /run/junk && echo x > /run/junk/f && echo y > /tmp/t \\
 && ln -s ../share/added.txt /usr/lib/added-link
"""


def _build_derived(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], sample: Committed, driver: str
) -> Path:
    busybox = shutil.which("busybox")
    if shutil.which("buildah") is None or busybox is None or shutil.which("umoci") is None:
        pytest.skip("buildah, umoci or busybox (busybox-static) not installed")
    tree = tmp_path / "tree"
    shutil.copytree(sample.tree.path, tree, symlinks=True)
    shutil.copy(busybox, tree / "usr/bin/busybox")
    for name in ("sh", "echo", "rm", "mkdir", "ln"):
        (tree / "usr/bin" / name).symlink_to("busybox")
    commit_tree(tree, tmp_path / "repo", sample.ref, mode="bare")
    r = ocitree(
        capsys, "encapsulate", "--repo", tmp_path / "repo", sample.ref, f"oci:{tmp_path / 'img'}:v1"
    )
    assert r.code == 0, r.err
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Containerfile").write_text(CONTAINERFILE.format(base=f"oci:{tmp_path / 'img'}:v1"))
    buildah_build(tmp_path, ctx, f"oci:{tmp_path / 'img'}:derived", driver=driver)
    return tmp_path / "img"


@pytest.mark.parametrize("driver", ["vfs", "overlay"])
def test_derived_image_imports_like_umoci_unpacks_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], sample: Committed, driver: str
) -> None:
    try:
        layout = _build_derived(tmp_path, capsys, sample, driver)
    except Exception as e:  # the overlay driver needs kernel support this host may lack
        if driver == "overlay" and "overlay" in str(e):
            pytest.skip(f"overlay storage unavailable: {e}")
        raise
    repo = Repo.create(tmp_path / "device-repo", RepoMode.BARE)
    pulled = pull_layout(layout, "derived", repo, "derived")
    assert pulled.base_commit is not None and pulled.commit != pulled.base_commit
    run(["ostree", "fsck", f"--repo={tmp_path / 'device-repo'}"])
    run(
        [
            "ostree",
            f"--repo={tmp_path / 'device-repo'}",
            "checkout",
            pulled.commit,
            tmp_path / "checkout",
        ]
    )
    run(["umoci", "unpack", "--image", f"{layout}:derived", tmp_path / "bundle"])
    checkout = tmp_path / "checkout"
    (checkout / "usr/etc").rename(checkout / "etc")
    skip = ("sysroot/ostree", "var/tmp", "run/", "tmp/")
    image = _snapshot(tmp_path / "bundle/rootfs", skip=skip)
    ours = _snapshot(checkout, skip=skip)
    assert sorted(image.keys() - ours.keys()) == []
    assert sorted(ours.keys() - image.keys()) == []
    for path, facts in image.items():
        assert ours[path] == facts, path
    assert (checkout / "usr/share/added.txt").read_text() == "added\n"
    assert (checkout / "etc/motd").read_text() == "motd\n"
    assert not (checkout / "etc/group").exists()
    assert sorted(p.name for p in (checkout / "usr/lib/ocitree-unpackaged").iterdir()) == [
        "only-this"
    ]
    assert (checkout / "var/lib/app").is_dir()
    assert list((checkout / "run").iterdir()) == [] and list((checkout / "tmp").iterdir()) == []
    # The unchanged base layers were not fetched again for the derived image.
    again = pull_layout(layout, "derived", repo, "derived")
    assert again.fetched_bytes == 0 and again.commit == pulled.commit


def test_derived_image_from_containers_storage_through_the_proxy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], sample: Committed
) -> None:
    layout = _build_derived(tmp_path, capsys, sample, "vfs")
    repo = Repo.create(tmp_path / "device-repo", RepoMode.BARE)
    from_layout = pull_layout(layout, "derived", repo, "derived")
    storage = f"containers-storage:[vfs@{tmp_path / 'storage'}+{tmp_path / 'run'}]"
    ref = OstreeImageReference.parse(f"ostree-unverified-image:{storage}localhost/derived:1")
    with open_source(ref, RegistryOptions()) as source:
        from_storage = pull(repo, source, str(ref.image))
    assert repo.commit(from_storage.commit).root_tree == repo.commit(from_layout.commit).root_tree
    # An oci-archive goes through the proxy too.
    run(["skopeo", "copy", f"oci:{layout}:derived", f"oci-archive:{tmp_path / 'd.tar'}"])
    ref = OstreeImageReference.parse(f"ostree-unverified-image:oci-archive:{tmp_path / 'd.tar'}")
    with open_source(ref, RegistryOptions()) as source:
        from_archive = pull(repo, source, str(ref.image))
    assert from_archive.commit == from_layout.commit
