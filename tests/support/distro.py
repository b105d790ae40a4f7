"""Sample Linux, the rpm-md repository ``ocitree compose`` composes, for tests.

The packages and their spec files live in ``examples/sample-distro`` (see its README);
this module loads its ``build.py`` (the directory name has a dash, so not as a package)
and offers the session-scoped fixture ``sample_distro``: the repository's directory,
built once per test session. ``tests/conftest.py`` registers this module as a plugin.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path
from types import ModuleType

import pytest

DISTRO_DIR = Path(__file__).resolve().parents[2] / "examples" / "sample-distro"
TOOLS = ("rpmbuild", "rpm", "createrepo_c")


def _load() -> ModuleType:
    name = "ocitree_sample_distro_build"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, DISTRO_DIR / "build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


build = _load()
build_repo = build.build_repo
newest_rpms = build.newest_rpms
kver = build.kver
PACKAGES: tuple[str, ...] = build.PACKAGES
GROUPS: tuple[str, ...] = build.GROUPS
TOOLS_VERSIONS: tuple[str, ...] = build.TOOLS_VERSIONS


def missing_tools() -> list[str]:
    """Tools (or the static busybox) the build needs that this machine lacks."""
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if not build.BUSYBOX.is_file():
        missing.append(f"{build.BUSYBOX} (busybox-static)")
    return missing


@pytest.fixture(scope="session")
def sample_distro(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Sample Linux rpm-md repository (with comps groups), built once per session."""
    missing = missing_tools()
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed")
    base = tmp_path_factory.mktemp("sample-distro")
    repo: Path = build_repo(base / "work", base / "repo")
    return repo
