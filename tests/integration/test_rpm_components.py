"""Components from a real rpmdb: packages built with rpmbuild, installed with rpm, committed
with ostree, encapsulated, and each package's files found in its own chunk layer."""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
import tarfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ocitree.cli.main import main
from ocitree.container.encapsulate import COMPONENTS_ANNOTATION, read_commit_content
from ocitree.ostree.repo import Repo
from support.gentree import commit_tree
from support.rpms import build_rpm, changelog_date, install_into_tree

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        any(shutil.which(t) is None for t in ("rpmbuild", "rpm", "ostree")),
        reason="rpmbuild, rpm or ostree not installed (Debian packages rpm, ostree)",
    ),
    pytest.mark.skipif(
        importlib.util.find_spec("rpm") is None,
        reason="the rpm Python module is missing (Debian package python3-rpm)",
    ),
]

REF = "test/rpm"
TAG = "t"
PACKAGES = {"alpha", "beta", "gamma"}


def _date(y: int, m: int, d: int) -> datetime:
    return datetime(y, m, d, tzinfo=UTC)


# alpha: five entries in the year before its newest one (the newest date of the rpmdb),
# one more long before that must not count.
ALPHA_DATES = [
    _date(2023, 11, 20),
    _date(2023, 8, 14),
    _date(2023, 5, 8),
    _date(2023, 2, 6),
    _date(2022, 12, 5),
    _date(2021, 6, 7),
]
ALPHA_FREQUENCY = 5
BETA_DATES = [_date(2018, 3, 5)]
COMMIT_TIME = int(_date(2023, 11, 21).timestamp())

ALPHA_BIN = b"#!/bin/sh\necho alpha\n"
ALPHA_CONF = b"# alpha configuration\nlevel = 3\n"
BETA_LIB = b"\x7fnot really an ELF library, beta\n" * 8
GAMMA_DATA = b"gamma shared data\n" * 4
EXTRA_DATA = bytes(range(256)) * 3
DELTA_PLUGIN = b"delta plugin, installed through the /lib symlink\n"

_TOP_LINKS = {"bin": "usr/bin", "sbin": "usr/sbin", "lib": "usr/lib", "lib64": "usr/lib64"}


@dataclass(frozen=True)
class Rpms:
    alpha: Path
    beta: Path
    gamma: Path
    delta: Path


@pytest.fixture(scope="module")
def rpms(tmp_path_factory: pytest.TempPathFactory) -> Rpms:
    work = tmp_path_factory.mktemp("rpmbuild")
    alpha = build_rpm(
        work,
        "alpha",
        "1.0",
        {"/usr/bin/alpha": ALPHA_BIN, "/etc/alpha.conf": ALPHA_CONF},
        changelog=[(changelog_date(d), f"alpha change of {d:%Y-%m-%d}") for d in ALPHA_DATES],
    )
    beta = build_rpm(
        work,
        "beta",
        "2.1",
        {"/usr/lib/beta/lib.so": BETA_LIB},
        changelog=[(changelog_date(d), "initial beta") for d in BETA_DATES],
        requires=["alpha"],
        release="3",
    )
    gamma = build_rpm(work, "gamma", "0.1", {"/usr/share/gamma/data.txt": GAMMA_DATA})
    delta = build_rpm(
        work,
        "delta",
        "1.0",
        {"/lib/delta/plugin.so": DELTA_PLUGIN},
        changelog=[(changelog_date(_date(2019, 1, 7)), "initial delta")],
    )
    return Rpms(alpha, beta, gamma, delta)


def make_tree(root: Path, packages: list[Path], dbpath: str) -> Path:
    """An ostree-style root: toplevel symlinks, os-release, the packages, one unpackaged file."""
    tree = root / "tree"
    for d in ("usr/bin", "usr/sbin", "usr/lib", "usr/lib64", "usr/etc", "var", "sysroot"):
        (tree / d).mkdir(parents=True)
    for link, target in _TOP_LINKS.items():
        (tree / link).symlink_to(target)
    (tree / "usr/lib/os-release").write_text('NAME="rpm test"\nID=rpmtest\nVERSION_ID=1\n')
    install_into_tree(tree, packages, dbpath=dbpath)
    extra = tree / "usr/lib/extra/data.bin"
    extra.parent.mkdir(parents=True)
    extra.write_bytes(EXTRA_DATA)
    return tree


def _members(layer: Path) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(layer, "r:*") as tar:
        return {m.name.removeprefix("./"): m for m in tar.getmembers()}


def _read_member(layer: Path, name: str) -> bytes:
    with tarfile.open(layer, "r:*") as tar:
        f = tar.extractfile(name)
        assert f is not None
        return f.read()


def _manifest(layout: Path, tag: str) -> dict[str, object]:
    index = json.loads((layout / "index.json").read_text())
    [desc] = [
        m
        for m in index["manifests"]
        if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag
    ]
    digest = desc["digest"].removeprefix("sha256:")
    manifest: dict[str, object] = json.loads((layout / "blobs/sha256" / digest).read_bytes())
    return manifest


def _chunk_layers(layout: Path, manifest: dict[str, object]) -> list[tuple[list[str], Path]]:
    layers = manifest["layers"]
    assert isinstance(layers, list)
    out = []
    for layer in layers[1:]:
        value = layer["annotations"][COMPONENTS_ANNOTATION]
        path = layout / "blobs/sha256" / layer["digest"].removeprefix("sha256:")
        out.append(([c for c in value.split(",") if c], path))
    return out


@pytest.fixture(scope="module")
def share_rpm_repo(rpms: Rpms, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An archive repo whose commit has alpha, beta, gamma and an rpmdb in usr/share/rpm."""
    root = tmp_path_factory.mktemp("share-rpm")
    tree = make_tree(root, [rpms.alpha, rpms.beta, rpms.gamma], "/usr/share/rpm")
    assert (tree / "usr/share/rpm/rpmdb.sqlite").is_file()
    assert (tree / "usr/etc/alpha.conf").read_bytes() == ALPHA_CONF
    assert not (tree / "etc").exists()
    repo = root / "repo"
    commit_tree(tree, repo, REF, mode="archive", timestamp=COMMIT_TIME)
    return repo


def test_tree_layout_after_install(rpms: Rpms, tmp_path: Path) -> None:
    # etc/ merges into an existing usr/etc; the rpmdb is sqlite at the requested path.
    tree = tmp_path / "tree"
    (tree / "usr/etc").mkdir(parents=True)
    (tree / "usr/etc/passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    install_into_tree(tree, [rpms.alpha], dbpath="/usr/share/rpm")
    assert sorted(p.name for p in (tree / "usr/etc").iterdir()) == ["alpha.conf", "passwd"]
    assert (tree / "usr/bin/alpha").read_bytes() == ALPHA_BIN
    assert (tree / "usr/bin/alpha").stat().st_mode & 0o777 == 0o755
    assert (tree / "usr/share/rpm/rpmdb.sqlite").is_file()
    assert not (tree / "etc").exists()


def test_encapsulate_groups_files_by_rpm(share_rpm_repo: Path, tmp_path: Path) -> None:
    layout = tmp_path / "oci"
    rc = main(["encapsulate", "--repo", str(share_rpm_repo), REF, f"oci:{layout}:{TAG}"])
    assert rc == 0
    manifest = _manifest(layout, TAG)
    layers = _chunk_layers(layout, manifest)
    names = [n for comps, _ in layers for n in comps]
    assert len(names) == len(set(names)), "a component is in two layers"
    packaged = {n for n in names if not n.startswith("unpackaged:") and n != "initramfs"}
    assert packaged == PACKAGES
    assert "unpackaged:/usr/lib/extra" in names
    for comps, _ in layers:
        assert comps == sorted(comps)

    def layer_of(component: str) -> Path:
        [path] = [p for comps, p in layers if component in comps]
        return path

    # Each file and its object are in the layer of the component that owns it.
    expected = {
        "etc/alpha.conf": ("alpha", ALPHA_CONF),
        "usr/bin/alpha": ("alpha", ALPHA_BIN),
        "usr/lib/beta/lib.so": ("beta", BETA_LIB),
        "usr/share/gamma/data.txt": ("gamma", GAMMA_DATA),
        "usr/lib/extra/data.bin": ("unpackaged:/usr/lib/extra", EXTRA_DATA),
    }
    for path, (component, data) in expected.items():
        layer = layer_of(component)
        members = _members(layer)
        assert path in members, f"{path} is not in the layer of {component}"
        link = members[path]
        assert link.islnk(), f"{path} is not a hardlink to its object"
        target = link.linkname.removeprefix("./")
        assert target.startswith("sysroot/ostree/repo/objects/")
        assert target in members, f"the object of {path} is not in the layer of {component}"
        assert _read_member(layer, target) == data
        for comps, other in layers:
            if component not in comps:
                assert path not in _members(other), f"{path} is also in the layer of {comps}"

    # The rpmdb's own files are unpackaged content.
    db_layers = [comps for comps, p in layers if "usr/share/rpm/rpmdb.sqlite" in _members(p)]
    assert len(db_layers) == 1
    assert "unpackaged:/usr/share/rpm" in db_layers[0]


def test_change_frequency_from_changelog(share_rpm_repo: Path) -> None:
    content = read_commit_content(Repo(share_rpm_repo), REF)
    comps = content.ownership.components
    assert comps["alpha"].change_frequency == ALPHA_FREQUENCY
    assert comps["beta"].change_frequency == 0
    assert comps["gamma"].change_frequency == 0  # no changelog at all
    owner = content.ownership.owner
    assert owner[content.files["usr/etc/alpha.conf"]] == "alpha"
    assert owner[content.files["usr/bin/alpha"]] == "alpha"
    assert owner[content.files["usr/lib/beta/lib.so"]] == "beta"
    assert owner[content.files["usr/share/gamma/data.txt"]] == "gamma"
    assert owner[content.files["usr/lib/extra/data.bin"]] == "unpackaged:/usr/lib/extra"
    assert owner[content.files["usr/share/rpm/rpmdb.sqlite"]].startswith("unpackaged:")
    assert comps["alpha"].size == len(ALPHA_BIN) + len(ALPHA_CONF)
    assert comps["beta"].size == len(BETA_LIB)


def test_plan_json_reflects_change_frequency(
    share_rpm_repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert main(["plan", "--repo", str(share_rpm_repo), REF, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    content = read_commit_content(Repo(share_rpm_repo), REF)
    comps = content.ownership.components
    assert out["components"] == len(comps)
    assert out["total_size"] == sum(c.size for c in comps.values())
    planned = [n for layer in out["layers"] for n in layer["components"]]
    assert sorted(planned) == sorted(comps)
    prob = {"alpha": ALPHA_FREQUENCY / 52, "beta": 0.0, "gamma": 0.0}
    for layer in out["layers"]:
        p_none = 1.0
        for name in layer["components"]:
            # unpackaged content is assumed to change monthly
            p_none *= 1.0 - prob.get(name, 12 / 52)
        assert math.isclose(layer["change_probability"], 1.0 - p_none, abs_tol=1e-9)
    [alpha_layer] = [layer for layer in out["layers"] if "alpha" in layer["components"]]
    assert alpha_layer["change_probability"] >= ALPHA_FREQUENCY / 52 - 1e-9
    # The stable packages never cost a download: they share no layer with volatile content.
    for layer in out["layers"]:
        if "beta" in layer["components"] or "gamma" in layer["components"]:
            assert layer["change_probability"] == 0.0


def test_rpmdb_in_usr_lib_sysimage(rpms: Rpms, tmp_path: Path) -> None:
    # delta's file is recorded as /lib/delta/plugin.so (installed through the lib -> usr/lib
    # symlink); the commit has it at usr/lib/delta/plugin.so.
    tree = make_tree(
        tmp_path, [rpms.alpha, rpms.beta, rpms.gamma, rpms.delta], "/usr/lib/sysimage/rpm"
    )
    assert (tree / "usr/lib/sysimage/rpm/rpmdb.sqlite").is_file()
    assert not (tree / "usr/share/rpm").exists()
    assert (tree / "usr/lib/delta/plugin.so").read_bytes() == DELTA_PLUGIN
    repo = tmp_path / "repo"
    # Commit time 0: the year counts back from the newest changelog entry of the rpmdb.
    commit_tree(tree, repo, REF, mode="archive")
    content = read_commit_content(Repo(repo), REF)
    comps = content.ownership.components
    owner = content.ownership.owner
    packaged = {n for n in comps if not n.startswith("unpackaged:") and n != "initramfs"}
    assert packaged == PACKAGES | {"delta"}
    assert comps["alpha"].change_frequency == ALPHA_FREQUENCY
    assert comps["beta"].change_frequency == 0
    assert comps["delta"].change_frequency == 0
    assert owner[content.files["usr/etc/alpha.conf"]] == "alpha"
    assert owner[content.files["usr/lib/delta/plugin.so"]] == "delta"
    assert owner[content.files["usr/lib/extra/data.bin"]] == "unpackaged:/usr/lib/extra"
    assert owner[content.files["usr/lib/sysimage/rpm/rpmdb.sqlite"]].startswith("unpackaged:")

    layout = tmp_path / "oci"
    assert main(["encapsulate", "--repo", str(repo), REF, f"oci:{layout}:{TAG}"]) == 0
    layers = _chunk_layers(layout, _manifest(layout, TAG))
    names = {n for comps_, _ in layers for n in comps_}
    assert PACKAGES | {"delta", "unpackaged:/usr/lib/extra"} <= names
    [delta_layer] = [p for comps_, p in layers if "delta" in comps_]
    assert "usr/lib/delta/plugin.so" in _members(delta_layer)
