"""ostree commit → OCI image, checked against the real ostree, umoci and skopeo."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pytest

from integration.conftest import Committed
from ocitree.ostree.repo import Repo, RepoMode
from ocitree.run import run
from support.gentree import commit_tree, generate_tree
from support.images import content_objects, layer_members, manifest, ocitree, pull_layout

pytestmark = pytest.mark.integration


def _encapsulate(
    capsys: pytest.CaptureFixture[str], sample: Committed, dest: str, *extra: str
) -> None:
    r = ocitree(capsys, "encapsulate", "--repo", sample.repo, sample.ref, dest, *extra)
    assert r.code == 0, r.err


@pytest.mark.parametrize(
    ("mode", "compression"),
    [("archive", "gzip"), ("bare", "gzip"), ("bare-user", "gzip"), ("archive", "zstd")],
)
def test_roundtrip_rebuilds_the_same_commit(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    sample: Committed,
    mode: str,
    compression: str,
) -> None:
    repo = tmp_path / "repo"
    commit = commit_tree(sample.tree.path, repo, sample.ref, mode=mode)
    assert commit == sample.commit
    r = ocitree(
        capsys,
        "encapsulate",
        "--repo",
        repo,
        sample.ref,
        f"oci:{tmp_path / 'img'}:v1",
        "--compression",
        compression,
    )
    assert r.code == 0, r.err
    fresh = Repo.create(tmp_path / "fresh", RepoMode.BARE)
    result = pull_layout(tmp_path / "img", "v1", fresh)
    assert result.base_commit == commit
    run(["ostree", "fsck", f"--repo={tmp_path / 'fresh'}"])
    # The merge commit (no derived layers) has exactly the base commit's tree.
    assert fresh.commit(result.commit).root_tree == fresh.commit(commit).root_tree


def test_format_facts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], sample: Committed
) -> None:
    _encapsulate(capsys, sample, f"oci:{tmp_path}:v1")
    m = manifest(tmp_path, "v1")
    # Blobs and the index are readable by anyone (rootless podman, a web server).
    for p in [tmp_path / "index.json", tmp_path / "oci-layout", *tmp_path.glob("blobs/sha256/*")]:
        assert p.stat().st_mode & 0o777 == 0o644, p
    cfg = json.loads((tmp_path / "blobs/sha256" / m["config"]["digest"][7:]).read_bytes())
    labels = cfg["config"]["Labels"]
    assert labels["ostree.commit"] == sample.commit
    assert labels["ostree.bootable"] == "true" and labels["containers.bootc"] == "1"
    assert labels["ostree.linux"] == sample.tree.kver
    assert labels["org.opencontainers.image.version"] == "1"
    assert labels["ostree.final-diffid"] == cfg["rootfs"]["diff_ids"][-1]
    assert m["annotations"] == labels
    assert len(cfg["history"]) == len(m["layers"]) == len(cfg["rootfs"]["diff_ids"])
    assert cfg["history"][0]["created_by"] == "ocitree sample tree"
    assert all(layer["mediaType"].endswith("tar+gzip") for layer in m["layers"])
    assert "annotations" not in m["layers"][0]
    assert all("ostree.components" in layer["annotations"] for layer in m["layers"][1:])

    layer0 = layer_members(tmp_path, m["layers"][0]["digest"])
    names = [x.name for x in layer0]
    assert names[0] in ("./", ".")
    assert names[1:4] == ["sysroot", "sysroot/ostree", "sysroot/ostree/repo"]
    objects = [n for n in names if n.startswith("sysroot/ostree/repo/objects/") and "." in n]
    assert objects[0].endswith(f"{sample.commit[2:]}.commit")
    assert sum(n.endswith(".commit") for n in names) == 1
    assert "etc" in names and "usr/etc" not in names
    config_entry = next(x for x in layer0 if x.name == "sysroot/ostree/repo/config")
    assert config_entry.size == len(b"[core]\nrepo_version=1\nmode=bare-split-xattrs\n")
    assert all(x.mtime == 0 for x in layer0)
    for layer in m["layers"][1:]:
        members = layer_members(tmp_path, layer["digest"])
        previous = None
        for x in members:
            assert not x.name.startswith("./sysroot")
            assert not x.name.endswith((".dirtree", ".dirmeta", ".commit"))
            if x.name.endswith(".file"):
                assert previous is not None and previous.name == x.name + "-xattrs-link"
                assert x.mode <= 0o7777
            if x.islnk() and not x.name.startswith("sysroot/"):
                assert x.linkname.startswith("sysroot/ostree/repo/objects/")
                assert x.linkname.endswith(".file")
            previous = x


def test_every_object_in_exactly_one_layer_and_layer_bound(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], sample: Committed
) -> None:
    _encapsulate(capsys, sample, f"oci:{tmp_path}:v1", "--max-layers", "5")
    m = manifest(tmp_path, "v1")
    assert len(m["layers"]) <= 1 + 5
    comps = [layer["annotations"]["ostree.components"] for layer in m["layers"][1:]]
    assert comps.count("") == 1 and comps[-1] == ""
    seen: Counter[str] = Counter()
    for layer in m["layers"]:
        seen.update(content_objects(layer_members(tmp_path, layer["digest"])))
    assert all(n == 1 for n in seen.values())
    listing = run(["ostree", f"--repo={sample.repo}", "ls", "-R", "-C", sample.ref]).stdout.decode()
    expected = {
        line.split()[4]
        for line in listing.splitlines()
        if line and line[0] in "-l" and len(line.split()) >= 6
    }
    assert set(seen) == expected


def test_same_commit_gives_identical_digests(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], sample: Committed
) -> None:
    _encapsulate(capsys, sample, f"oci:{tmp_path / 'a'}:v1")
    os.utime(sample.repo / "config")  # a later moment on the machine changes nothing
    _encapsulate(capsys, sample, f"oci:{tmp_path / 'b' / 'nested'}:v1", "--compression-level", "6")
    a, b = manifest(tmp_path / "a", "v1"), manifest(tmp_path / "b" / "nested", "v1")
    assert a == b
    assert sorted(os.listdir(tmp_path / "a/blobs/sha256")) == sorted(
        os.listdir(tmp_path / "b/nested/blobs/sha256")
    )


def test_previous_image_keeps_layers_of_unchanged_components(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], sample: Committed
) -> None:
    _encapsulate(capsys, sample, f"oci:{tmp_path / 'img'}:v1")
    v2 = generate_tree(
        tmp_path / "tree2", size=6 << 20, components=12, seed=7, version=2, changed=0.2
    )
    assert v2.changed_components
    repo = tmp_path / "repo"
    commit_tree(v2.path, repo, "os", mode="archive")
    r = ocitree(
        capsys,
        "encapsulate",
        "--repo",
        repo,
        "os",
        f"oci:{tmp_path / 'img'}:v2",
        "--previous",
        f"oci:{tmp_path / 'img'}:v1",
    )
    assert r.code == 0, r.err
    one, two = manifest(tmp_path / "img", "v1"), manifest(tmp_path / "img", "v2")
    sets1 = [layer["annotations"]["ostree.components"] for layer in one["layers"][1:]]
    sets2 = [layer["annotations"]["ostree.components"] for layer in two["layers"][1:]]
    assert sets1 == sets2
    changed = [
        i
        for i, (a, b) in enumerate(zip(one["layers"], two["layers"], strict=True))
        if a["digest"] != b["digest"]
    ]
    touched = set(v2.changed_components) | {"os-release"}
    # The commit layer, plus the layers holding a changed component (or os-release).
    assert 0 in changed
    assert len(changed) <= 1 + len(touched)
    for i in changed[1:]:
        names = set(sets1[i - 1].split(","))
        assert names & set(v2.changed_components) or any(n.startswith("unpackaged:") for n in names)


def test_oci_archive_destination(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], sample: Committed
) -> None:
    dest = tmp_path / "os.ociarchive"
    _encapsulate(capsys, sample, f"oci-archive:{dest}:v1")
    assert dest.is_file() and [p.name for p in tmp_path.iterdir()] == ["os.ociarchive"]
    r = ocitree(capsys, "inspect", "--json", f"oci-archive:{dest}:v1")
    assert r.code == 0, r.err
    info = json.loads(r.out)
    assert info["commit"] == sample.commit and info["bootable"] is True
    out = run(["skopeo", "inspect", f"oci-archive:{dest}:v1"]).stdout
    assert json.loads(out)["Labels"]["ostree.commit"] == sample.commit


def test_inspect_shows_commit_and_layers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], sample: Committed
) -> None:
    _encapsulate(capsys, sample, f"oci:{tmp_path}:v1")
    r = ocitree(capsys, "inspect", f"oci:{tmp_path}:v1")
    assert r.code == 0, r.err
    assert sample.commit in r.out and "Bootable:     yes" in r.out and "ostree commit" in r.out
    r = ocitree(capsys, "inspect", "--json", f"oci:{tmp_path}:v1")
    info = json.loads(r.out)
    assert info["version"] == "1"
    assert info["layers"][0]["kind"] == "ostree commit"
    assert {c for layer in info["layers"][1:] for c in layer["components"]} >= set(
        sample.tree.components
    )


def test_plan_for_a_commit(capsys: pytest.CaptureFixture[str], sample: Committed) -> None:
    r = ocitree(capsys, "plan", "--repo", sample.repo, sample.ref, "--json", "--max-layers", "6")
    assert r.code == 0, r.err
    plan = json.loads(r.out)
    assert len(plan["layers"]) == 6 and plan["layers"][-1]["components"] == []
    assert plan["ideal_download"] <= plan["expected_download"] <= plan["single_layer_download"]
