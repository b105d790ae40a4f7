"""Sample Linux (examples/sample-distro): the repository builds, its metadata lists the
packages and the comps groups, and its newest packages install into an empty root with
the host's rpm, scriptlets and all."""

from __future__ import annotations

import gzip
import hashlib
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from ocitree.run import run
from support.distro import GROUPS, PACKAGES, TOOLS_VERSIONS, build_repo, kver, newest_rpms

pytestmark = pytest.mark.integration

REPO_NS = {"repo": "http://linux.duke.edu/metadata/repo"}
COMMON_NS = {"common": "http://linux.duke.edu/metadata/common"}


def _metadata(repo: Path, kind: str) -> bytes:
    repomd = ET.parse(repo / "repodata" / "repomd.xml").getroot()
    for data in repomd.findall("repo:data", REPO_NS):
        if data.get("type") == kind:
            location = data.find("repo:location", REPO_NS)
            assert location is not None
            raw = (repo / location.attrib["href"]).read_bytes()
            return gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    raise AssertionError(f"repomd.xml has no {kind} metadata")


def test_metadata_lists_packages_and_groups(sample_distro: Path) -> None:
    primary = ET.fromstring(_metadata(sample_distro, "primary"))
    versions: dict[str, list[str]] = {}
    for pkg in primary.findall("common:package", COMMON_NS):
        name = pkg.findtext("common:name", namespaces=COMMON_NS)
        version = pkg.find("common:version", COMMON_NS)
        assert name is not None and version is not None
        versions.setdefault(name, []).append(version.attrib["ver"])
    assert sorted(versions) == sorted(PACKAGES)
    assert sorted(versions["sample-tools"]) == sorted(TOOLS_VERSIONS)
    assert versions["kernel"] == ["6.1.0"]

    comps = ET.fromstring(_metadata(sample_distro, "group_gz"))
    groups = {
        g.findtext("id"): {(r.text, r.get("type")) for r in g.iterfind("packagelist/packagereq")}
        for g in comps.iter("group")
    }
    assert sorted(g for g in groups if g) == sorted(GROUPS)
    assert ("sample-shell", "mandatory") in groups["core"]
    assert ("sample-tools", "default") in groups["core"]
    assert ("sample-agent", "optional") in groups["core"]
    assert groups["agent"] == {("sample-agent", "mandatory")}


def test_build_is_reproducible(sample_distro: Path, tmp_path: Path) -> None:
    again = build_repo(tmp_path / "work", tmp_path / "repo")

    def digests(repo: Path) -> dict[str, str]:
        files = sorted(repo.glob("*.rpm")) + sorted((repo / "repodata").iterdir())
        return {str(f.relative_to(repo)): hashlib.sha256(f.read_bytes()).hexdigest() for f in files}

    assert digests(again) == digests(sample_distro)


@pytest.mark.skipif(os.geteuid() != 0, reason="rpm runs scriptlets in a chroot: needs root")
def test_installs_into_empty_root(sample_distro: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    rpms = newest_rpms(sample_distro)
    assert [p.name for p in rpms if p.name.startswith("sample-tools-")] == [
        f"sample-tools-{max(TOOLS_VERSIONS)}-1.noarch.rpm"
    ]
    db = ["--root", root, "--dbpath", "/usr/share/rpm", "--define", "_db_backend sqlite"]
    run(["rpm", *db, "-Uvh", "--nosignature", *rpms])

    assert (root / "etc/sample/post-ran").read_text().startswith("sample-tools 1.1-1:")
    assert os.readlink(root / "bin") == "usr/bin"
    assert os.readlink(root / "var/run") == "../run"
    assert os.readlink(root / "usr/bin/sh") == "busybox"
    assert os.readlink(root / "etc/os-release") == "../usr/lib/os-release"
    assert "ID=sample\n" in (root / "usr/lib/os-release").read_text()
    assert (root / "etc/shadow").stat().st_mode & 0o7777 == 0
    modules = root / "usr/lib/modules" / kver()
    assert (modules / "vmlinuz").stat().st_size > 4096
    assert (modules / "initramfs.img").is_file()
    assert (root / "var/lib/sample/state").is_file()
    assert (root / "var/lib/sample/cache").is_dir()
    installed = run(["rpm", *db, "-qa", "--qf", "%{NAME}\\n"]).stdout.decode().split()
    assert sorted(installed) == sorted(PACKAGES)
    # The installed shell runs the installed tool.
    out = run(["chroot", root, "/usr/bin/sample-tool"]).stdout.decode()
    assert out == "sample-tool 1.1: hello from Sample Linux\n"
