"""Fixtures for integration tests: a generated OS tree committed with the ostree CLI."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from support.gentree import TreeInfo, commit_tree, generate_tree

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
