"""Throwaway ostree sysroots for device tests, each on its own tmpfs.

``ostree admin deploy`` and libostree's write-deployments freeze and thaw the filesystem
holding the sysroot's ``/boot`` (FIFREEZE/FITHAW): a test sysroot must never live on the
machine's root filesystem. tmpfs refuses FIFREEZE and libostree falls back to ``syncfs``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from ocitree.errors import CommandError
from ocitree.run import run

TMPFS_SIZE = "512M"


def _require(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed")


def _unmount(path: Path) -> None:
    try:
        run(["umount", path])
    except CommandError:
        # Something (a Sysroot object not yet collected) still has it open.
        run(["umount", "--lazy", path], check=False)


@contextlib.contextmanager
def make_sysroot(base: Path, osname: str = "sample", *, size: str = TMPFS_SIZE) -> Iterator[Path]:
    """An empty ostree sysroot with stateroot ``osname`` on a tmpfs at ``base/"sysroot"``.

    Skips the test where tmpfs cannot be mounted (not root, no CAP_SYS_ADMIN).
    """
    _require("ostree", "mount", "umount")
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs for a test sysroot needs root")
    root = base / "sysroot"
    root.mkdir(parents=True, exist_ok=True)
    try:
        run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", root])
    except CommandError as e:
        pytest.skip(f"cannot mount a tmpfs for a test sysroot: {e}")
    try:
        run(["ostree", "admin", "init-fs", root])
        run(["ostree", "admin", "os-init", osname, f"--sysroot={root}"])
        yield root
    finally:
        _unmount(root)


def pull_commit(sysroot: Path, source_repo: Path, commit: str, *, ref: str | None = None) -> None:
    """Copy ``commit`` (and its objects) into the sysroot's repo, under ``ref`` if given.

    Deploying prunes the sysroot repo to what refs and deployments reach: a commit
    pulled without a ref is gone after the next deploy or rollback unless deployed.
    """
    repo = sysroot / "ostree" / "repo"
    run(["ostree", "pull-local", f"--repo={repo}", source_repo, commit])
    if ref is not None:
        run(["ostree", "refs", f"--repo={repo}", "--force", f"--create={ref}", commit])


def install_commit(
    sysroot: Path,
    source_repo: Path,
    commit: str,
    *,
    osname: str = "sample",
    kargs: Sequence[str] = (),
    ref: str | None = None,
    deploy: bool = True,
) -> None:
    """Pull ``commit`` into the sysroot and, like an installer, deploy it with the ostree CLI.

    ``kargs`` become ``--karg-append=`` arguments of the deployment (in order).
    """
    pull_commit(sysroot, source_repo, commit, ref=ref)
    if deploy:
        argv: list[str | Path] = ["ostree", "admin", "deploy", f"--sysroot={sysroot}"]
        argv += [f"--os={osname}", *(f"--karg-append={k}" for k in kargs), commit]
        run(argv)


def deployment_root(sysroot: Path, osname: str, checksum: str, serial: int = 0) -> Path:
    """``SYSROOT/ostree/deploy/OS/deploy/CSUM.SERIAL``, a deployment's root directory."""
    return sysroot / "ostree" / "deploy" / osname / "deploy" / f"{checksum}.{serial}"
