"""Deployments of an ostree sysroot: status, a new default deployment, rollback.

Everything goes through libostree's ``OstreeSysroot``, the code ``ostree admin`` and
rpm-ostree use, so a device managed by ocitree stays manageable by them (and by bootc):

- :meth:`Device.deploy` is ``ostree_sysroot_deploy_tree()`` (checkout, the /etc three-way
  merge from the merge deployment, kernel arguments copied from it, origin file) followed
  by ``ostree_sysroot_simple_write_deployment()`` (new default first, the booted deployment
  — or with none booted the merge deployment, i.e. the previous default — kept as
  rollback, older ones of the same stateroot dropped), then the equivalent of
  ``ostree_sysroot_cleanup()`` (old deployment dirs and boot versions, repo prune).
- :meth:`Device.rollback` reorders the list with ``ostree_sysroot_write_deployments()``
  (then the same cleanup),
  as ``rpm-ostree rollback`` does (Debian's ostree 2022.7 has no ``admin rollback``).

Both take the sysroot lock themselves (:func:`ocitree.device.lock.sysroot_lock`, the
ostree admin lock that rpm-ostree also respects); it is re-entrant, so a caller that
holds it around a longer operation (import, then deploy) can keep holding it.

Writing deployments freezes and thaws the filesystem holding the sysroot's ``/boot``
(``FIFREEZE``/``FITHAW``, falling back to ``syncfs`` where unsupported, e.g. tmpfs).

Cleanup prunes the sysroot repo with "refs only" semantics: a commit that is neither
deployed nor named by a ref is deleted. Whoever imports a commit for a later deploy
must keep a ref on it (ostree-ext uses ``ostree/container/image/…``).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gi.repository import Gio

from ocitree.device.lock import sysroot_lock
from ocitree.errors import UserError
from ocitree.log import logger
from ocitree.ostree.repo import GLib, OSTree

ORIGIN_GROUP = "origin"
ORIGIN_CONTAINER = "container-image-reference"
ORIGIN_REFSPEC = "refspec"
MANIFEST_DIGEST_KEY = "ostree.manifest-digest"
IMAGE_CONFIG_KEY = "ostree.container.image-config"


@dataclass(frozen=True)
class DeploymentInfo:
    """One deployment of a sysroot, in boot order (``index`` 0 is the default).

    ``rollback`` marks the deployment :meth:`Device.rollback` would make the default:
    the first one of the same stateroot after the booted deployment, or with none booted
    after the default. ``kernel_args`` is the boot entry's ``options`` without the
    ``ostree=`` argument libostree manages itself.
    """

    index: int
    osname: str
    checksum: str
    serial: int
    origin_refspec: str | None
    image_reference: str | None
    version: str | None
    timestamp: int
    manifest_digest: str | None
    booted: bool
    default: bool
    rollback: bool
    staged: bool
    pinned: bool
    kernel_args: str

    @property
    def name(self) -> str:
        """``<checksum>.<serial>``, the deployment's directory name."""
        return f"{self.checksum}.{self.serial}"


def split_kernel_args(text: str) -> list[str]:
    """Split a kernel command line on blanks outside double quotes (as the kernel does)."""
    args: list[str] = []
    current: list[str] = []
    quoted = False
    for ch in text:
        if ch == '"':
            quoted = not quoted
            current.append(ch)
        elif ch.isspace() and not quoted:
            if current:
                args.append("".join(current))
                current = []
        else:
            current.append(ch)
    if current:
        args.append("".join(current))
    return args


def _user_kernel_args(options: str | None) -> str:
    if not options:
        return ""
    return " ".join(a for a in split_kernel_args(options) if a.partition("=")[0] != "ostree")


def _keyfile_string(kf: Any, group: str, key: str) -> str | None:
    if kf is None:
        return None
    try:
        value = kf.get_string(group, key)
    except GLib.Error:
        return None
    return str(value) if value is not None else None


def _glib_error(action: str, err: Exception, hint: str | None = None) -> UserError:
    message = getattr(err, "message", None) or str(err)
    return UserError(f"{action}: {message}", hint=hint)


def _not_a_sysroot(path: Path) -> UserError:
    return UserError(
        f"{path} is not an ostree sysroot",
        hint=f"make one with `ostree admin init-fs {path}` and "
        f"`ostree admin os-init OSNAME --sysroot={path}`, or pass the right --sysroot",
    )


def open_sysroot(path: Path) -> Any:
    """An unloaded ``OSTree.Sysroot`` for ``path``; UserError if it is not a sysroot."""
    if not (path / "ostree" / "repo").is_dir() or not (path / "ostree" / "deploy").is_dir():
        raise _not_a_sysroot(path)
    return OSTree.Sysroot.new(Gio.File.new_for_path(os.fspath(path)))


class Device:
    """An ostree sysroot: ``/`` on a device, any directory made by ``ostree admin init-fs``.

    ``osname`` is the stateroot to act on; without it :meth:`deploy` uses the booted
    (else default) deployment's stateroot, else the only one there is. ``lock_timeout``
    is how long :meth:`deploy` and :meth:`rollback` wait for the sysroot lock (``None``:
    no limit) before a UserError says another operation is running.
    """

    def __init__(
        self,
        sysroot: Path = Path("/"),
        osname: str | None = None,
        *,
        lock_timeout: float | None = 30,
    ) -> None:
        self.path = Path(sysroot)
        self.osname = osname
        self.lock_timeout = lock_timeout
        self.sysroot: Any = open_sysroot(self.path)
        try:
            self.sysroot.load(None)
        except GLib.Error as e:
            raise _not_a_sysroot(self.path) from e

    @property
    def repo_path(self) -> Path:
        """The sysroot's repository, ``SYSROOT/ostree/repo`` (bare mode)."""
        return self.path / "ostree" / "repo"

    def reload(self) -> None:
        """Re-read the deployment list if another process changed it."""
        try:
            self.sysroot.load_if_changed(None)
        except GLib.Error as e:
            raise _glib_error(f"cannot load the sysroot {self.path}", e) from e

    # -- status ---------------------------------------------------------------------

    def deployments(self) -> list[DeploymentInfo]:
        """All deployments, default first."""
        self.reload()
        return list(self._infos())

    def _infos(self) -> Iterator[DeploymentInfo]:
        deps: Sequence[Any] = self.sysroot.get_deployments()
        booted = self.sysroot.get_booted_deployment()
        rollback = _rollback_of(deps, booted)
        repo = self.sysroot.repo()
        for i, dep in enumerate(deps):
            origin = dep.get_origin()
            version, timestamp, digest = _commit_facts(repo, dep.get_csum())
            bootconfig = dep.get_bootconfig()
            options = bootconfig.get("options") if bootconfig is not None else None
            yield DeploymentInfo(
                index=i,
                osname=dep.get_osname(),
                checksum=dep.get_csum(),
                serial=dep.get_deployserial(),
                origin_refspec=_keyfile_string(origin, ORIGIN_GROUP, ORIGIN_REFSPEC),
                image_reference=_keyfile_string(origin, ORIGIN_GROUP, ORIGIN_CONTAINER),
                version=version,
                timestamp=timestamp,
                manifest_digest=digest,
                booted=booted is not None and dep.equal(booted),
                default=i == 0,
                rollback=rollback is not None and dep.equal(rollback),
                staged=bool(dep.is_staged()),
                pinned=bool(dep.is_pinned()),
                kernel_args=_user_kernel_args(options),
            )

    def deployment_path(self, info: DeploymentInfo) -> Path:
        """The root directory of a deployment (``ostree/deploy/OS/deploy/CSUM.SERIAL``)."""
        return self.path / "ostree" / "deploy" / info.osname / "deploy" / info.name

    def origin_path(self, info: DeploymentInfo) -> Path:
        """The deployment's origin file (``…/deploy/CSUM.SERIAL.origin``)."""
        return self.deployment_path(info).with_name(info.name + ".origin")

    # -- changes --------------------------------------------------------------------

    def deploy(
        self, commit: str, *, image_reference: str, osname: str | None = None
    ) -> DeploymentInfo:
        """Make ``commit`` (already in :attr:`repo_path`) the new default deployment.

        The /etc three-way merge and the kernel arguments come from the merge deployment
        (the booted one, else the stateroot's current default). The origin file records
        ``[origin] container-image-reference=<image_reference>``, as rpm-ostree and bootc
        write it. The booted deployment (else the previous default) stays, as rollback;
        other deployments of the stateroot that are neither pinned nor booted go.
        Takes the sysroot lock.
        """
        with sysroot_lock(self, timeout=self.lock_timeout):
            self.reload()
            os_name = self._resolve_osname(osname)
            checksum = self._resolve_commit(commit)
            merge = self.sysroot.get_merge_deployment(os_name)
            origin = GLib.KeyFile.new()
            origin.set_string(ORIGIN_GROUP, ORIGIN_CONTAINER, image_reference)
            try:
                _ok, new = self.sysroot.deploy_tree(os_name, checksum, origin, merge, None, None)
            except GLib.Error as e:
                raise _glib_error(f"cannot deploy {checksum[:12]}", e) from e
            try:
                self.sysroot.simple_write_deployment(
                    os_name, new, merge, OSTree.SysrootSimpleWriteDeploymentFlags.NO_CLEAN, None
                )
            except GLib.Error as e:
                self._discard_partial()
                raise _glib_error(f"cannot write the deployment of {checksum[:12]}", e) from e
            self._cleanup()
            for info in self._infos():
                if (info.osname, info.checksum, info.serial) == (
                    os_name,
                    checksum,
                    new.get_deployserial(),
                ):
                    return info
        raise UserError(f"the new deployment of {checksum[:12]} is not in the deployment list")

    def rollback(self) -> DeploymentInfo:
        """Make the rollback deployment the default; returns it (now at index 0).

        As ``rpm-ostree rollback``: the rollback deployment moves to the front, the rest
        keep their order; nothing is deleted. With no rollback but a pending deployment
        before the booted one, the booted one goes back on top. Takes the sysroot lock.
        """
        with sysroot_lock(self, timeout=self.lock_timeout):
            self.reload()
            deps: list[Any] = list(self.sysroot.get_deployments())
            booted = self.sysroot.get_booted_deployment()
            target = _rollback_of(deps, booted)
            if target is None and booted is not None and not deps[0].equal(booted):
                target = booted
            if target is None:
                raise UserError(
                    f"no rollback deployment on {self.path}",
                    hint="a rollback needs a second deployment of the same OS; "
                    "`ocitree status` lists them",
                )
            reordered = [target] + [d for d in deps if not d.equal(target)]
            try:
                opts = OSTree.SysrootWriteDeploymentsOpts()
                opts.do_postclean = False
                self.sysroot.write_deployments_with_options(reordered, opts, None)
            except GLib.Error as e:
                raise _glib_error("cannot write the reordered deployments", e) from e
            self._cleanup()
            infos = list(self._infos())
        return infos[0]

    # -- helpers --------------------------------------------------------------------

    def _stateroots(self) -> list[str]:
        deploy = self.path / "ostree" / "deploy"
        return sorted(p.name for p in deploy.iterdir() if p.is_dir())

    def _resolve_osname(self, osname: str | None) -> str:
        name = osname or self.osname
        if name is None:
            booted = self.sysroot.get_booted_deployment()
            deps = self.sysroot.get_deployments()
            if booted is not None:
                name = booted.get_osname()
            elif deps:
                name = deps[0].get_osname()
            else:
                roots = self._stateroots()
                if len(roots) != 1:
                    found = ", ".join(roots) if roots else "none"
                    raise UserError(
                        f"cannot tell which OS (stateroot) to deploy on {self.path}; "
                        f"stateroots: {found}",
                        hint="pass the OS name (--os)"
                        if roots
                        else f"make one with `ostree admin os-init OSNAME --sysroot={self.path}`",
                    )
                name = roots[0]
        if not (self.path / "ostree" / "deploy" / name).is_dir():
            raise UserError(
                f"no stateroot {name!r} on {self.path}",
                hint=f"make it with `ostree admin os-init {name} --sysroot={self.path}`",
            )
        return name

    def _resolve_commit(self, commit: str) -> str:
        repo = self.sysroot.repo()
        try:
            _ok, checksum = repo.resolve_rev(commit, False)
            _ok, _variant, state = repo.load_commit(checksum)
        except GLib.Error as e:
            raise UserError(
                f"commit {commit} is not in {self.repo_path}",
                hint="import the image into the sysroot's repository first",
            ) from e
        if state & OSTree.RepoCommitState.PARTIAL:
            raise UserError(
                f"commit {checksum[:12]} in {self.repo_path} is incomplete",
                hint="import the image again",
            )
        return str(checksum)

    def cleanup(self) -> None:
        """Remove what an interrupted deploy may have left (under the sysroot lock)."""
        with sysroot_lock(self, timeout=self.lock_timeout):
            self._cleanup()

    def _cleanup(self) -> None:
        """``ostree_sysroot_cleanup()`` without its stdout chatter ("Freed objects: …").

        Removes deployment directories and boot versions no longer listed, regenerates
        the ``ostree/B/S/N`` deployment refs and prunes the repo to what refs (those
        included) reach, at depth 0: the same as libostree's own post-write cleanup.
        A failure here leaves the new deployment list in place; it is logged, not raised.
        """
        self.reload()
        try:
            self.sysroot.prepare_cleanup(None)
            self.sysroot.repo().prune(OSTree.RepoPruneFlags.REFS_ONLY, 0, None)
        except GLib.Error as e:
            logger.warning("cleaning up %s failed: %s", self.path, e.message)
        self.reload()

    def _discard_partial(self) -> None:
        """After a failed write: drop the half-made deployment dir (no repo prune)."""
        try:
            self.sysroot.unload()
            self.sysroot.load(None)
            self.sysroot.prepare_cleanup(None)
        except GLib.Error:
            pass


def _rollback_of(deps: Sequence[Any], booted: Any) -> Any:
    """The first deployment of the reference's stateroot after the reference.

    The reference is the booted deployment, or with none booted the default.
    """
    if not deps:
        return None
    reference = booted if booted is not None else deps[0]
    osname = reference.get_osname()
    passed = False
    for dep in deps:
        if dep.equal(reference):
            passed = True
        elif passed and dep.get_osname() == osname and not dep.is_staged():
            return dep
    return None


def _commit_facts(repo: Any, checksum: str) -> tuple[str | None, int, str | None]:
    """``version``, timestamp and ``ostree.manifest-digest`` of a commit (if present)."""
    try:
        _ok, variant = repo.load_variant(OSTree.ObjectType.COMMIT, checksum)
    except GLib.Error:
        return None, 0, None
    meta = variant.get_child_value(0).unpack()
    version = meta.get("version")
    digest = meta.get(MANIFEST_DIGEST_KEY)
    config = meta.get(IMAGE_CONFIG_KEY)
    if version is None and isinstance(config, str):
        # A merge commit of an image: the version is the image's label.
        with contextlib.suppress(ValueError, AttributeError):
            labels = (json.loads(config).get("config") or {}).get("Labels") or {}
            version = labels.get("org.opencontainers.image.version") or labels.get("version")
    return (
        version if isinstance(version, str) else None,
        int(OSTree.commit_get_timestamp(variant)),
        digest if isinstance(digest, str) else None,
    )
