"""Distributions ``ocitree compose`` knows: a small TOML each under ``distros/``.

A distro file names the OS (``os_id``, ``version_id``: the default ref
``<os_id>/<major>/<arch>/edge``), the base package set every compose of it installs
(osbuild's edge-commit set), and its repositories as the text of a ``.repo`` file
(``$basearch``, ``$releasever`` expanded). ``rhsm = true`` marks Red Hat's CDN, which
wants the host's entitlement certificate: the first ``/etc/pki/entitlement/*-key.pem``
pair and Red Hat's CA are added to every repository. ``--rpm-repo`` and ``--repo-file``
replace the distro's repositories (air-gapped mirrors, test repositories).
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ocitree.build.rpmrepo import (
    RepoConfig,
    parse_repo_text,
    repo_from_argument,
    repo_variables,
)
from ocitree.errors import UserError

ENTITLEMENT_DIR = Path("/etc/pki/entitlement")
RHSM_CA = Path("/etc/rhsm/ca/redhat-uep.pem")
_KEYS = {"name", "aliases", "os_id", "version_id", "rhsm", "packages", "repos"}


@dataclass(frozen=True)
class Distro:
    name: str
    os_id: str
    version_id: str
    packages: tuple[str, ...]
    repos_text: str
    rhsm: bool = False
    aliases: tuple[str, ...] = ()

    @property
    def major(self) -> str:
        return self.version_id.split(".")[0]

    def default_ref(self, basearch: str) -> str:
        """``rhel/8/x86_64/edge``, the ref osbuild's edge-commit writes."""
        return f"{self.os_id}/{self.major}/{basearch}/edge"

    def repos(self, basearch: str) -> list[RepoConfig]:
        variables = repo_variables(releasever=self.version_id, basearch=basearch)
        repos = parse_repo_text(self.repos_text, f"distro {self.name}", variables)
        if self.rhsm and repos:
            repos = [_entitled(r, self.name) for r in repos]
        return repos


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


def _parse(filename: str, text: str) -> Distro:
    data = tomllib.loads(text)
    unknown = set(data) - _KEYS
    if unknown:
        raise ValueError(f"{filename}: unknown keys {sorted(unknown)}")
    return Distro(
        name=data["name"],
        os_id=data["os_id"],
        version_id=data["version_id"],
        packages=tuple(data.get("packages", ())),
        repos_text=data.get("repos", ""),
        rhsm=bool(data.get("rhsm", False)),
        aliases=tuple(data.get("aliases", ())),
    )


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
    repos = [repo_from_argument(v, i) for i, v in enumerate(rpm_repos, 1)]
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
