"""Which component owns each content object, and how often each component changes.

Owners come from, in order: a ``user.component`` xattr on the file; the commit's rpmdb
(``usr/share/rpm`` or ``usr/lib/sysimage/rpm``, read with the rpm Python bindings from a
copy of the database files, nothing from the image is run); else the file is
"unpackaged" and grouped by its directory (at most three levels deep) so that a change
to such files costs a device one small layer, not the whole image. The initramfs is a
component of its own because it changes in every build.

Change frequency (changes per year) comes from ``--contentmeta`` when it names the
component, else from the package's changelog entries in the year before the commit.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ocitree.container.chunking import ALWAYS, Component
from ocitree.errors import UserError
from ocitree.log import logger
from ocitree.ostree.repo import ContentObject, Repo

RPMDB_DIRS = ("usr/share/rpm", "usr/lib/sysimage/rpm")
YEAR = 365 * 24 * 3600
MONTHLY = 12
_DB_FILES = ("rpmdb.sqlite", "Packages", "Packages.db")  # sqlite, bdb, ndb
_UNPACKAGED_DEPTH = 3


@dataclass(frozen=True)
class Package:
    name: str
    files: tuple[str, ...]  # absolute paths as rpm records them
    changelog_times: tuple[int, ...]


@dataclass(frozen=True)
class Ownership:
    """The result: each content checksum's component, and the components' metadata."""

    owner: dict[str, str]  # content checksum -> component name
    components: dict[str, Component]


def component_xattr(obj: ContentObject) -> str | None:
    for key, value in obj.xattrs:
        if key == b"user.component":
            return value.decode("utf-8", "replace").replace(",", "_") or None
    return None


def read_rpmdb(repo: Repo, files: Mapping[str, str]) -> list[Package]:
    """Read the packages of the commit's rpmdb, if it has one."""
    db_dir = next((d for d in RPMDB_DIRS if any(f"{d}/{n}" in files for n in _DB_FILES)), None)
    if db_dir is None:
        return []
    try:
        import rpm
    except ImportError:
        logger.warning(
            "the commit has an rpmdb but the rpm Python module is missing; "
            "install python3-rpm for per-package layers"
        )
        return []
    with tempfile.TemporaryDirectory(prefix="ocitree-rpmdb-") as tmp:
        dest = Path(tmp) / db_dir
        dest.mkdir(parents=True)
        for path, csum in files.items():
            if not path.startswith(db_dir + "/") or "/" in path[len(db_dir) + 1 :]:
                continue
            obj = repo.content(csum)
            if obj.is_symlink:
                continue
            with repo.open_content(obj) as src, (dest / Path(path).name).open("wb") as out:
                while chunk := src.read(1 << 20):
                    out.write(chunk)
        rpm.addMacro("_dbpath", "/" + db_dir)
        try:
            ts = rpm.TransactionSet(tmp)
            ts.setVSFlags(-1)
            packages = []
            for hdr in ts.dbMatch():
                name = hdr[rpm.RPMTAG_NAME]
                if name == "gpg-pubkey":
                    continue
                packages.append(
                    Package(
                        name=_text(name),
                        files=tuple(_text(f) for f in hdr[rpm.RPMTAG_FILENAMES]),
                        changelog_times=tuple(int(t) for t in hdr[rpm.RPMTAG_CHANGELOGTIME]),
                    )
                )
            ts.closeDB()
            if not packages:
                logger.warning("the rpmdb in /%s lists no packages", db_dir)
        except rpm.error as e:
            raise UserError(f"cannot read the rpmdb in /{db_dir} of the commit: {e}") from e
        finally:
            rpm.delMacro("_dbpath")
    return sorted(packages, key=lambda p: p.name)


def _text(v: object) -> str:
    return v.decode("utf-8", "surrogateescape") if isinstance(v, bytes) else str(v)


def load_frequencies(path: Path) -> dict[str, int]:
    """Change frequencies by component name from an rpm-ostree contentmeta JSON file."""
    from ocitree.container.chunking import load_contentmeta

    return {c.name: c.change_frequency for c in load_contentmeta(path)}


def _tree_path(rpm_path: str, root_links: Mapping[str, str]) -> str:
    rel = rpm_path.lstrip("/")
    first, _, rest = rel.partition("/")
    if first == "etc":
        return "usr/etc/" + rest if rest else "usr/etc"
    if first in root_links and rest:
        return root_links[first].strip("/") + "/" + rest
    return rel


def unpackaged_group(path: str) -> str:
    if path.startswith("usr/lib/modules/") and path.endswith("/initramfs.img"):
        return "initramfs"
    parts = path.split("/")[:-1][:_UNPACKAGED_DEPTH]
    return "unpackaged:/" + "/".join(parts).replace(",", "_")


def assign(
    repo: Repo,
    files: Mapping[str, str],
    objects: Mapping[str, ContentObject],
    *,
    root_links: Mapping[str, str],
    commit_time: int,
    frequencies: Mapping[str, int] | None = None,
) -> Ownership:
    """Map every content object of the commit to a component.

    ``files`` is path -> content checksum for every non-directory path of the commit;
    ``objects`` the content objects by checksum; ``root_links`` the commit's toplevel
    symlinks (``bin`` -> ``usr/bin``) used to place rpm's paths.
    """
    owner: dict[str, str] = {}
    # 1. xattrs on the objects themselves
    for csum, obj in objects.items():
        name = component_xattr(obj)
        if name:
            owner[csum] = name
    # 2. the rpmdb; a file claimed by several packages goes to the first by name
    packages = read_rpmdb(repo, files)
    changelogs: dict[str, tuple[int, ...]] = {}
    for pkg in packages:
        changelogs[pkg.name] = pkg.changelog_times
        for f in pkg.files:
            claimed = files.get(_tree_path(f, root_links))
            if claimed is not None and claimed not in owner:
                owner[claimed] = pkg.name
    # 3. everything else, by directory (sorted so the first path of an object decides)
    for path in sorted(files):
        csum = files[path]
        if csum not in owner:
            owner[csum] = unpackaged_group(path)
    sizes: dict[str, int] = {}
    for csum, name in owner.items():
        sizes[name] = sizes.get(name, 0) + objects[csum].size
    now = max([commit_time, *(t for times in changelogs.values() for t in times)], default=0)
    frequencies = frequencies or {}
    components = {}
    for name, size in sizes.items():
        if name in frequencies:
            freq = frequencies[name]
        elif name in changelogs:
            freq = sum(1 for t in changelogs[name] if now - t <= YEAR)
        elif name == "initramfs":
            freq = ALWAYS  # regenerated by every build
        else:
            # Unpackaged groups and components named by xattr, with no history known:
            # assume a monthly change. (Taking "every build" for unpackaged groups would
            # let the planner merge them all into one layer at no modelled cost.)
            freq = MONTHLY
        components[name] = Component(name, size, freq)
    return Ownership(owner, components)
