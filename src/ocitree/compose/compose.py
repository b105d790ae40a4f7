"""``ocitree compose``: a blueprint → an installed tree → a bootable ostree commit.

1. The blueprint is read as a whole-OS blueprint (``distro``, ``[[groups]]`` allowed) and
   the distro found (:mod:`ocitree.compose.distro`); its repositories, or those given.
2. The distro's base packages, the groups' packages and the blueprint's packages are
   resolved in one request with libsolv, then installed into an empty root by the host's
   ``rpm --root`` (the root has no rpm of its own yet), the same engine as ``ocitree
   build``. With ``--from-rootfs`` a tree made by another tool is taken instead.
3. The blueprint's customizations are applied (users, groups, keys, files, services, …:
   :func:`ocitree.build.blueprint.apply`), then the tree is laid out for ostree
   (:mod:`ocitree.compose.layout`).
4. It is committed with ``version``, ``ostree.bootable``, ``ostree.linux``, the package
   list (``rpmostree.rpmdb.pkglist``) and ``rpmostree.inputhash``, with no parent, under
   ``<os_id>/<major>/<arch>/edge`` unless ``--ref`` says otherwise.

Reproducible: the input hash covers the blueprint, the distro and every chosen package's
checksum; the time of the commit and of rpm's install records is ``SOURCE_DATE_EPOCH``,
or else the newest build time of the packages (of the files, for ``--from-rootfs``). The
same inputs give the same commit. Nothing is written to the repository until the tree is
complete.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ocitree.build import blueprint as bp_mod
from ocitree.build import packages
from ocitree.build.files import unpack_tar
from ocitree.build.rpmrepo import RepoConfig, basearch_of, host_arch, os_release
from ocitree.build.sandbox import run_host_with_mounts
from ocitree.compose import comps, distro, layout, tarball
from ocitree.errors import UserError
from ocitree.log import logger, step
from ocitree.ostree.commitdir import commit_directory
from ocitree.ostree.repo import Repo
from ocitree.run import run

DEFAULT_CACHE = Path("/var/tmp/ocitree-compose")
INPUTHASH_KEY = "rpmostree.inputhash"
# Bumped when the layout code changes what a commit of the same inputs holds.
LAYOUT_VERSION = 1


@dataclass(frozen=True)
class ComposeOptions:
    blueprint: Path
    repo: Path
    ref: str | None = None
    distro: str | None = None  # overrides the blueprint's
    rpm_repos: tuple[str, ...] = ()  # URL|DIR, in place of the distro's repositories
    repo_files: tuple[Path, ...] = ()
    from_rootfs: Path | None = None  # a directory or tarball made by another tool
    tarball: Path | None = None  # also write osbuild's edge-commit tarball here
    cache_dir: Path = DEFAULT_CACHE


@dataclass(frozen=True)
class ComposeResult:
    ref: str
    commit: str
    version: str | None
    kernel: str
    packages: tuple[str, ...]  # NEVRAs installed (empty for --from-rootfs)
    input_hash: str
    timestamp: int
    tarball: Path | None


def compose(opts: ComposeOptions) -> ComposeResult:
    bp = bp_mod.load(opts.blueprint, compose=True)
    text = opts.blueprint.read_text(encoding="utf-8")
    arch = basearch_of(host_arch())
    found = _distro(opts, bp)
    # Everything the user gave is checked before anything is written.
    repos: list[RepoConfig] = []
    if opts.from_rootfs is None:
        if found is None:
            raise UserError(
                f"{opts.blueprint}: the blueprint names no distro",
                hint='add distro = "rhel-8.7" (or another known one) to it, or give --distro',
            )
        repos = distro.repositories(
            found, arch, rpm_repos=opts.rpm_repos, repo_files=opts.repo_files
        )
    else:
        _check_rootfs(opts.from_rootfs, bp)
    if opts.tarball is not None and (opts.tarball.is_dir() or not opts.tarball.parent.is_dir()):
        raise UserError(f"--tarball {opts.tarball}: not a file in an existing directory")
    _check_repo(opts.repo)
    cache = opts.cache_dir.resolve()
    (cache / "tmp").mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="compose-", dir=cache / "tmp") as tmp:
        root = Path(tmp) / "root"
        root.mkdir()
        if opts.from_rootfs is not None:
            epoch, digest = _from_rootfs(opts.from_rootfs, root)
            nevras: tuple[str, ...] = ()
            inputs: dict[str, object] = {"rootfs": digest}
        else:
            assert found is not None
            epoch, chosen, nevras = _install(root, bp, found, repos, arch, cache)
            inputs = {"packages": chosen}
        inputs.update(
            blueprint=text,
            distro=dataclasses.asdict(found) if found else None,
            layout=LAYOUT_VERSION,
        )
        input_hash = _hash(inputs)
        with step("Applying the blueprint's customizations"):
            bp_mod.apply(
                dataclasses.replace(bp, packages=(), modules=()),
                root,
                install=_none,
                source_date_epoch=epoch,
            )
        kernel = layout.make_ostree_ready(root, source_date_epoch=epoch)
        ref = opts.ref or _default_ref(found, root, arch)
        commit = _commit(opts.repo, root, ref, bp, kernel.version, input_hash, epoch)
    out = None
    if opts.tarball is not None:
        with step(f"Writing the edge-commit tarball {opts.tarball}"):
            out = tarball.write(
                opts.tarball, opts.repo, ref, commit, input_hash=input_hash, epoch=epoch,
                version=bp.version,
            )  # fmt: skip
    return ComposeResult(ref, commit, bp.version, kernel.version, nevras, input_hash, epoch, out)


def _distro(opts: ComposeOptions, bp: bp_mod.Blueprint) -> distro.Distro | None:
    if opts.distro:
        return distro.find(opts.distro)
    if not bp.distro:
        return None
    try:
        return distro.find(bp.distro)
    except UserError as e:
        raise UserError(
            f"{bp.filename}:{bp.distro_at.line}: distro: {e.message}", hint=e.hint
        ) from e


def _check_rootfs(source: Path, bp: bp_mod.Blueprint) -> None:
    if bp.packages or bp.modules or bp.groups:
        raise UserError(
            f"{bp.filename}: --from-rootfs takes the tree as it is, but the blueprint names "
            "packages or groups",
            hint="install them with the tool that made the tree, or compose without --from-rootfs",
        )
    if not os.path.lexists(source):
        raise UserError(f"--from-rootfs {source}: no such file or directory")
    if not source.is_dir() and not tarfile.is_tarfile(source):
        raise UserError(
            f"--from-rootfs {source}: neither a directory nor a tar archive (plain, gz, bz2, xz)"
        )


def _none(specs: Sequence[str]) -> None:
    raise AssertionError("packages are installed before the customizations")


def _check_repo(path: Path) -> None:
    if path.exists() and not (path / "config").is_file():
        raise UserError(
            f"--repo {path} exists and is not an ostree repository",
            hint="give a new directory (it is made as an archive-mode repository) or a repo",
        )


def _specs(
    bp: bp_mod.Blueprint, found: distro.Distro, group_packages: Sequence[str], arch: str
) -> list[str]:
    """One request: the distro's set, the groups', the blueprint's (its versions win)."""
    named = {p.name for p in (*bp.packages, *bp.modules)}
    out = [n for n in (*found.packages_for(arch), *group_packages) if n not in named]
    out = list(dict.fromkeys(out))
    return out + [p.spec for p in (*bp.packages, *bp.modules)]


def _install(
    root: Path,
    bp: bp_mod.Blueprint,
    found: distro.Distro,
    repos: Sequence[RepoConfig],
    arch: str,
    cache: Path,
) -> tuple[int, list[list[object]], tuple[str, ...]]:
    """Install the packages; the epoch, the chosen packages and checksums, the NEVRAs."""
    with step(f"Resolving the packages of {bp.name} ({found.name}, {arch})"):
        specs = _specs(bp, found, comps.expand(bp.groups, repos, cache), arch)
        chosen = packages.resolve(
            root, specs, repos=repos, cache=cache, installed=[], exclude=found.exclude
        )
    epoch = _source_date_epoch() or max((c.buildtime for c in chosen), default=0)
    env = {"SOURCE_DATE_EPOCH": str(epoch)}  # rpm's install times

    def run_host(argv: Sequence[str]) -> subprocess.CompletedProcess[bytes]:
        return run_host_with_mounts(root, argv, [], env=env)

    with step(f"Installing {len(chosen)} packages into an empty root"), _install_guards(root):
        result = packages.install(
            root, specs, repos=repos, cache=cache, run_host=run_host, chosen=chosen
        )
    return epoch, [[c.nevra, c.checksum] for c in chosen], result.installed


# kernel-install plugins that would make an initramfs without ostree's module (and a
# rescue kernel); the layout makes the initramfs with the tree's dracut instead.
MASKED_KERNEL_INSTALL = ("50-dracut.install", "51-dracut-rescue.install")
PLACEHOLDER_MACHINE_ID = "f" * 32


@contextlib.contextmanager
def _install_guards(root: Path) -> Iterator[None]:
    """What the empty root holds while rpm installs into it, as osbuild does: a fixed
    machine id (else systemd's scriptlet writes a random one: no two composes would be
    the same), the dracut kernel-install plugins masked, /dev and /proc mount points."""
    for d, mode in (("etc/kernel/install.d", 0o755), ("dev", 0o755), ("proc", 0o555)):
        layout.make_dirs(root, d, mode)
    (root / "etc/machine-id").write_text(PLACEHOLDER_MACHINE_ID + "\n")
    masks = [root / "etc/kernel/install.d" / name for name in MASKED_KERNEL_INSTALL]
    for m in masks:
        m.symlink_to("/dev/null")
    try:
        yield
    finally:
        for m in masks:
            if m.is_symlink() and os.readlink(m) == "/dev/null":
                m.unlink()


def _from_rootfs(source: Path, root: Path) -> tuple[int, str]:
    """Copy or unpack the tree; the epoch and a digest of the input."""
    with step(f"Copying the tree of {source}"):
        if source.is_dir():
            run(["cp", "-a", "--", f"{source}/.", str(root)])
        else:
            unpack_tar(source, root, "/", what=f"--from-rootfs {source}", skip_devices=True)
    digest = _tree_digest(root)
    return _source_date_epoch() or _newest_mtime(root), digest


def _tree_digest(root: Path) -> str:
    """A digest of a tree's names, types, modes, owners and contents."""
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            h.update(
                f"{os.path.relpath(p, root)}\0{st.st_mode}\0{st.st_uid}\0{st.st_gid}\0".encode()
            )
            if os.path.islink(p):
                h.update(os.readlink(p).encode())
            elif os.path.isfile(p):
                with open(p, "rb") as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        h.update(block)
    return h.hexdigest()


def _newest_mtime(root: Path) -> int:
    newest = 0
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            newest = max(newest, int(os.lstat(os.path.join(dirpath, name)).st_mtime))
    return newest


def _source_date_epoch() -> int | None:
    value = os.environ.get("SOURCE_DATE_EPOCH")
    if not value:
        return None
    if not value.isdigit():
        raise UserError(f"SOURCE_DATE_EPOCH={value!r} is not a number of seconds")
    return int(value)


def _hash(inputs: object) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def _default_ref(found: distro.Distro | None, root: Path, arch: str) -> str:
    if found is not None:
        return found.default_ref(arch)
    release = os_release(root)
    os_id, version = release.get("ID"), release.get("VERSION_ID", "")
    if not os_id:
        raise UserError(
            "the tree's os-release has no ID to name the ref after",
            hint="give --ref REF",
        )
    major = version.split(".")[0] or "0"
    return f"{os_id}/{major}/{arch}/edge"


def _commit(
    repo_path: Path,
    root: Path,
    ref: str,
    bp: bp_mod.Blueprint,
    kver: str,
    input_hash: str,
    epoch: int,
) -> str:
    created = not repo_path.exists()
    if created:
        Repo.create(repo_path)
    subject = f"{bp.name} {bp.version}" if bp.version else bp.name
    strings = [("ostree.linux", kver), (INPUTHASH_KEY, input_hash)]
    strings += [("version", bp.version)] if bp.version else []
    variants = [("ostree.bootable", "true")]
    if packages.find_rpmdb(root) is not None:
        variants.append(("rpmostree.rpmdb.pkglist", packages.pkglist_variant(root)))
    try:
        with step(f"Committing {ref}"):
            commit = commit_directory(
                repo_path,
                root,
                subject=subject,
                timestamp=epoch,
                branch=ref,
                strings=strings,
                variants=variants,
            )
    except BaseException:
        if created:
            shutil.rmtree(repo_path, ignore_errors=True)
        raise
    if (repo_path / "summary").is_file():  # else clients would see the old commit
        run(["ostree", f"--repo={repo_path}", "summary", "-u"])
    logger.info("%s: %s", ref, commit)
    return commit
