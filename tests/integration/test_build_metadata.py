"""What a build keeps in the commit where rpm-ostree keeps it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ocitree.build.packages import pkglist_variant
from ocitree.ostree.repo import GLib
from support.rpms import build_rpm, install_into_tree

pytestmark = pytest.mark.integration


def test_package_list_variant_lists_the_rpmdb(tmp_path: Path) -> None:
    if shutil.which("rpmbuild") is None:
        pytest.skip("rpmbuild not installed")
    rpms = [
        build_rpm(tmp_path / "build", "alpha", "1.2", {"/usr/bin/alpha": b"a"}),
        build_rpm(tmp_path / "build", "beta", "3.4", {"/usr/lib/beta": b"b"}, release="5"),
    ]
    root = tmp_path / "root"
    root.mkdir()
    install_into_tree(root, rpms)
    v = GLib.Variant.parse(None, pkglist_variant(root), None, None)
    # rpm-ostree's type: the epoch is a string ("0" when unset), sorted by name
    assert v.get_type_string() == "a(sssss)"
    assert [tuple(x) for x in v.unpack()] == [
        ("alpha", "0", "1.2", "1", "noarch"),
        ("beta", "0", "3.4", "5", "noarch"),
    ]
