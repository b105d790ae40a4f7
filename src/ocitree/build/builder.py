"""``ocitree build``: a derived OS image from a Containerfile, as one new ostree commit.

The recipe:
1. parse the Containerfile (every error reported at once), or the osbuild blueprint
   (``blueprint``, built on ``base``: :mod:`ocitree.build.blueprint`);
2. pull the ``FROM`` image (or ``base``, which overrides ``FROM`` as ``podman build
   --from`` does) into the build repo (a cache: layers are fetched once);
3. check its commit out as a plain directory, ``/usr/etc`` shown as ``/etc``;
4. run the steps: COPY/ADD from the context, RUN in a bubblewrap sandbox with the
   offline ``systemctl``, ``rpm-ostree install`` and ``ostree container commit`` shims,
   secrets mounted for their step only; or apply the blueprint (packages through the same
   installer, then users, files, services, kernel arguments);
5. clean up like ``ostree container commit``, lint like ``bootc container lint``;
6. commit the root (parent: the base commit), labelled with its own SELinux policy;
7. encapsulate it keeping the base image's layer assignment, so unchanged layers are
   byte-identical to the base's, and write it to the destination.
No intermediate layer exists: a file that one step writes and a later one deletes is
in no blob of the image.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from ocitree.build import blueprint, treecommit
from ocitree.build import containerfile as cf
from ocitree.build.files import context_sources, copy_into, resolve_in_root
from ocitree.build.lint import lint
from ocitree.build.packages import pkglist_variant, tidy_rpmdb
from ocitree.build.sandbox import Mount, run_host_with_mounts, run_step
from ocitree.build.shims import SHIM_DIR, Handler, Reply, ShimServer
from ocitree.container import store
from ocitree.container.blobstream import DigestReader
from ocitree.container.describe import ostree_layer_count
from ocitree.container.encapsulate import (
    COMPONENTS_ANNOTATION,
    EncapsulateOptions,
    EncapsulateResult,
    ReusableLayer,
    encapsulate,
    previous_chunks,
)
from ocitree.errors import UserError
from ocitree.log import logger, step
from ocitree.oci.destination import staged
from ocitree.oci.layer import Blob
from ocitree.oci.layout import Image
from ocitree.oci.reference import (
    ImageReference,
    OstreeImageReference,
    SignatureMode,
    Transport,
)
from ocitree.oci.skopeo import RegistryOptions
from ocitree.ostree.commitdir import commit_directory
from ocitree.ostree.repo import Repo, RepoMode
from ocitree.run import run

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SHIM_BIN = "/run/.ocitree/bin"
CLEANED = ("var/tmp", "var/cache", "run", "tmp")


@dataclass(frozen=True)
class BuildOptions:
    containerfile: Path | None  # None with ``blueprint``
    context: Path
    dest: ImageReference
    build_args: Mapping[str, str] = field(default_factory=dict)
    secrets: Mapping[str, Path] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    network: str = "none"
    cache_dir: Path = Path("/var/tmp/ocitree-build")
    registry: RegistryOptions = field(default_factory=RegistryOptions)
    extra_repos: Sequence[str] = ()
    max_layers: int = 64
    blueprint: Path | None = None  # an osbuild blueprint, instead of a Containerfile
    base: str | None = None  # the base image: needed with ``blueprint``, else overrides FROM


@dataclass
class _State:
    env: dict[str, str]
    workdir: str = "/"
    labels: dict[str, str] = field(default_factory=dict)
    cmd: list[str] | None = None
    entrypoint: list[str] | None = None
    env_config: dict[str, str] = field(default_factory=dict)


def base_reference(text: str) -> ImageReference:
    """FROM takes any transport ocitree reads; a bare name is a registry image."""
    if (
        ":" in text.split("/", 1)[0]
        or "://" in text
        or text.startswith(
            ("oci:", "oci-archive:", "containers-storage:", "dir:", "docker-archive:", "registry:")
        )
    ):
        try:
            return ImageReference.parse(text)
        except UserError:
            pass
    return ImageReference.parse("docker://" + text)


def build(opts: BuildOptions) -> EncapsulateResult:
    parsed: cf.Containerfile | None = None
    recipe: blueprint.Blueprint | None = None
    if opts.blueprint is not None:
        if opts.containerfile is not None:
            raise UserError("a build takes a Containerfile or a blueprint, not both")
        if not opts.base:
            raise UserError("a blueprint has no FROM", hint="name the base image with --from")
        recipe = blueprint.load(opts.blueprint)
        base_text = opts.base
    else:
        if opts.containerfile is None:
            raise UserError("no Containerfile given")
        try:
            text = opts.containerfile.read_text()
        except OSError as e:
            raise UserError(f"cannot read {opts.containerfile}: {e.strerror}") from e
        if not opts.context.is_dir():
            raise UserError(f"build context {opts.context} is not a directory")
        parsed = cf.parse(text, build_args=opts.build_args, filename=str(opts.containerfile))
        _check_secrets(parsed, opts.secrets)
        base_text = opts.base or parsed.base.image
    # absolute: the build's mounts name paths under it from inside other roots
    opts = dataclasses.replace(opts, cache_dir=opts.cache_dir.resolve())
    opts.cache_dir.mkdir(parents=True, exist_ok=True)
    repo_path = opts.cache_dir / "repo"
    repo = (
        Repo(repo_path)
        if (repo_path / "config").exists()
        else Repo.create(repo_path, RepoMode.BARE)
    )
    base_ref = base_reference(base_text)
    from ocitree.device.update import open_source

    with (
        step(f"Pulling the base image {base_ref}"),
        open_source(
            OstreeImageReference(SignatureMode.UNVERIFIED, base_ref), opts.registry
        ) as source,
    ):
        pulled = store.pull(repo, source, str(base_ref))
        base_image = source.image()
    if pulled.base_commit is None:
        raise UserError(
            f"{base_ref} is not an ostree container image",
            hint="build FROM an image made by 'ocitree encapsulate'",
        )
    previous = previous_chunks(base_image)
    base_labels = dict((base_image.config.get("config") or {}).get("Labels") or {})
    with tempfile.TemporaryDirectory(prefix="build-", dir=opts.cache_dir) as tmp:
        work = Path(tmp)
        root = work / "root"
        with step("Checking out the base commit"):
            run(["ostree", f"--repo={repo_path}", "checkout", "--force-copy", pulled.commit, root])
            # Before the /usr/etc rename: paths as the commit has them, for the commit.
            treecommit.snapshot(root, pulled.commit)
            if (root / "usr/etc").is_dir() and not (root / "etc").exists():
                (root / "usr/etc").rename(root / "etc")
        state = _State(env=dict(parsed.args) if parsed is not None else {})
        state.labels = {
            k: v
            for k, v in base_labels.items()
            if not k.startswith("ostree.") and k != "containers.bootc"
        }
        shims = ShimServer(root, work / "shims")
        for tool, handler in _handlers(root, opts, shims).items():
            shims.add(tool, handler)
        if recipe is not None:
            with step(f"Applying the blueprint {recipe.name}"), shims.serving():
                blueprint.apply(
                    recipe, root, install=lambda pkgs: install_packages(root, pkgs, opts, shims)
                )
        for s in parsed.steps if parsed is not None else ():
            _apply(s, root, opts, state, shims)
        with step("Cleaning up and linting the result"):
            _finish(root)
        commit = _commit(repo_path, root, pulled.base_commit, repo, state)
    state.labels.update(opts.labels)
    base_source = OstreeImageReference(SignatureMode.UNVERIFIED, base_ref)

    # A kept base layer the destination lacks is copied from the base image as it is.
    # For a registry that is done only if the push needs it: the registry has the base's
    # layers already where the base came from it (skopeo then mounts or skips them).
    deferred: list[tuple[Blob, Path]] = []

    def fetch_blob(blob: Blob, target: Path) -> None:
        if opts.dest.transport is Transport.REGISTRY:
            deferred.append((blob, target))
        else:
            copy_base_blob(blob, target)

    def complete() -> bool:
        missing = [(b, t) for b, t in deferred if not t.exists()]
        deferred.clear()
        if missing:
            logger.info("the registry lacks base layers: copying them from the base image")
        for blob, target in missing:
            copy_base_blob(blob, target)
        return bool(missing)

    def copy_base_blob(blob: Blob, target: Path) -> None:
        with (
            step(f"Copying the base layer {blob.digest[:19]}"),
            open_source(base_source, opts.registry) as src,
            src.open_blob(blob.digest, blob.size) as f,
        ):
            reader = DigestReader(f, blob.digest, blob.size)
            tmp = target.with_name(f".tmp-{target.name}")
            try:
                with tmp.open("wb") as out:
                    while chunk := reader.read(1 << 20):
                        out.write(chunk)
                reader.verify()
                tmp.chmod(0o644)
                tmp.rename(target)
            finally:
                tmp.unlink(missing_ok=True)

    enc = EncapsulateOptions(
        max_layers=opts.max_layers,
        previous=previous,
        labels={k: v for k, v in state.labels.items()},
        cmd=_config_cmd(state),
        reuse=_reusable_layers(repo, base_image, pulled.base_commit),
        fetch_blob=fetch_blob,
    )
    with staged(opts.dest, opts.registry, complete=complete) as target:
        return encapsulate(repo, commit, target.layout, target.tag, enc)


def _reusable_layers(repo: Repo, image: Image, base_commit: str) -> list[ReusableLayer]:
    """The base image's chunk layers with what they hold (from their layer refs)."""
    count = ostree_layer_count(image)
    layers = list(image.manifest.get("layers", []))
    diff_ids = list(image.config.get("rootfs", {}).get("diff_ids", []))
    paths: dict[str, list[str]] = {}
    for entry in repo.iter_tree(repo.commit(base_commit)):
        if entry.kind == "file" and not entry.path.startswith("sysroot/"):
            paths.setdefault(entry.checksum, []).append(entry.path)
    out = []
    for i in range(1, count):
        layer = layers[i]
        names = (layer.get("annotations") or {}).get(COMPONENTS_ANNOTATION)
        objset = store.resolve_ref(repo, store.layer_ref(layer["digest"]))
        if names is None or objset is None or i >= len(diff_ids):
            continue
        objects = frozenset(name for name, _ in repo.dirtree(repo.commit(objset).root_tree).files)
        out.append(
            ReusableLayer(
                components=tuple(sorted(c for c in names.split(",") if c)),
                blob=Blob(layer["digest"], int(layer["size"]), layer["mediaType"], diff_ids[i]),
                objects=objects,
                paths={o: tuple(sorted(paths.get(o, []))) for o in objects},
            )
        )
    return out


def _config_cmd(state: _State) -> list[str] | None:
    return (state.entrypoint or []) + (state.cmd or []) or None


def _check_secrets(parsed: cf.Containerfile, secrets: Mapping[str, Path]) -> None:
    for s in parsed.steps:
        if isinstance(s, cf.Run):
            for m in s.secrets:
                if m.id in secrets:
                    continue
                if m.required:
                    raise UserError(
                        f"Containerfile:{s.line}: RUN needs the secret {m.id!r}",
                        hint=f"pass --secret id={m.id},src=FILE",
                    )
                logger.warning(
                    "Containerfile:%d: no --secret id=%s given; the step runs without it",
                    s.line,
                    m.id,
                )
    for sid, path in secrets.items():
        if not path.is_file():
            raise UserError(f"--secret {sid}: {path} is not a file")


def _apply(s: object, root: Path, opts: BuildOptions, state: _State, shims: ShimServer) -> None:
    if isinstance(s, cf.Env):
        for k, v in s.values:
            state.env[k] = v
            state.env_config[k] = v
    elif isinstance(s, cf.Label):
        state.labels.update(dict(s.values))
    elif isinstance(s, cf.Workdir):
        path = s.path if s.path.startswith("/") else f"{state.workdir.rstrip('/')}/{s.path}"
        state.workdir = path
        resolve_in_root(root, path).mkdir(parents=True, exist_ok=True)
    elif isinstance(s, cf.Cmd):
        if s.entrypoint:
            state.entrypoint = list(s.argv)
        else:
            state.cmd = list(s.argv)
    elif isinstance(s, cf.Copy):
        what = "ADD" if s.add else "COPY"
        with step(f"{what} {' '.join(s.sources)} {s.dest}"):
            dest = s.dest if s.dest.startswith("/") else f"{state.workdir.rstrip('/')}/{s.dest}"
            sources = context_sources(opts.context, s.sources)
            copy_into(root, sources, dest, chown=s.chown, chmod=s.chmod, unpack=s.add)
    elif isinstance(s, cf.Run):
        _run(s, root, opts, state, shims)
    else:
        raise UserError(f"unsupported step {s!r}")


def _run(s: cf.Run, root: Path, opts: BuildOptions, state: _State, shims: ShimServer) -> None:
    env = dict(s.env) if s.env else dict(state.env)
    env.setdefault("HOME", "/root")
    env["PATH"] = f"{SHIM_BIN}:{env.get('PATH', DEFAULT_PATH)}"
    argv = list(s.argv) if s.argv is not None else ["/bin/sh", "-c", s.script or ""]
    mounts: list[Mount] = list(shims.mounts())
    for secret in s.secrets:
        src = opts.secrets.get(secret.id)
        if src is not None:
            mounts.append(Mount(src.resolve(), secret.target))
    for bind in s.binds:
        src = (opts.context / bind.source).resolve()
        ctx = opts.context.resolve()
        if src != ctx and ctx not in src.parents:
            raise UserError(f"Containerfile:{s.line}: bind mount source leaves the context")
        mounts.append(Mount(src, bind.target, readonly=bind.readonly))
    network = (s.network or opts.network) == "host"
    label = " ".join(argv[2:] if argv[:2] == ["/bin/sh", "-c"] else argv)
    with step(f"RUN {label[:70]}"), shims.serving():
        result = run_step(
            root,
            argv,
            env=env,
            workdir=state.workdir,
            mounts=mounts,
            network=network,
            stdin=s.stdin.encode() if s.stdin else None,
        )
    if result.exit_code != 0:
        raise UserError(
            f"Containerfile:{s.line}: RUN failed with exit code {result.exit_code}",
            hint="its output is above",
        )


def _handlers(image_root: Path, opts: BuildOptions, shims: ShimServer) -> dict[str, Handler]:
    from ocitree.build import systemd

    def systemctl(root: Path, argv: list[str], cwd: str) -> Reply:
        r = systemd.systemctl(root, argv)
        return Reply(r.exit_code, r.stdout, r.stderr)

    def ostree(root: Path, argv: list[str], cwd: str) -> Reply:
        commit_cleanup(root)
        return Reply(0)

    def rpm_ostree(root: Path, argv: list[str], cwd: str) -> Reply:
        args = [a for a in argv if not a.startswith("-")]
        if args[:1] == ["install"] or args[:2] == ["ex", "install"]:
            pkgs = args[1:] if args[0] == "install" else args[2:]
            return _install(root, pkgs, opts, shims)
        if args[:1] in (["cleanup"], ["refresh-md"]):
            return Reply(0)
        return Reply(
            1,
            stderr=f"rpm-ostree {' '.join(argv)}: not available in an image "
            "build (only 'install')\n",
        )

    def dnf(root: Path, argv: list[str], cwd: str) -> Reply:
        args = [a for a in argv if not a.startswith("-")]
        if args[:1] == ["install"]:
            return _install(root, args[1:], opts, shims)
        if args[:1] in (["clean"], ["makecache"]):
            return Reply(0)
        return Reply(1, stderr=f"dnf {' '.join(argv)}: only 'dnf install' is available\n")

    handlers: dict[str, Handler] = {
        "systemctl": systemctl,
        "ostree": ostree,
        "rpm-ostree": rpm_ostree,
    }
    if not any((image_root / d / "dnf").exists() for d in ("usr/bin", "bin")):
        # Only where the image has no dnf of its own.
        handlers["dnf"] = dnf
        handlers["yum"] = dnf
    return handlers


def _install(root: Path, packages: list[str], opts: BuildOptions, shims: ShimServer) -> Reply:
    if not packages:
        return Reply(1, stderr="install: no packages named\n")
    installed = install_packages(root, packages, opts, shims)
    return Reply(0, stdout="".join(f"Installed: {n}\n" for n in installed))


def install_packages(
    root: Path, packages: Sequence[str], opts: BuildOptions, shims: ShimServer
) -> tuple[str, ...]:
    """Install ``packages`` (and what they need) into the build root: what serves
    ``rpm-ostree install`` and a blueprint's packages. The NEVRAs installed."""
    from ocitree.build import packages as engine

    def run_in_root(argv: Sequence[str]) -> int:
        # The image's own rpm, in a sandbox of the root, with the shims (its scriptlets
        # call systemctl).
        env = {"PATH": f"{SHIM_BIN}:{DEFAULT_PATH}", "HOME": "/root"}
        return run_step(root, list(argv), env=env, mounts=shims.mounts()).exit_code

    has_rpm = any((root / d / "rpm").exists() for d in ("usr/bin", "bin"))
    repos = engine.read_repo_files(root, extra=opts.extra_repos)

    def run_host(argv: Sequence[str]) -> subprocess.CompletedProcess[bytes]:
        # The host's rpm --root: scriptlets run chrooted with rpm's own PATH, so the
        # shims go over (or in place of) the image's binaries for the run.
        mounts = [m for m in shims.mounts() if m.target == SHIM_DIR]
        for tool in shims.handlers:
            if tool in ("dnf", "yum"):
                continue
            mounts.append(Mount(shims.dir / "bin" / tool, f"/usr/bin/{tool}"))
        return run_host_with_mounts(root, argv, mounts)

    result = engine.install(
        root,
        packages,
        repos=repos,
        cache=opts.cache_dir / "rpms",
        run_in_root=run_in_root if has_rpm else None,
        run_host=run_host,
    )
    return result.installed


def commit_cleanup(root: Path) -> None:
    """What ``ostree container commit`` does: empty /run, /tmp, /var/tmp, /var/cache.
    An empty /var/tmp or /var/cache goes too: systemd-tmpfiles makes them on a device,
    and libostree notes any /var/tmp of a commit it deploys."""
    for rel in CLEANED:
        d = root / rel
        if not d.is_dir() or d.is_symlink():
            continue
        for entry in d.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        if rel.startswith("var/"):
            d.rmdir()


def _finish(root: Path) -> None:
    commit_cleanup(root)
    tidy_rpmdb(root)
    findings = lint(root)
    for f in findings:
        if not f.fatal:
            logger.warning("lint: %s", f)
    fatal = [f for f in findings if f.fatal]
    if fatal:
        raise UserError(
            f"the built tree fails {len(fatal)} lint check(s): " + "; ".join(str(f) for f in fatal),
            hint="fix the Containerfile steps that made these paths",
        )
    if (root / "etc").is_dir():
        (root / "etc").rename(root / "usr/etc")


def _commit(repo_path: Path, root: Path, base: str, repo: Repo, state: _State) -> str:
    """Commit the root on top of ``base``: incrementally (:mod:`ocitree.build.treecommit`,
    only what changed since the checkout is read) where it can, otherwise with ``ostree
    commit`` of the whole root; both give the same commit."""
    meta = repo.commit(base).metadata
    version = state.labels.get("org.opencontainers.image.version") or meta.get("version")
    timestamp = int(os.environ.get("SOURCE_DATE_EPOCH", datetime.now(UTC).timestamp()))
    subject = f"ocitree build on {base[:12]}"
    strings: list[tuple[str, str]] = []  # --add-metadata-string
    variants: list[tuple[str, str]] = []  # --add-metadata (GVariant text)
    if version:
        strings.append(("version", version))
    if isinstance(meta.get("ostree.linux"), str):
        strings.append(("ostree.linux", meta["ostree.linux"]))
    if meta.get("ostree.bootable") is True:
        variants.append(("ostree.bootable", "true"))
    if "rpmostree.rpmdb.pkglist" in meta:
        # rpm-ostree keeps the package list in the commit; keep it true to the new rpmdb.
        variants.append(("rpmostree.rpmdb.pkglist", pkglist_variant(root)))
    # With a policy ostree labels every file anew: only the full commit does that.
    selinux = (root / "usr/etc/selinux/config").exists()
    with step("Committing the result"):
        if not selinux:
            checksum = treecommit.commit(
                repo,
                root,
                parent=base,
                subject=subject,
                timestamp=timestamp,
                metadata=treecommit.metadata_variant(strings, variants),
            )
            if checksum is not None:
                return checksum
        return commit_directory(
            repo_path,
            root,
            subject=subject,
            timestamp=timestamp,
            parent=base,
            strings=strings,
            variants=variants,
        )
