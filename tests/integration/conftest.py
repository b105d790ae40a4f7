"""Fixtures for integration tests: a generated OS tree committed with the ostree CLI."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from support.gentree import TreeInfo, commit_tree, generate_tree
from support.sysroots import install_commit, make_sysroot

REF = "sample/x86_64/edge"


@dataclass(frozen=True)
class Committed:
    tree: TreeInfo
    repo: Path
    ref: str
    commit: str


def _require(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed")


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Committed:
    """A small generated OS tree (v1) committed to an archive-mode repo."""
    _require("ostree")
    base = tmp_path_factory.mktemp("sample")
    info = generate_tree(base / "tree", size=6 << 20, components=12, seed=7)
    commit = commit_tree(info.path, base / "repo", REF, mode="archive")
    return Committed(info, base / "repo", REF, commit)


OSNAME = "sample"


@dataclass(frozen=True)
class Images:
    v1: str  # oci:DIR:v1
    v2: str
    repo: Path  # holds the v2 commit
    v2_changed: tuple[str, ...]


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory, sample: Committed) -> Images:
    base = tmp_path_factory.mktemp("images")
    from ocitree.cli.main import main

    assert (
        main(
            ["-q", "encapsulate", "--repo", str(sample.repo), sample.ref, f"oci:{base / 'oci'}:v1"]
        )
        == 0
    )
    v2 = generate_tree(base / "tree2", size=6 << 20, components=12, seed=7, version=2, changed=0.2)
    commit_tree(v2.path, base / "repo2", sample.ref)
    assert (
        main(
            [
                "-q",
                "encapsulate",
                "--repo",
                str(base / "repo2"),
                sample.ref,
                f"oci:{base / 'oci'}:v2",
                "--previous",
                f"oci:{base / 'oci'}:v1",
            ]
        )
        == 0
    )
    return Images(
        f"oci:{base / 'oci'}:v1", f"oci:{base / 'oci'}:v2", base / "repo2", v2.changed_components
    )


@pytest.fixture
def device(tmp_path: Path, sample: Committed) -> Iterator[Path]:
    """A device installed from the plain ostree commit v1, as the seed's ISO would."""
    with make_sysroot(tmp_path, OSNAME) as sysroot:
        install_commit(
            sysroot, sample.repo, sample.commit, osname=OSNAME, kargs=["console=ttyS0", "quiet"]
        )
        yield sysroot
