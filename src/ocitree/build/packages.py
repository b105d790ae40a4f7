"""Package layering for ``ocitree build``: what serves ``rpm-ostree install PKG…``.

1. The repositories come from the build root's ``/etc/yum.repos.d`` and ``--repo``
   (:mod:`ocitree.build.rpmrepo`); their metadata is fetched with the TLS client
   certificates the repo files name and cached by checksum.
2. The installed set is the root's rpmdb (``usr/share/rpm``, ``usr/lib/sysimage/rpm``,
   ``var/lib/rpm``), read with the rpm Python bindings from a copy of the database and
   fed to libsolv solvable by solvable (the ``solv`` binding has no reader for an image's
   sqlite rpmdb). libsolv resolves the request against it and the repositories.
3. The chosen packages are downloaded and checked against the repo metadata's checksums,
   and, where the repo says ``gpgcheck=1``, against the keys its ``gpgkey=`` names
   (``rpmkeys`` with a throwaway keyring).
4. The image's own ``rpm`` runs the transaction inside the build root (so the rpmdb keeps
   the image's format, and scriptlets run in the build's sandbox with its offline
   ``systemctl``); only where the image has no rpm does the host's ``rpm --root`` do it.
"""

from __future__ import annotations

import fnmatch
import importlib
import os
import re
import shutil
import sqlite3
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ocitree.build.rpmrepo import (
    RepoConfig,
    RepoMetadata,
    host_arch,
    load_repo,
    read_repo_files,
)
from ocitree.errors import UserError
from ocitree.log import logger
from ocitree.run import find_tool, run

__all__ = [
    "InstallResult",
    "InstalledPackage",
    "RepoConfig",
    "find_rpmdb",
    "install",
    "pkglist_variant",
    "read_installed",
    "read_repo_files",
    "tidy_rpmdb",
]

# Where images keep their rpmdb, in the order rpm-ostree/Fedora/RHEL/Debian's rpm use them.
RPMDB_DIRS = ("usr/share/rpm", "usr/lib/sysimage/rpm", "var/lib/rpm", "root/.rpmdb")
_DB_FILES = {"rpmdb.sqlite": "sqlite", "Packages.db": "ndb", "Packages": "bdb"}
# Debian's rpm says this on every install; it is not a warning about the packages.
_DEBIAN_RPM_NOTICE = ("RPM should not be used directly", "However assuming you know what")
STAGING_DIR = "var/tmp/ocitree-rpms"  # inside the root, while rpm runs
_RPMSENSE_LESS = 1 << 1
_RPMSENSE_GREATER = 1 << 2
_RPMSENSE_EQUAL = 1 << 3
# libsolv's relation flags
_REL_GT, _REL_EQ, _REL_LT = 1, 2, 4

Dep = tuple[str, int, str]  # name, rpm sense flags, version


@dataclass(frozen=True)
class InstallResult:
    installed: tuple[str, ...]  # NEVRAs of the packages the transaction added, sorted


@dataclass(frozen=True)
class InstalledPackage:
    """What libsolv needs of an installed package (from its rpmdb header)."""

    name: str
    epoch: int | None
    version: str
    release: str
    arch: str
    provides: tuple[Dep, ...]
    requires: tuple[Dep, ...]
    conflicts: tuple[Dep, ...]
    obsoletes: tuple[Dep, ...]
    files: tuple[str, ...]

    @property
    def evr(self) -> str:
        e = f"{self.epoch}:" if self.epoch else ""
        return f"{e}{self.version}-{self.release}"

    @property
    def nevra(self) -> str:
        return f"{self.name}-{self.evr}.{self.arch}"


# --------------------------------------------------------------------------- rpmdb


def find_rpmdb(root: Path) -> tuple[str, str] | None:
    """``("/usr/share/rpm", "sqlite")``: the root's rpmdb directory and backend, if any.

    A symlinked directory (``var/lib/rpm -> ../../usr/share/rpm``) is skipped: its target
    is found under its own name, and an absolute link would lead out of the root.
    """
    for rel in RPMDB_DIRS:
        d = root / rel
        if d.is_symlink() or not d.is_dir() or _leaves_root(root, rel):
            continue
        for fname, backend in _DB_FILES.items():
            if (d / fname).is_file():
                return "/" + rel, backend
    return None


def _leaves_root(root: Path, rel: str) -> bool:
    p = root
    for part in Path(rel).parts[:-1]:
        p = p / part
        if p.is_symlink():
            return True
    return False


def _text(v: object) -> str:
    return v.decode("utf-8", "surrogateescape") if isinstance(v, bytes) else str(v)


def _deps(hdr: Any, names: int, flags: int, versions: int) -> tuple[Dep, ...]:
    n = hdr[names] or []
    f = hdr[flags] or []
    v = hdr[versions] or []
    out = []
    for i, name in enumerate(n):
        out.append((_text(name), int(f[i]) if i < len(f) else 0, _text(v[i]) if i < len(v) else ""))
    return tuple(out)


def read_installed(root: Path) -> list[InstalledPackage]:
    """The packages of the root's rpmdb (none if it has none), read from a copy of it."""
    found = find_rpmdb(root)
    if found is None:
        return []
    dbdir = found[0]
    try:
        import rpm
    except ImportError as e:
        raise UserError(
            "the rpm Python module is missing: it reads the image's rpmdb",
            hint="install python3-rpm (make deps does it on Debian)",
        ) from e
    src = root / dbdir.lstrip("/")
    with tempfile.TemporaryDirectory(prefix="ocitree-rpmdb-") as tmp:
        dest = Path(tmp) / dbdir.lstrip("/")
        dest.mkdir(parents=True)
        for f in src.iterdir():
            if f.is_file() and not f.is_symlink() and not f.name.startswith("__db"):
                shutil.copy2(f, dest / f.name)
        rpm.addMacro("_dbpath", dbdir)
        try:
            ts = rpm.TransactionSet(tmp)
            ts.setVSFlags(-1)
            out = []
            for hdr in ts.dbMatch():
                name = _text(hdr[rpm.RPMTAG_NAME])
                if name == "gpg-pubkey":
                    continue
                epoch = hdr[rpm.RPMTAG_EPOCH]
                out.append(
                    InstalledPackage(
                        name=name,
                        epoch=int(epoch) if epoch is not None else None,
                        version=_text(hdr[rpm.RPMTAG_VERSION]),
                        release=_text(hdr[rpm.RPMTAG_RELEASE]),
                        arch=_text(hdr[rpm.RPMTAG_ARCH] or "noarch"),
                        provides=_deps(
                            hdr,
                            rpm.RPMTAG_PROVIDENAME,
                            rpm.RPMTAG_PROVIDEFLAGS,
                            rpm.RPMTAG_PROVIDEVERSION,
                        ),
                        requires=_deps(
                            hdr,
                            rpm.RPMTAG_REQUIRENAME,
                            rpm.RPMTAG_REQUIREFLAGS,
                            rpm.RPMTAG_REQUIREVERSION,
                        ),
                        conflicts=_deps(
                            hdr,
                            rpm.RPMTAG_CONFLICTNAME,
                            rpm.RPMTAG_CONFLICTFLAGS,
                            rpm.RPMTAG_CONFLICTVERSION,
                        ),
                        obsoletes=_deps(
                            hdr,
                            rpm.RPMTAG_OBSOLETENAME,
                            rpm.RPMTAG_OBSOLETEFLAGS,
                            rpm.RPMTAG_OBSOLETEVERSION,
                        ),
                        files=tuple(_text(f) for f in hdr[rpm.RPMTAG_FILENAMES] or []),
                    )
                )
            ts.closeDB()
        except rpm.error as e:
            raise UserError(f"cannot read the image's rpmdb in {dbdir}: {e}") from e
        finally:
            rpm.delMacro("_dbpath")
    return sorted(out, key=lambda p: p.nevra)


# --------------------------------------------------------------------------- libsolv


def _solv() -> Any:
    try:
        # The binding has no type information: through import_module it is a ModuleType,
        # whose attributes are Any, with no mypy override needed.
        solv = importlib.import_module("solv")
    except ImportError as e:
        raise UserError(
            "the libsolv Python binding (solv) is missing: it resolves package dependencies",
            hint="pip install solv (make deps installs it)",
        ) from e
    return solv


def _solv_dep(pool: Any, dep: Dep) -> Any:
    name, flags, version = dep
    if name.startswith("("):
        return pool.parserpmrichdep(name)  # None if it cannot be parsed
    d = pool.Dep(name)
    rel = (
        (_REL_GT if flags & _RPMSENSE_GREATER else 0)
        | (_REL_EQ if flags & _RPMSENSE_EQUAL else 0)
        | (_REL_LT if flags & _RPMSENSE_LESS else 0)
    )
    if rel and version:
        d = d.Rel(rel, pool.Dep(version))
    return d


def _add_installed(pool: Any, packages: Iterable[InstalledPackage]) -> Any:
    repo = pool.add_repo("@System")
    for p in packages:
        s = repo.add_solvable()
        s.name = p.name
        s.evr = p.evr
        s.arch = p.arch
        for add, deps in (
            (s.add_provides, p.provides),
            (s.add_requires, [d for d in p.requires if not d[0].startswith("rpmlib(")]),
            (s.add_conflicts, p.conflicts),
            (s.add_obsoletes, p.obsoletes),
        ):
            for dep in deps:
                d = _solv_dep(pool, dep)
                if d is not None:
                    add(d)
        for f in p.files:
            s.add_provides(pool.Dep(f))
    repo.internalize()
    pool.installed = repo
    return repo


@dataclass(frozen=True)
class Chosen:
    """A package the solver picked, and where to get it (plain data: the pool is gone)."""

    nevra: str
    location: str  # relative to base or the repo's baseurl
    base: str | None  # xml:base of the package, if the metadata gives one
    checksum: tuple[str, str] | None  # (type, hex)
    meta: RepoMetadata
    buildtime: int = 0  # seconds since the epoch, from the repo metadata


@dataclass
class _Loaded:
    meta: RepoMetadata
    repo: Any  # solv.Repo
    filelists: bool = False


def _load_rpmmd(solv: Any, pool: Any, repo: Any, path: Path, flags: int, what: str) -> None:
    fp = solv.xfopen(str(path))
    if fp is None:
        raise UserError(f"cannot open {path}")
    try:
        if not repo.add_rpmmd(fp, None, flags):
            raise UserError(f"libsolv cannot read the {what}: {pool.errstr}")
    finally:
        fp.close()


def _load_filelists(solv: Any, pool: Any, loaded: Sequence[_Loaded]) -> bool:
    """Add the filelists of every repo not yet extended; True if any was added."""
    added = False
    for entry in loaded:
        if entry.filelists:
            continue
        entry.filelists = True
        path = entry.meta.data_file("filelists")
        if path is None:
            continue
        _load_rpmmd(
            solv,
            pool,
            entry.repo,
            path,
            solv.Repo.REPO_EXTEND_SOLVABLES,
            f"filelists of repository {entry.meta.config.id}",
        )
        added = True
    if added:
        pool.addfileprovides()
        pool.createwhatprovides()
    return added


def _problems_text(problems: Sequence[Any]) -> list[str]:
    out: list[str] = []
    for problem in problems:
        rules = problem.findallproblemrules() or [problem.findproblemrule()]
        texts = []
        for rule in rules:
            for info in rule.allinfos():
                texts.append(info.problemstr())
        # The "nothing provides X needed by Y" rules say what is missing: put them first.
        texts.sort(key=lambda t: (not t.startswith("nothing provides"), t))
        for t in texts or [str(problem)]:
            if t not in out:
                out.append(t)
    return out


def _select(solv: Any, pool: Any, spec: str) -> Any:
    sel_flags = (
        solv.Selection.SELECTION_NAME
        | solv.Selection.SELECTION_PROVIDES
        | solv.Selection.SELECTION_CANON
        | solv.Selection.SELECTION_DOTARCH
        | solv.Selection.SELECTION_REL
    )
    if spec.startswith("/"):
        sel_flags |= solv.Selection.SELECTION_FILELIST
    return pool.select(spec, sel_flags)


_GLOB_SPEC = re.compile(r"(?P<name>[^\s=<>]+)\s*=\s*(?P<glob>\S*[*?\[]\S*)")


def _glob_matches(s: Any, pattern: str) -> bool:
    """Whether ``pattern`` (of ``name = 1.2.*``) matches the version, version-release or
    epoch:version-release of the solvable ``s``."""
    vr = s.evr.split(":", 1)[-1]
    return any(fnmatch.fnmatchcase(v, pattern) for v in (vr.rsplit("-", 1)[0], vr, s.evr))


def _select_glob(solv: Any, pool: Any, name: str, pattern: str) -> tuple[Any, list[str]]:
    """Packages ``name`` whose version (or version-release) matches ``pattern``; the
    selection and the versions there are, for a message when none matches."""
    candidates = [s for s in pool.select(name, solv.Selection.SELECTION_NAME).solvables()]
    matching = [s for s in candidates if _glob_matches(s, pattern)]
    sel = pool.Selection()
    if matching:
        sel.add_raw(solv.Job.SOLVER_SOLVABLE_ONE_OF, pool.towhatprovides([s.id for s in matching]))
    return sel, sorted({s.evr for s in candidates})


def resolve(
    root: Path,
    packages: Sequence[str],
    *,
    repos: Sequence[RepoConfig],
    cache: Path,
    installed: Sequence[InstalledPackage] | None = None,
    exclude: Sequence[str] = (),
) -> list[Chosen]:
    """The packages to add for ``packages``, sorted by NEVRA (empty: nothing to do).
    Packages named in ``exclude`` are never installed (a distro's excludes)."""
    solv = _solv()
    enabled = [r for r in repos if r.enabled]
    ids = ", ".join(r.id for r in enabled) or "none"
    pool = solv.Pool()
    pool.setdisttype(solv.Pool.DISTTYPE_RPM)
    pool.setarch(host_arch())
    _add_installed(pool, read_installed(root) if installed is None else installed)
    loaded: list[_Loaded] = []
    for cfg in enabled:
        meta = load_repo(cfg, cache)
        primary = meta.data_file("primary")
        assert primary is not None  # parse_repomd demands it
        srepo = pool.add_repo(cfg.id)
        srepo.priority = -cfg.priority  # dnf: lower is preferred; libsolv: higher
        _load_rpmmd(solv, pool, srepo, primary, 0, f"metadata of repository {cfg.id}")
        srepo.internalize()
        loaded.append(_Loaded(meta, srepo))
    pool.addfileprovides()
    pool.createwhatprovides()

    jobs = []
    for spec in packages:
        glob = _GLOB_SPEC.fullmatch(spec)
        if glob:
            sel, versions = _select_glob(solv, pool, glob["name"], glob["glob"])
            if sel.isempty() and versions:
                raise UserError(
                    f"no version of {glob['name']} matches {glob['glob']} in the enabled "
                    f"repositories (repo ids: {ids}); there are: {', '.join(versions)}",
                    hint="change the version glob",
                )
            spec = glob["name"]
        else:
            sel = _select(solv, pool, spec)
        if sel.isempty() and spec.startswith("/") and _load_filelists(solv, pool, loaded):
            sel = _select(solv, pool, spec)
        if sel.isempty():
            disabled = [r.id for r in repos if not r.enabled]
            if not enabled:
                hint = "no repository is enabled: add a .repo file to /etc/yum.repos.d "
                hint += "(or give --repo)"
            else:
                hint = "check the name, or add the repository that has it to "
                hint += "/etc/yum.repos.d (or --repo)"
            if disabled:
                hint += f"; disabled repositories (enabled=0): {', '.join(disabled)}"
            raise UserError(
                f"no package named {spec} in the enabled repositories (repo ids: {ids})",
                hint=hint,
            )
        jobs += sel.jobs(solv.Job.SOLVER_INSTALL)

    for name in exclude:
        # an erase job for a package that is not installed keeps it from being installed
        jobs += pool.select(name, solv.Selection.SELECTION_NAME).jobs(solv.Job.SOLVER_ERASE)
    solver = pool.Solver()
    problems = solver.solve(jobs)
    if problems and _load_filelists(solv, pool, loaded):
        # A file dependency may be provided by a file that only filelists.xml lists.
        solver = pool.Solver()
        problems = solver.solve(jobs)
    if problems:
        texts = _problems_text(problems)
        missing = any(t.startswith("nothing provides") for t in texts)
        raise UserError(
            f"cannot install {' '.join(packages)}: " + "; ".join(texts),
            hint=f"the enabled repositories ({ids}) lack what is missing: enable the "
            "repository that provides it"
            if missing
            else "the request cannot be combined with the packages the image has",
        )
    by_id = {entry.repo.name: entry.meta for entry in loaded}
    out = []
    for s in solver.transaction().newsolvables():
        meta = by_id[s.repo.name]
        location, _ = s.lookup_location()
        if not location:
            raise UserError(f"{s.str()} has no location in repository {meta.config.id}")
        chk = s.lookup_checksum(solv.SOLVABLE_CHECKSUM)
        out.append(
            Chosen(
                nevra=s.str(),
                location=location,
                base=s.lookup_str(solv.SOLVABLE_MEDIABASE) or None,
                checksum=(chk.typestr(), chk.hex()) if chk is not None else None,
                meta=meta,
                buildtime=s.lookup_num(solv.SOLVABLE_BUILDTIME),
            )
        )
    # The solvables point into the pool, which must outlive them: keep it to here.
    del solver, pool
    return sorted(out, key=lambda c: c.nevra)


# --------------------------------------------------------------------------- downloads


def _download(chosen: Sequence[Chosen], cache: Path) -> list[Path]:
    out = []
    for c in chosen:
        logger.info("  downloading %s", c.nevra)
        out.append(c.meta.package(c.location, c.base, c.checksum, cache))
    return out


_ARMORED_KEY = re.compile(
    rb"-----BEGIN PGP PUBLIC KEY BLOCK-----.*?-----END PGP PUBLIC KEY BLOCK-----", re.S
)


def _fetch_keys(meta: RepoMetadata, workdir: Path) -> list[Path]:
    cfg = meta.config
    if not cfg.gpgkey:
        raise UserError(
            f"repository {cfg.id} has gpgcheck=1 but names no key (gpgkey=)",
            hint=f"add gpgkey=file:///etc/pki/rpm-gpg/… to [{cfg.id}] in {cfg.source}, "
            "with the key file in the image, or set gpgcheck=0",
        )
    keys = []
    for i, url in enumerate(cfg.gpgkey):
        raw = workdir / f"key-{i}"
        meta.fetcher.fetch(url, raw)
        data = raw.read_bytes()
        blocks = _ARMORED_KEY.findall(data)
        if not blocks and b"-----BEGIN" in data:
            raise UserError(f"{url} (gpgkey of repository {cfg.id}) holds no public key")
        for j, block in enumerate(blocks or [data]):
            path = workdir / f"key-{i}-{j}.asc"
            path.write_bytes(block + b"\n")
            keys.append(path)
    return keys


def _check_signatures(meta: RepoMetadata, files: Sequence[tuple[str, Path]]) -> None:
    """``rpmkeys -Kv`` with only the repo's keys imported: every package must be signed."""
    cfg = meta.config
    rpmkeys = find_tool("rpmkeys", package="rpm")
    with tempfile.TemporaryDirectory(prefix="ocitree-keys-") as tmp:
        work = Path(tmp)
        keyring = work / "root"
        keyring.mkdir()
        base = [rpmkeys, "--root", str(keyring), "--dbpath", "/rpmdb"]
        for key in _fetch_keys(meta, work):
            proc = run([*base, "--import", key], check=False)
            if proc.returncode != 0:
                last = (proc.stderr or b"").decode(errors="replace").strip().splitlines()
                raise UserError(
                    f"cannot import the gpgkey {key.name} of repository {cfg.id}: "
                    + (last[-1] if last else f"rpmkeys exit code {proc.returncode}"),
                )
        proc = run(
            [*base, "--define", "_pkgverify_level signature", "-Kv", *(p for _, p in files)],
            check=False,
        )
        report = _parse_checksig(proc.stdout.decode(errors="replace"))
        for nevra, path in files:
            lines = report.get(str(path), [])
            sigs = [ln for ln in lines if "ignature" in ln and not ln.endswith("NOTFOUND")]
            if not sigs:
                raise UserError(
                    f"{nevra} from repository {cfg.id} is not signed, and the repository has "
                    "gpgcheck=1",
                    hint=f"sign the package, or set gpgcheck=0 for [{cfg.id}] in {cfg.source} "
                    "if you trust the repository's transport",
                )
            bad = [ln for ln in lines if not ln.endswith(": OK") and not ln.endswith("NOTFOUND")]
            if bad or (proc.returncode != 0 and not lines):
                detail = "; ".join(bad) or "rpmkeys failed"
                nokey = any("NOKEY" in ln for ln in bad)
                raise UserError(
                    f"the signature of {nevra} from repository {cfg.id} does not verify: {detail}",
                    hint=(
                        f"its key is not among the gpgkey= keys of [{cfg.id}] ({cfg.source})"
                        if nokey
                        else "the package may have been tampered with"
                    ),
                )


def _parse_checksig(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if not line.strip():
            continue
        if not line[0].isspace() and line.endswith(":"):
            current = out.setdefault(line[:-1], [])
        elif current is not None:
            current.append(line.strip())
    return out


# --------------------------------------------------------------------------- install


def _image_has_rpm(root: Path) -> bool:
    return any(os.path.lexists(root / d / "rpm") for d in ("usr/bin", "bin"))


def _last_line(*texts: bytes | None) -> str:
    for t in texts:
        lines = [ln.strip() for ln in (t or b"").decode(errors="replace").splitlines()]
        errors = [ln for ln in lines if ln.startswith("error:") or "conflicts with" in ln]
        if errors:
            return errors[-1]
    for t in texts:
        lines = [ln.strip() for ln in (t or b"").decode(errors="replace").splitlines()]
        lines = [ln for ln in lines if ln]
        if lines:
            return lines[-1]
    return ""


def _run_in_image(
    root: Path,
    rpms: Sequence[Path],
    dbpath: str | None,
    run_in_root: Callable[[Sequence[str]], int],
) -> None:
    staging = root / STAGING_DIR
    created = [p for p in (staging, *staging.parents) if not os.path.lexists(p)]
    created = [p for p in created if p.is_relative_to(root) and p != root]
    staging.mkdir(parents=True, exist_ok=True)
    try:
        inside = []
        for p in rpms:
            shutil.copyfile(p, staging / p.name)
            inside.append(f"/{STAGING_DIR}/{p.name}")
        argv = ["rpm", *(["--dbpath", dbpath] if dbpath else []), "-Uvh", "--nosignature"]
        code = run_in_root([*argv, *inside])
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        for p in sorted(created, key=lambda p: len(p.parts), reverse=True):
            if p.is_dir() and not any(p.iterdir()):
                p.rmdir()
    if code != 0:
        raise UserError(
            f"the image's rpm failed to install the packages (exit code {code})",
            hint="rpm's messages above say why",
        )


HostRunner = Callable[[Sequence[str]], subprocess.CompletedProcess[bytes]]


def _run_on_host(
    root: Path,
    rpms: Sequence[Path],
    db: tuple[str, str] | None,
    run_host: HostRunner | None,
) -> None:
    dbpath, backend = db or ("/usr/share/rpm", "sqlite")
    if backend == "bdb":
        raise UserError(
            f"the image's rpmdb ({dbpath}) is Berkeley DB, which the host's rpm cannot write, "
            "and the image has no rpm of its own",
        )
    argv = [
        "rpm", "--root", str(root), "--dbpath", dbpath, "--define", f"_db_backend {backend}",
        "-Uvh", "--nosignature", *(str(p) for p in rpms),
    ]  # fmt: skip
    proc = (
        run_host(argv)
        if run_host is not None
        else run(argv, check=False, hint="rpm comes with Debian's rpm package")
    )
    for line in (proc.stdout or b"").decode(errors="replace").splitlines():
        logger.debug("rpm: %s", line)
    if proc.returncode != 0:
        raise UserError(
            f"rpm failed to install the packages (exit code {proc.returncode}): "
            + _last_line(proc.stderr, proc.stdout)
        )
    warnings = "\n".join(
        line
        for line in (proc.stderr or b"").decode(errors="replace").strip().splitlines()
        if not line.removeprefix("rpm: ").startswith(_DEBIAN_RPM_NOTICE)
    )
    if warnings:
        logger.warning("%s", warnings)


def install(
    root: Path,
    packages: Sequence[str],
    *,
    repos: Sequence[RepoConfig],
    cache: Path,
    run_in_root: Callable[[Sequence[str]], int] | None = None,
    run_host: HostRunner | None = None,
    exclude: Sequence[str] = (),
    chosen: Sequence[Chosen] | None = None,
) -> InstallResult:
    """Install ``packages`` (names, provides, ``name-version``…) and what they need.

    ``run_in_root(argv)`` runs a command inside the sandboxed build root and returns its
    exit code; with it, and where the image has an rpm, that rpm runs the transaction.
    Otherwise the host's ``rpm --root`` does, through ``run_host(argv)`` when given (the
    build engine runs it with the shims mounted into the root, so scriptlets get the
    offline systemctl). Packages already installed are left alone. ``chosen``: what
    :func:`resolve` chose for the request already (it is not resolved again).
    """
    if not packages:
        raise UserError("no packages named to install")
    root = root.resolve()
    cache = cache.resolve()
    cache.mkdir(parents=True, exist_ok=True)
    db = find_rpmdb(root)
    if chosen is None:
        chosen = resolve(root, packages, repos=repos, cache=cache, exclude=exclude)
    if not chosen:
        logger.info("%s: already installed, nothing to do", " ".join(packages))
        return InstallResult(())
    nevras = [c.nevra for c in chosen]
    logger.info("installing %s", " ".join(nevras))
    files = _download(chosen, cache)
    by_repo: dict[str, list[tuple[str, Path]]] = {}
    metas: dict[str, RepoMetadata] = {}
    for c, path in zip(chosen, files, strict=True):
        by_repo.setdefault(c.meta.config.id, []).append((c.nevra, path))
        metas[c.meta.config.id] = c.meta
    for repo_id, items in by_repo.items():
        if metas[repo_id].config.gpgcheck:
            _check_signatures(metas[repo_id], items)
    if run_in_root is not None and _image_has_rpm(root):
        _run_in_image(root, files, db[0] if db else None, run_in_root)
    else:
        _run_on_host(root, files, db, run_host)
    return InstallResult(tuple(nevras))


def pkglist_variant(root: Path) -> str:
    """The package list rpm-ostree keeps in a commit's ``rpmostree.rpmdb.pkglist``, as
    GVariant text for ``ostree commit --add-metadata``: ``a(sssss)`` of name, epoch (a
    string, "0" when unset), version, release, arch, sorted by name, version, arch."""
    pkgs = sorted(read_installed(root), key=lambda p: (p.name, p.version, p.release, p.arch))
    items = ", ".join(
        f"({_gv_str(p.name)}, {_gv_str(str(p.epoch or 0))}, {_gv_str(p.version)}, "
        f"{_gv_str(p.release)}, {_gv_str(p.arch)})"
        for p in pkgs
    )
    return f"@a(sssss) [{items}]"


def _gv_str(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


RPMDB_JOURNAL = ("rpmdb.sqlite-wal", "rpmdb.sqlite-shm", ".dbenv.lock")


def tidy_rpmdb(root: Path) -> None:
    """Fold the sqlite rpmdb's write-ahead log into the database, leave WAL mode (a
    reader of a WAL database must create ``-shm`` beside it, which a read-only /usr
    refuses) and drop the journal files. An image holds the database alone: those files
    differ with every transaction, and one new empty file changes the layer that holds
    the empty-file object. rpm's ``.rpm.lock`` stays: rpm cannot read a database on a
    read-only /usr without it."""
    found = find_rpmdb(root)
    if found is None:
        return
    directory = root / found[0].lstrip("/")
    sqlite = directory / "rpmdb.sqlite"
    if sqlite.is_file() and not sqlite.is_symlink():
        con = sqlite3.connect(sqlite)
        try:
            if con.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
                con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                con.execute("PRAGMA journal_mode=DELETE")
        finally:
            con.close()
    for junk in RPMDB_JOURNAL:
        path = directory / junk
        if path.is_file() or path.is_symlink():
            path.unlink()
