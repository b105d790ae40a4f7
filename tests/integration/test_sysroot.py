"""Device deployments on a real ostree sysroot (on a tmpfs), checked with the ostree CLI."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ocitree.device import DeploymentInfo, Device, sysroot_lock
from ocitree.errors import UserError
from ocitree.run import run, spawn
from support.gentree import generate_tree
from support.sysroots import deployment_root, install_commit, make_sysroot, pull_commit

pytestmark = pytest.mark.integration

OS = "sample"
REF = "sample/x86_64/edge"
IMAGE_V2 = "ostree-unverified-registry:127.0.0.1:5000/os:2"
IMAGE_V3 = "ostree-unverified-registry:127.0.0.1:5000/os:3"
KARGS = ("root=LABEL=root", "console=ttyS0", 'rd.test="a b"')
DIGEST_V2 = "sha256:" + "ab" * 32
EPOCH = 1_700_000_000


@dataclass(frozen=True)
class Commits:
    repo: Path
    by_version: dict[int, str]

    def __getitem__(self, version: int) -> str:
        return self.by_version[version]


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.chmod(path, 0o644)


def _commit(tree: Path, repo: Path, version: int, digest: str | None) -> str:
    argv = [
        "ostree",
        "commit",
        f"--repo={repo}",
        f"--branch={REF}",
        f"--tree=dir={tree}",
        f"--subject=sample {version}",
        f"--timestamp=@{EPOCH + version}",
        "--fsync=false",
        f"--add-metadata-string=version={version}",
        "--add-metadata=ostree.bootable=true",
        "--add-metadata-string=ostree.linux=6.1.0-ocitree",
    ]
    if digest is not None:
        argv.append(f"--add-metadata-string=ostree.manifest-digest={digest}")
    run(argv)
    return run(["ostree", "rev-parse", f"--repo={repo}", REF]).stdout.decode().strip()


@pytest.fixture(scope="module")
def commits(tmp_path_factory: pytest.TempPathFactory) -> Commits:
    """v1, v2, v3 of a small OS tree in an archive repo; each has test files in usr/etc."""
    for tool in ("ostree", "mount"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed")
    base = tmp_path_factory.mktemp("sysroot-commits")
    repo = base / "repo"
    run(["ostree", "init", f"--repo={repo}", "--mode=archive"])
    out: dict[int, str] = {}
    for v in (1, 2, 3):
        tree = base / f"tree{v}"
        generate_tree(tree, size=2 << 20, components=4, seed=11, version=v)
        etc = tree / "usr/etc/ocitree"
        _write(etc / "edited.conf", f"setting = default of v{v}\n")
        _write(etc / "untouched.conf", f"untouched, from v{v}\n")
        _write(etc / "removed.conf", f"removed on the device, v{v}\n")
        out[v] = _commit(tree, repo, v, DIGEST_V2 if v == 2 else None)
    return Commits(repo, out)


@pytest.fixture
def sysroot(tmp_path: Path, commits: Commits) -> Iterator[Path]:
    """A device installed with v1 by the ostree CLI (with kernel arguments); v2, v3 pulled."""
    with make_sysroot(tmp_path, OS) as root:
        install_commit(root, commits.repo, commits[1], osname=OS, kargs=KARGS)
        # As an importer would: the images' commits are kept by refs.
        pull_commit(root, commits.repo, commits[2], ref="ocitree/test/v2")
        pull_commit(root, commits.repo, commits[3], ref="ocitree/test/v3")
        yield root


def _status(root: Path) -> list[tuple[str, str, str | None]]:
    """(osname, csum.serial, version) per deployment, parsed loosely from admin status."""
    text = run(["ostree", "admin", "status", f"--sysroot={root}"]).stdout.decode()
    rows: list[tuple[str, str, str | None]] = []
    for line in text.splitlines():
        m = re.match(r"^[* ] (\S+) ([0-9a-f]{64}\.\d+)", line)
        if m:
            rows.append((m.group(1), m.group(2), None))
            continue
        v = re.match(r"^\s+Version: (\S+)", line)
        if v and rows:
            rows[-1] = (rows[-1][0], rows[-1][1], v.group(1))
    return rows


def _summary(infos: list[DeploymentInfo]) -> list[tuple[str | None, bool, bool]]:
    return [(d.version, d.default, d.rollback) for d in infos]


def _has_commit(root: Path, checksum: str) -> bool:
    argv = ["ostree", "show", f"--repo={root / 'ostree' / 'repo'}", checksum]
    return run(argv, check=False).returncode == 0


def _fsck(root: Path) -> None:
    out = run(["ostree", "fsck", f"--repo={root / 'ostree' / 'repo'}"]).stdout.decode()
    assert "no errors found" in out, out


def test_initial_device(sysroot: Path, commits: Commits) -> None:
    device = Device(sysroot)
    assert device.repo_path == sysroot / "ostree" / "repo"
    (only,) = device.deployments()
    assert only.checksum == commits[1]
    assert (only.index, only.osname, only.serial, only.version) == (0, OS, 0, "1")
    assert only.origin_refspec == commits[1]
    assert only.image_reference is None
    assert only.timestamp == EPOCH + 1
    assert only.default and not only.rollback and not only.booted
    assert not only.staged and not only.pinned
    assert only.kernel_args == " ".join(KARGS)


def test_deploy_makes_new_default_with_etc_merge(sysroot: Path, commits: Commits) -> None:
    v1_etc = deployment_root(sysroot, OS, commits[1]) / "etc" / "ocitree"
    (v1_etc / "edited.conf").write_text("setting = changed on the device\n")
    (v1_etc / "removed.conf").unlink()
    (v1_etc / "local.conf").write_text("only on the device\n")

    device = Device(sysroot)
    new = device.deploy(commits[2], image_reference=IMAGE_V2)

    infos = device.deployments()
    assert new == infos[0]
    assert [d.checksum for d in infos] == [commits[2], commits[1]]
    assert _summary(infos) == [("2", True, False), ("1", False, True)]
    assert new.image_reference == IMAGE_V2
    assert new.origin_refspec is None
    assert new.manifest_digest == DIGEST_V2
    assert new.timestamp == EPOCH + 2
    assert new.kernel_args == infos[1].kernel_args == " ".join(KARGS)

    # The origin file, exactly as rpm-ostree and bootc write it.
    origin = device.origin_path(new)
    assert origin == deployment_root(sysroot, OS, commits[2]).with_name(f"{commits[2]}.0.origin")
    assert origin.read_text() == f"[origin]\ncontainer-image-reference={IMAGE_V2}\n"

    # /etc three-way merge: local edits carried over, untouched files take v2's defaults.
    etc = device.deployment_path(new) / "etc" / "ocitree"
    assert (etc / "edited.conf").read_text() == "setting = changed on the device\n"
    assert (etc / "local.conf").read_text() == "only on the device\n"
    assert not (etc / "removed.conf").exists()
    assert (etc / "untouched.conf").read_text() == "untouched, from v2\n"
    # v1's deployment is not modified.
    assert (v1_etc / "untouched.conf").read_text() == "untouched, from v1\n"

    # The boot entries carry the kernel arguments; the default one boots v2.
    entries = sorted((sysroot / "boot" / "loader" / "entries").glob("*.conf"))
    assert len(entries) == 2
    for entry in entries:
        options = next(x for x in entry.read_text().splitlines() if x.startswith("options "))
        assert options.startswith("options " + " ".join(KARGS) + " ostree=/ostree/boot.")

    assert _status(sysroot) == [
        (OS, f"{commits[2]}.0", "2"),
        (OS, f"{commits[1]}.0", "1"),
    ]
    _fsck(sysroot)


def test_rollback_then_deploy_again(sysroot: Path, commits: Commits) -> None:
    device = Device(sysroot)
    device.deploy(commits[2], image_reference=IMAGE_V2)

    back = device.rollback()
    assert (back.checksum, back.index, back.default) == (commits[1], 0, True)
    infos = device.deployments()
    assert [d.checksum for d in infos] == [commits[1], commits[2]]
    assert _summary(infos) == [("1", True, False), ("2", False, True)]
    assert infos[1].image_reference == IMAGE_V2
    assert _status(sysroot) == [
        (OS, f"{commits[1]}.0", "1"),
        (OS, f"{commits[2]}.0", "2"),
    ]

    # Rolling back again undoes the rollback.
    assert device.rollback().checksum == commits[2]
    assert device.rollback().checksum == commits[1]

    # A new deploy keeps the current default (v1) as rollback and drops v2.
    new = device.deploy(commits[3], image_reference=IMAGE_V3)
    infos = device.deployments()
    assert [d.checksum for d in infos] == [commits[3], commits[1]]
    assert _summary(infos) == [("3", True, False), ("1", False, True)]
    assert new.kernel_args == " ".join(KARGS)
    assert not deployment_root(sysroot, OS, commits[2]).exists()
    assert len(_status(sysroot)) == 2

    # Deploying the same commit again makes a second deployment of it (serial 1).
    again = device.deploy(commits[3], image_reference=IMAGE_V3)
    infos = device.deployments()
    assert [(d.checksum, d.serial) for d in infos] == [(commits[3], 1), (commits[3], 0)]
    assert again == infos[0]
    # Cleanup pruned the repo: v1 (no ref, no longer deployed) is gone, v2 kept by its ref.
    assert not _has_commit(sysroot, commits[1])
    assert _has_commit(sysroot, commits[2])
    _fsck(sysroot)


def test_a_second_device_object_sees_changes(sysroot: Path, commits: Commits) -> None:
    watcher = Device(sysroot)
    assert len(watcher.deployments()) == 1
    Device(sysroot).deploy(commits[2], image_reference=IMAGE_V2)
    assert [d.checksum for d in watcher.deployments()] == [commits[2], commits[1]]


def test_rollback_needs_a_second_deployment(sysroot: Path) -> None:
    with pytest.raises(UserError, match="no rollback deployment"):
        Device(sysroot).rollback()


def test_deploy_refuses_unknown_commit_and_stateroot(sysroot: Path, commits: Commits) -> None:
    device = Device(sysroot)
    with pytest.raises(UserError, match="is not in"):
        device.deploy("0" * 64, image_reference=IMAGE_V2)
    with pytest.raises(UserError, match="no stateroot 'other'") as info:
        device.deploy(commits[2], image_reference=IMAGE_V2, osname="other")
    assert info.value.hint is not None and "os-init" in info.value.hint
    assert len(device.deployments()) == 1


def test_first_deploy_on_an_empty_stateroot(tmp_path: Path, commits: Commits) -> None:
    with make_sysroot(tmp_path, "fresh") as root:
        pull_commit(root, commits.repo, commits[2], ref="ocitree/test/v2")
        device = Device(root)
        assert device.deployments() == []
        new = device.deploy(commits[2], image_reference=IMAGE_V2)
        assert (new.osname, new.default, new.rollback, new.kernel_args) == (
            "fresh",
            True,
            False,
            "",
        )
        with pytest.raises(UserError, match="no rollback"):
            device.rollback()
        del device


def _hold_lock(root: Path) -> subprocess.Popen[bytes]:
    code = (
        "import sys, time, gi\n"
        "gi.require_version('OSTree', '1.0')\n"
        "from gi.repository import Gio, OSTree\n"
        "s = OSTree.Sysroot.new(Gio.File.new_for_path(sys.argv[1]))\n"
        "s.lock()\n"
        "print('locked', flush=True)\n"
        "time.sleep(120)\n"
    )
    proc = spawn([sys.executable, "-c", code, root], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == b"locked"
    return proc


def test_lock_held_by_another_process(sysroot: Path, commits: Commits) -> None:
    holder = _hold_lock(sysroot)
    try:
        with (
            pytest.raises(UserError, match="another operation is running") as info,
            sysroot_lock(sysroot, wait=False),
        ):
            pass
        assert info.value.hint is not None
        start = time.monotonic()
        with (
            pytest.raises(UserError, match="another operation is running"),
            sysroot_lock(Device(sysroot), timeout=0.3),
        ):
            pass
        assert time.monotonic() - start >= 0.3
        device = Device(sysroot, lock_timeout=0.2)
        with pytest.raises(UserError, match="another operation is running"):
            device.deploy(commits[2], image_reference=IMAGE_V2)
        assert len(device.deployments()) == 1
    finally:
        holder.terminate()
        holder.wait()
    # Released with the process: the same device can go ahead now.
    device.deploy(commits[2], image_reference=IMAGE_V2)
    assert len(device.deployments()) == 2


def test_lock_held_in_this_process(sysroot: Path, commits: Commits) -> None:
    first, second = Device(sysroot), Device(sysroot)
    with sysroot_lock(first):
        with (
            pytest.raises(UserError, match="another operation is running"),
            sysroot_lock(second, wait=False),
        ):
            pass
        # Re-entrant on the same device: deploy inside the caller's lock.
        with sysroot_lock(first, wait=False):
            pass
        first.deploy(commits[2], image_reference=IMAGE_V2)
    with sysroot_lock(second, wait=False):
        assert len(second.deployments()) == 2


def test_not_a_sysroot(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="is not an ostree sysroot") as info:
        Device(Path("/nonexistent"))
    assert info.value.hint is not None and "ostree admin init-fs" in info.value.hint
    with pytest.raises(UserError, match="is not an ostree sysroot"):
        Device(tmp_path)
    with (
        pytest.raises(UserError, match="is not an ostree sysroot"),
        sysroot_lock(tmp_path, wait=False),
    ):
        pass
