"""``ocitree build --blueprint``: an osbuild blueprint as a layer on an encapsulated base."""

from __future__ import annotations

import importlib.util
import os
import shutil
import stat
import tomllib
from pathlib import Path

import pytest

from integration.conftest import Committed
from ocitree.ostree.repo import Repo, RepoMode
from ocitree.run import run
from support.gentree import commit_tree
from support.images import manifest, ocitree, pull_layout
from support.rpms import build_rpm, install_into_tree

TOOLS = ("rpmbuild", "rpm", "createrepo_c")

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        any(shutil.which(t) is None for t in TOOLS),
        reason=f"one of {', '.join(TOOLS)} is missing (Debian packages rpm, createrepo-c)",
    ),
    pytest.mark.skipif(
        importlib.util.find_spec("rpm") is None or importlib.util.find_spec("solv") is None,
        reason="the rpm Python module (python3-rpm) or the solv binding (PyPI solv) is missing",
    ),
]

DB = "/usr/share/rpm"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOcitreeBlueprintKey admin@edge"
UNIT = (
    "[Unit]\nDescription=demo\n[Service]\nExecStart=/usr/bin/true\n"
    "[Install]\nWantedBy=multi-user.target\n"
)

BLUEPRINT = f'''\
name = "edge-layer"
description = "the demo service, its configuration and an admin"
version = "0.0.1"

[[packages]]
name = "hello"
version = "1.0"

[customizations]
hostname = "edge-01"

[customizations.kernel]
append = "nosmt=force console=ttyS0,115200"

[customizations.services]
enabled = ["demo"]

[[customizations.group]]
name = "widget"
gid = 1130

[[customizations.user]]
name = "admin"
description = "Edge admin"
key = "{KEY}"
groups = ["widget", "wheel"]
uid = 1200

[[customizations.directories]]
path = "/etc/demo.d"
mode = "0750"
user = "admin"
group = "widget"

[[customizations.files]]
path = "/etc/demo.d/demo.conf"
mode = "0640"
user = "admin"
group = "widget"
data = """
greeting = hello
"""
'''


@pytest.fixture(scope="module")
def base_image(tmp_path_factory: pytest.TempPathFactory, sample: Committed) -> Path:
    """The sample OS with a unit file and an rpmdb (one package), encapsulated."""
    base = tmp_path_factory.mktemp("blueprint-base")
    tree = base / "tree"
    shutil.copytree(sample.tree.path, tree, symlinks=True)
    units = tree / "usr/lib/systemd/system"
    units.mkdir(parents=True)
    (units / "demo.service").write_text(UNIT)
    base_rpm = build_rpm(base / "rpms", "base", "1", {"/usr/share/base/base.txt": b"base\n"})
    install_into_tree(tree, [base_rpm], dbpath=DB)
    commit_tree(tree, base / "repo", sample.ref, mode="bare")
    from ocitree.cli.main import main

    img = f"oci:{base / 'img'}:v1"
    assert main(["-q", "encapsulate", "--repo", str(base / "repo"), sample.ref, img]) == 0
    return base / "img"


@pytest.fixture(scope="module")
def rpm_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local rpm-md repository: hello 1.0 (needs world) and 2.0, world."""
    work = tmp_path_factory.mktemp("blueprint-rpms")
    repo = work / "repo"
    repo.mkdir()
    for name, version, files, requires in (
        ("hello", "1.0", {"/usr/bin/hello": b"hello 1\n"}, ["world"]),
        ("hello", "2.0", {"/usr/bin/hello": b"hello 2\n"}, ["world"]),
        ("world", "1.0", {"/usr/share/world/world.txt": b"world\n"}, []),
    ):
        rpm_file = build_rpm(work / "build", name, version, files, requires=requires)
        shutil.copy(rpm_file, repo / rpm_file.name)
    run(["createrepo_c", "--quiet", repo])
    return repo


def _rpmdb_names(tree: Path) -> set[str]:
    import rpm

    rpm.addMacro("_dbpath", DB)
    try:
        ts = rpm.TransactionSet(str(tree))
        names = {f"{h[rpm.RPMTAG_NAME]}-{h[rpm.RPMTAG_VERSION]}" for h in ts.dbMatch()}
        ts.closeDB()
    finally:
        rpm.delMacro("_dbpath")
    return names


def _owner(path: Path) -> tuple[int, int, int]:
    st = path.lstat()
    return st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)


def test_blueprint_build_applies_every_customization(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], base_image: Path, rpm_repo: Path
) -> None:
    layer = tmp_path / "layer.toml"
    layer.write_text(BLUEPRINT)
    out = tmp_path / "out"
    r = ocitree(
        capsys,
        "build",
        "--blueprint",
        layer,
        "--from",
        f"oci:{base_image}:v1",
        "--repo",
        rpm_repo,
        "-t",
        f"oci:{out}:built",
        "--cache-dir",
        tmp_path / "cache",
    )
    assert r.code == 0, r.err
    assert "lint:" not in r.err  # the home under /var is declared in tmpfiles.d
    # Unchanged base layers are byte-identical.
    built, base = manifest(out, "built"), manifest(base_image, "v1")
    base_digests = {layer["digest"] for layer in base["layers"][1:]}
    kept = [layer for layer in built["layers"][1:] if layer["digest"] in base_digests]
    assert len(kept) >= len(base["layers"]) - 3
    # What a device gets.
    repo = Repo.create(tmp_path / "device", RepoMode.BARE)
    pulled = pull_layout(out, "built", repo)
    co = tmp_path / "co"
    run(["ostree", f"--repo={tmp_path / 'device'}", "checkout", pulled.commit, co])
    etc = co / "usr/etc"
    assert not (co / "etc").exists()
    # packages: the exact version asked for, and its dependency, in the image's rpmdb
    assert (co / "usr/bin/hello").read_text() == "hello 1\n"
    assert (co / "usr/share/world/world.txt").exists()
    assert {"base-1", "hello-1.0", "world-1.0"} <= _rpmdb_names(co)
    # the service
    link = etc / "systemd/system/multi-user.target.wants/demo.service"
    assert link.is_symlink() and os.readlink(link) == "/usr/lib/systemd/system/demo.service"
    # the group and the user: a private group, member of widget and wheel, a locked
    # password, a home under /var/home with the key
    group = (etc / "group").read_text().splitlines()
    assert {"widget:x:1130:admin", "wheel:x:10:admin", "admin:x:1200:"} <= set(group)
    passwd = (etc / "passwd").read_text().splitlines()
    assert any(ln.startswith("admin:x:1200:1200:Edge admin:/var/home/admin:") for ln in passwd)
    assert "admin:!:" in (etc / "shadow").read_text()
    home = co / "var/home/admin"
    assert _owner(home) == (1200, 1200, 0o700)
    assert _owner(home / ".ssh") == (1200, 1200, 0o700)
    keys = home / ".ssh/authorized_keys"
    assert keys.read_text() == KEY + "\n" and _owner(keys) == (1200, 1200, 0o600)
    tmpfiles = (co / "usr/lib/tmpfiles.d/ocitree-blueprint.conf").read_text().splitlines()
    assert "d /var/home/admin 0700 1200 1200 -" in tmpfiles
    # the directory and the file, owned by the names the blueprint added
    assert _owner(etc / "demo.d") == (1200, 1130, 0o750)
    conf = etc / "demo.d/demo.conf"
    assert conf.read_text() == "greeting = hello\n" and _owner(conf) == (1200, 1130, 0o640)
    # kernel arguments where bootc reads them; the host name
    kargs = co / "usr/lib/bootc/kargs.d/50-ocitree-blueprint.toml"
    assert tomllib.loads(kargs.read_text())["kargs"] == ["nosmt=force", "console=ttyS0,115200"]
    assert (etc / "hostname").read_text() == "edge-01\n"


def test_blueprint_errors_are_reported_before_anything_is_built(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], base_image: Path
) -> None:
    layer = tmp_path / "layer.toml"
    layer.write_text(
        'name = "bad"\n'
        "[customizations]\n"
        "hostname = 7\n"
        "[[customizations.files]]\n"
        'path = "/var/lib/x"\n'
        'mode = "0999"\n'
    )
    dest = f"oci:{tmp_path / 'o'}:x"
    cache = tmp_path / "cache"
    base = f"oci:{base_image}:v1"
    r = ocitree(
        capsys, "build", "--blueprint", layer, "--from", base, "-t", dest, "--cache-dir", cache
    )
    assert r.code == 1
    assert f"3 errors in {layer}" in r.err
    assert f"{layer}:3: customizations.hostname: must be a string, not an integer" in r.err
    assert f"{layer}:5: customizations.files[0].path: /var/lib/x is not under" in r.err
    assert f"{layer}:6: customizations.files[0].mode: '0999' is not an octal mode" in r.err
    assert not (tmp_path / "o").exists() and not cache.exists()
    # Found while applying: still the entry's line, and no image.
    layer.write_text('name = "bad"\n\n[[customizations.files]]\npath = "/etc/no/such/dir"\n')
    r = ocitree(
        capsys, "build", "--blueprint", layer, "--from", base, "-t", dest, "--cache-dir", cache
    )
    assert r.code == 1
    assert f"{layer}:3: customizations.files[0]: the directory of /etc/no/such/dir" in r.err
    assert not (tmp_path / "o").exists()
    # A blueprint has no FROM, and is no Containerfile.
    r = ocitree(capsys, "build", "--blueprint", layer, "-t", dest, "--cache-dir", cache)
    assert r.code == 1 and "--from" in r.err
    r = ocitree(capsys, "build", "--blueprint", layer, "--from", base, "-f", layer, "-t", dest)
    assert r.code == 1 and "--blueprint takes no -f" in r.err
