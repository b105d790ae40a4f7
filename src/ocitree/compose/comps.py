"""Package groups of a blueprint's ``[[groups]]``, from the repositories' comps metadata.

A group installs its ``mandatory`` and ``default`` packages, as ``dnf group install`` does;
``optional`` ones only when listed as packages. A group is looked up by its ``<id>`` (or
its English ``<name>``) in the ``group`` metadata of every enabled repository.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

from ocitree.build.rpmrepo import RepoConfig, load_repo
from ocitree.errors import UserError

INSTALLED_TYPES = ("mandatory", "default")


def _groups_of(path: Path, where: str) -> dict[str, list[str]]:
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise UserError(f"the package groups (comps) of {where} are not valid XML: {e}") from e
    out: dict[str, list[str]] = {}
    for group in root.iter("group"):
        gid = (group.findtext("id") or "").strip()
        names = [
            (req.text or "").strip()
            for req in group.iter("packagereq")
            if req.get("type", "mandatory") in INSTALLED_TYPES
        ]
        for key in {gid, (group.findtext("name") or "").strip()} - {""}:
            out.setdefault(key, names)
    return out


def expand(groups: Sequence[str], repos: Sequence[RepoConfig], cache: Path) -> list[str]:
    """The package names the groups install, in order, each once."""
    if not groups:
        return []
    known: dict[str, list[str]] = {}
    for repo in repos:
        if not repo.enabled:
            continue
        meta = load_repo(repo, cache)
        path = meta.data_file("group") or meta.data_file("group_gz")
        if path is not None:
            for gid, names in _groups_of(path, f"repository {repo.id}").items():
                known.setdefault(gid, names)
    missing = [g for g in groups if g not in known]
    if missing:
        ids = ", ".join(r.id for r in repos if r.enabled)
        raise UserError(
            f"no package group {', '.join(missing)} in the enabled repositories ({ids})",
            hint="known groups: " + (", ".join(sorted(known)) or "none (no comps metadata)"),
        )
    out: list[str] = []
    for g in groups:
        out += [n for n in known[g] if n not in out]
    return out
