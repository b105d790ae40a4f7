"""Distributions ``ocitree compose`` knows: a small TOML each under ``distros/``.

A distro file names the OS (``os_id``, ``version_id``), the branch it is committed to
(``ref``, a template of ``{os_id}``, ``{major}``, ``{version_id}`` and ``{basearch}``;
osbuild's edge-commit ``{os_id}/{major}/{basearch}/edge`` unless it says otherwise),
the base package set every compose of it installs (osbuild's edge-commit or iot-commit
set: ``packages`` for every architecture, ``[packages_arch]`` for one, ``exclude`` for
the packages that must not be installed), and its repositories as the text of a
``.repo`` file (``$basearch``, ``$releasever`` expanded; ``$ocitree_keys`` is the
``file://`` URL of the distros' signing keys shipped with ocitree, ``distros/keys/``, so
that ``gpgkey=`` does not depend on the build host's ``/etc/pki/rpm-gpg``).
``rhsm = true`` marks Red Hat's CDN, which wants the host's entitlement certificate: the
first ``/etc/pki/entitlement/*-key.pem`` pair and Red Hat's CA are added to every
repository. ``--rpm-repo`` and ``--repo-file`` replace the distro's repositories
(air-gapped mirrors, test repositories).
"""

from __future__ import annotations

import atexit
import dataclasses
import functools
import re
import shutil
import tempfile
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from ocitree.build.rpmrepo import (
    RepoConfig,
    parse_repo_text,
    repo_from_argument,
    repo_variables,
)
from ocitree.errors import UserError

ENTITLEMENT_DIR = Path("/etc/pki/entitlement")
RHSM_CA = Path("/etc/rhsm/ca/redhat-uep.pem")
DEFAULT_REF = "{os_id}/{major}/{basearch}/edge"
_KEYS = {
    "name",
    "aliases",
    "os_id",
    "version_id",
    "ref",
    "rhsm",
    "packages",
    "packages_arch",
    "exclude",
    "repos",
}


@dataclass(frozen=True)
class Distro:
    name: str
    os_id: str
    version_id: str
    packages: tuple[str, ...]
    """The packages of every architecture; :meth:`packages_for` adds the arch's own."""
    repos_text: str
    rhsm: bool = False
    aliases: tuple[str, ...] = ()
    packages_arch: tuple[tuple[str, tuple[str, ...]], ...] = ()
    """``(basearch, packages)`` pairs: bootloader, shim, firmware of that architecture."""
    exclude: tuple[str, ...] = ()
    """Packages the resolver must not pick, not even as a dependency."""
    ref: str = DEFAULT_REF

    @property
    def major(self) -> str:
        return self.version_id.split(".")[0]

    @property
    def arches(self) -> tuple[str, ...]:
        """The architectures with their own packages (any, when there are none)."""
        return tuple(arch for arch, _ in self.packages_arch)

    def packages_for(self, basearch: str) -> tuple[str, ...]:
        """The base package set on ``basearch``: ``packages`` and the arch's own."""
        own = dict(self.packages_arch)
        if own and basearch not in own:
            raise UserError(
                f"distro {self.name} is not composed for {basearch}",
                hint=f"its architectures: {', '.join(own)}",
            )
        return tuple(dict.fromkeys((*self.packages, *own.get(basearch, ()))))

    def default_ref(self, basearch: str) -> str:
        """``rhel/8/x86_64/edge`` (edge-commit), ``fedora/40/x86_64/iot`` (iot-commit)."""
        return _format_ref(self.ref, self, basearch)

    def repos(self, basearch: str) -> list[RepoConfig]:
        variables = repo_variables(releasever=self.version_id, basearch=basearch)
        if "$ocitree_keys" in self.repos_text or "${ocitree_keys}" in self.repos_text:
            variables["ocitree_keys"] = keys_dir().as_uri()
        repos = parse_repo_text(self.repos_text, f"distro {self.name}", variables)
        if self.rhsm and repos:
            repos = [_entitled(r, self.name) for r in repos]
        return repos


def _format_ref(template: str, distro: Distro, basearch: str) -> str:
    return template.format(
        os_id=distro.os_id, major=distro.major, version_id=distro.version_id, basearch=basearch
    )


@functools.cache
def keys_dir() -> Path:
    """The directory of the distros' signing keys (``$ocitree_keys``), a real one."""
    base = resources.files("ocitree.compose") / "distros" / "keys"
    if isinstance(base, Path):
        return base
    # not a plain directory (a zip): a copy that lives as long as the process
    tmp = Path(tempfile.mkdtemp(prefix="ocitree-keys-"))
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    for f in base.iterdir():
        if f.name.endswith(".asc"):
            (tmp / f.name).write_bytes(f.read_bytes())
    return tmp


def _entitled(repo: RepoConfig, distro: str) -> RepoConfig:
    keys = sorted(ENTITLEMENT_DIR.glob("*-key.pem"))
    if not keys:
        raise UserError(
            f"the repositories of {distro} (Red Hat's CDN) need an entitlement certificate, "
            f"and {ENTITLEMENT_DIR} has none",
            hint="register this host with subscription-manager, or give the repositories "
            "with --rpm-repo URL|DIR or --repo-file FILE",
        )
    key = keys[0]
    cert = key.with_name(key.name.removesuffix("-key.pem") + ".pem")
    return dataclasses.replace(
        repo,
        sslclientcert=str(cert),
        sslclientkey=str(key),
        sslcacert=str(RHSM_CA) if RHSM_CA.is_file() else repo.sslcacert,
    )


def _files() -> list[tuple[str, str]]:
    base = resources.files("ocitree.compose") / "distros"
    return sorted(
        (f.name, f.read_text(encoding="utf-8")) for f in base.iterdir() if f.name.endswith(".toml")
    )


def _strings(value: Any, what: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"{what} must be a list of package names")
    return tuple(value)


def _parse(filename: str, text: str) -> Distro:
    data = tomllib.loads(text)
    unknown = set(data) - _KEYS
    if unknown:
        raise ValueError(f"{filename}: unknown keys {sorted(unknown)}")
    by_arch = data.get("packages_arch", {})
    if not isinstance(by_arch, dict):
        raise ValueError(f"{filename}: packages_arch must be a table of basearch = [...]")
    found = Distro(
        name=data["name"],
        os_id=data["os_id"],
        version_id=data["version_id"],
        packages=_strings(data.get("packages", []), f"{filename}: packages"),
        repos_text=data.get("repos", ""),
        rhsm=bool(data.get("rhsm", False)),
        aliases=tuple(data.get("aliases", ())),
        packages_arch=tuple(
            (arch, _strings(names, f"{filename}: packages_arch.{arch}"))
            for arch, names in by_arch.items()
        ),
        exclude=_strings(data.get("exclude", []), f"{filename}: exclude"),
        ref=data.get("ref", DEFAULT_REF),
    )
    try:
        _format_ref(found.ref, found, "x86_64")
    except (KeyError, IndexError, ValueError) as e:
        raise ValueError(f"{filename}: ref {found.ref!r} is not a valid template: {e!r}") from e
    return found


def names() -> list[str]:
    """The names of the distros of the package data (their files' names; not parsed)."""
    base = resources.files("ocitree.compose") / "distros"
    return sorted(f.name.removesuffix(".toml") for f in base.iterdir() if f.name.endswith(".toml"))


def known() -> list[Distro]:
    """Every distro of the package data, by name."""
    return [_parse(name, text) for name, text in _files()]


def _normal(name: str) -> str:
    # osbuild writes both "rhel-87" and "rhel-8.7"
    return re.sub(r"[-._]", "", name.lower())


def find(name: str) -> Distro:
    """The distro ``name`` (or one of its aliases, ``rhel-87`` for ``rhel-8.7``)."""
    distros = known()
    for d in distros:
        if _normal(name) in {_normal(n) for n in (d.name, *d.aliases)}:
            return d
    raise UserError(
        f"unknown distro {name!r}",
        hint=f"known: {', '.join(d.name for d in distros)}",
    )


def repositories(
    distro: Distro, basearch: str, *, rpm_repos: Sequence[str], repo_files: Sequence[Path]
) -> list[RepoConfig]:
    """The distro's repositories, or those of ``--rpm-repo`` and ``--repo-file`` instead."""
    if not rpm_repos and not repo_files:
        repos = distro.repos(basearch)
        if not repos:
            raise UserError(
                f"distro {distro.name} has no published repositories",
                hint="give them with --rpm-repo URL|DIR or --repo-file FILE",
            )
        return repos
    variables = repo_variables(releasever=distro.version_id, basearch=basearch)
    repos = [repo_from_argument(v, i, option="--rpm-repo") for i, v in enumerate(rpm_repos, 1)]
    for path in repo_files:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(f"cannot read repo file {path}: {e}") from e
        repos += parse_repo_text(text, str(path), variables)
    ids = [r.id for r in repos]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise UserError(f"repository id {dup[0]} is given twice")
    return repos
