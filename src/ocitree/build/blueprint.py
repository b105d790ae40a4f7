"""osbuild blueprints as the recipe of ``ocitree build --blueprint layer.toml --from BASE``.

A blueprint (the TOML that composer-cli and image-builder take) describes a layer here:
what to add to a base image, applied to the build root in place of Containerfile steps.
:func:`parse` turns it into a frozen model and reports every problem at once
(:class:`BlueprintError`, ``FILE:LINE: toml.path: message``; tomllib keeps no positions,
so :class:`_Locator` finds the line of each table and key in the text itself). Unknown
keys and wrong types are errors; so are osbuild customizations a layer cannot honour
(firewall, filesystem, installer, ...), which say so.

:func:`apply` does, in this order, on a root laid out as a running system (real ``/etc``):

* ``[[packages]]``, ``[[modules]]``: one transaction of the build's package installer (the
  one that serves ``rpm-ostree install``). A version is ``"*"`` (or absent), exact
  (``"1.2"``, ``"1.2-3"``) or a glob (``"1.2.*"``: the newest matching version), passed as
  ``name = version``; name globs are errors, since a name must say what is installed.
* ``[[customizations.group]]``: appended to ``/etc/group`` (and ``/etc/gshadow`` if the
  image has one) unless a group of that name exists; without ``gid`` the first free one
  from ``GID_MIN`` (``/etc/login.defs``, default 1000).
* ``[[customizations.user]]``: appended to ``/etc/passwd`` and ``/etc/shadow`` (the
  password must be a crypt(3) hash, never plain text; none gives ``!``), with a private
  group of its name unless ``gid`` names an existing group, member of ``groups`` (a group
  only in ``/usr/lib/group``, the nss-altfiles file of rpm-ostree images, is copied to
  ``/etc/group`` to take the member). The home defaults to ``/var/home/NAME`` as on ostree
  systems; it is created from ``/etc/skel`` with ``key`` in ``~/.ssh/authorized_keys``
  (0600, the user's), and declared in ``/usr/lib/tmpfiles.d/ocitree-blueprint.conf``
  (``d`` lines, numeric ids) so that the directories exist on every deployment. Like all
  of ``/var``, the home's files reach a device only with its first deployment; and like
  any ``/etc`` file, the new ``/etc/passwd`` reaches a device only where its own copy is
  unchanged from the base (ostree's three-way ``/etc`` merge). A user the image already
  has may get a ``key``, a ``password`` and ``groups``, nothing else;
  ``[[customizations.sshkey]]`` adds a key to any user.
* ``[[customizations.directories]]`` then ``[[customizations.files]]``: as osbuild does
  (mode default 0755 / 0644, owner ``root``, names resolved in the image; an existing
  directory is accepted only without ``mode``/``user``/``group``; a file's parent must
  exist). Paths must be canonical and under ``/etc`` or ``/usr`` (not ``/usr/etc``, the
  stored form of ``/etc``): ``/var``, ``/home``, ``/root``, ``/opt`` and ``/srv`` belong
  to the device (ostree seeds them once). ``/etc/passwd``, ``/etc/shadow``,
  ``/etc/group``, ``/etc/gshadow`` and ``/etc/fstab`` are refused, as osbuild does.
  Paths are resolved inside the root: a symlink never leads out of it.
* ``[customizations.services]``: ``enabled``, ``disabled``, ``masked`` through the build's
  offline ``systemctl``.
* ``[customizations.kernel] append``: written to
  ``/usr/lib/bootc/kargs.d/50-ocitree-blueprint.toml`` as ``kargs = [...]``, the drop-in
  that bootc reads when it deploys the image (arguments a base's blueprint layer put
  there are kept). ``name`` (another kernel package) is an error: install it instead.
* ``hostname``: ``/etc/hostname``; ``[customizations.timezone] timezone``: the
  ``/etc/localtime`` link (the zone must exist in the image; ``ntpservers`` is an error);
  ``[customizations.locale]``: ``LANG`` in ``/etc/locale.conf`` (the first language) and
  ``KEYMAP`` in ``/etc/vconsole.conf``.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import shutil
import tomllib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ocitree.build import systemd
from ocitree.build.files import resolve_in_root
from ocitree.errors import FileErrors, UserError
from ocitree.log import logger, step

__all__ = [
    "HOSTNAME",
    "KARGS_FILE",
    "TMPFILES_FILE",
    "ZONE",
    "Blueprint",
    "BlueprintError",
    "Customizations",
    "Directory",
    "File",
    "Group",
    "Location",
    "Package",
    "Services",
    "SshKey",
    "User",
    "apply",
    "load",
    "parse",
]

KARGS_FILE = "/usr/lib/bootc/kargs.d/50-ocitree-blueprint.toml"
TMPFILES_FILE = "/usr/lib/tmpfiles.d/ocitree-blueprint.conf"
DEFAULT_HOME = "/var/home"
# Where a layer may put files: image content. /var, /home, /root, /opt, /srv are the
# device's (ostree seeds /var once); /usr/etc is how /etc is stored, written as /etc.
FILE_ROOTS = ("/etc", "/usr")
DENIED_FILES = frozenset(["/etc/passwd", "/etc/shadow", "/etc/group", "/etc/gshadow", "/etc/fstab"])

PathPart = str | int
TomlPath = tuple[PathPart, ...]


# --------------------------------------------------------------------------- the model


@dataclass(frozen=True)
class Location:
    """Where an entry is written: its line (0: unknown) and TOML path."""

    line: int = 0
    path: str = ""


@dataclass(frozen=True)
class Package:
    name: str
    version: str = "*"
    at: Location = field(default_factory=Location, compare=False)

    @property
    def spec(self) -> str:
        """What the package installer takes: ``name``, or ``name = version``."""
        return self.name if self.version in ("", "*") else f"{self.name} = {self.version}"


@dataclass(frozen=True)
class Services:
    enabled: tuple[str, ...] = ()
    disabled: tuple[str, ...] = ()
    masked: tuple[str, ...] = ()
    at: Location = field(default_factory=Location, compare=False)


@dataclass(frozen=True)
class File:
    path: str
    mode: int | None = None  # None: 0644
    user: str | int | None = None  # None: root
    group: str | int | None = None
    data: str = ""
    at: Location = field(default_factory=Location, compare=False)


@dataclass(frozen=True)
class Directory:
    path: str
    mode: int | None = None  # None: 0755
    user: str | int | None = None
    group: str | int | None = None
    ensure_parents: bool = False
    at: Location = field(default_factory=Location, compare=False)


@dataclass(frozen=True)
class User:
    name: str
    description: str | None = None
    password: str | None = None  # a crypt(3) hash
    key: str | None = None
    home: str | None = None
    shell: str | None = None
    groups: tuple[str, ...] = ()
    uid: int | None = None
    gid: int | None = None
    expiredate: int | None = None  # days since 1970-01-01
    at: Location = field(default_factory=Location, compare=False)


@dataclass(frozen=True)
class Group:
    name: str
    gid: int | None = None
    at: Location = field(default_factory=Location, compare=False)


@dataclass(frozen=True)
class SshKey:
    user: str
    key: str
    at: Location = field(default_factory=Location, compare=False)


@dataclass(frozen=True)
class Customizations:
    hostname: str | None = None
    kernel_append: tuple[str, ...] = ()
    services: Services = field(default_factory=Services)
    files: tuple[File, ...] = ()
    directories: tuple[Directory, ...] = ()
    users: tuple[User, ...] = ()
    groups: tuple[Group, ...] = ()
    sshkeys: tuple[SshKey, ...] = ()
    timezone: str | None = None
    languages: tuple[str, ...] = ()
    keyboard: str | None = None
    kernel_at: Location = field(default_factory=Location, compare=False)
    timezone_at: Location = field(default_factory=Location, compare=False)


@dataclass(frozen=True)
class Blueprint:
    name: str
    description: str = ""
    version: str | None = None
    packages: tuple[Package, ...] = ()
    modules: tuple[Package, ...] = ()
    customizations: Customizations = field(default_factory=Customizations)
    filename: str = "blueprint.toml"
    # Only in a compose blueprint (``parse(..., compose=True)``):
    distro: str | None = None
    groups: tuple[str, ...] = ()  # package groups (comps ids)
    distro_at: Location = field(default_factory=Location, compare=False)


class BlueprintError(FileErrors):
    """Every problem found in a blueprint; ``errors`` holds ``(line, message)`` pairs, the
    message starting with the TOML path. Line 0: no line is known (the file as a whole)."""


# --------------------------------------------------------------------------- locations

_KEY = r"""(?:[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*"|'[^']*')"""
_DOTTED = rf"{_KEY}(?:[ \t]*\.[ \t]*{_KEY})*"
_HEADER = re.compile(rf"[ \t]*(\[\[?)[ \t]*({_DOTTED})[ \t]*\]\]?[ \t]*(?:#.*)?")
_ASSIGN = re.compile(rf"[ \t]*({_DOTTED})[ \t]*=")
_KEY_TOKEN = re.compile(_KEY)


def _key_parts(dotted: str) -> tuple[str, ...]:
    out = []
    for token in _KEY_TOKEN.findall(dotted):
        out.append(tomllib.loads(f"k = {token}")["k"] if token[0] in "\"'" else token)
    return tuple(out)


def format_path(path: TomlPath) -> str:
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            name = part if re.fullmatch(r"[A-Za-z0-9_-]+", part) else json.dumps(part)
            text += f".{name}" if text else name
    return text


class _Locator:
    """The line of each table header, key and inline-table array element of a TOML text.

    Good enough for error messages, not a TOML parser: it follows table headers (array
    tables counted, nested ones under the last element), dotted keys, and skips the
    inside of strings, multi-line strings and multi-line arrays.
    """

    def __init__(self, text: str) -> None:
        self.lines: dict[TomlPath, int] = {}
        self._arrays: dict[TomlPath, int] = {}
        # the value being scanned: its key, bracket depth, outermost bracket, the number
        # of elements of its array seen, whether the next token starts one, an open
        # multi-line string's delimiter
        self._key: TomlPath = ()
        self._depth = 0
        self._outer = ""
        self._elements = 0
        self._expect = False
        self._ml: str | None = None
        self._read(text)

    def _read(self, text: str) -> None:
        table: TomlPath = ()
        for lineno, line in enumerate(text.splitlines(), 1):
            rest = line
            if self._ml is not None:
                end = rest.find(self._ml)
                if end < 0:
                    continue
                rest, self._ml = rest[end + 3 :], None
            elif self._depth == 0:
                header = _HEADER.fullmatch(line)
                if header:
                    table = self._header(_key_parts(header.group(2)), header.group(1) == "[[")
                    self._record(table, lineno)
                    continue
                assign = _ASSIGN.match(line)
                if not assign:
                    continue
                self._key = table + _key_parts(assign.group(1))
                self._record(self._key, lineno)
                self._outer, self._elements, self._expect = "", 0, False
                rest = line[assign.end() :]
            self._scan(rest, lineno)

    def _header(self, parts: tuple[str, ...], is_array: bool) -> TomlPath:
        path: TomlPath = ()
        for i, part in enumerate(parts):
            path = (*path, part)
            last = i == len(parts) - 1
            if path in self._arrays and not (last and is_array):
                path = (*path, self._arrays[path] - 1)
        if is_array:
            index = self._arrays.get(path, 0)
            self._arrays[path] = index + 1
            path = (*path, index)
        return path

    def _record(self, path: TomlPath, lineno: int) -> None:
        for i in range(1, len(path) + 1):
            self.lines.setdefault(path[:i], lineno)

    def _scan(self, text: str, lineno: int) -> None:
        """Follow a value's brackets and strings; note where its array's elements start."""
        i = 0
        while i < len(text):
            c = text[i]
            if c in " \t":
                i += 1
                continue
            if c == "#":
                break
            if self._depth == 1 and self._expect and self._outer == "[" and c not in "],":
                self.lines.setdefault((*self._key, self._elements), lineno)
                self._elements += 1
                self._expect = False
            if c in "\"'":
                if text.startswith(c * 3, i):
                    end = text.find(c * 3, i + 3)
                    if end < 0:
                        self._ml = c * 3
                        return
                    i = end + 3
                    continue
                i += 1
                while i < len(text) and text[i] != c:
                    i += 2 if c == '"' and text[i] == "\\" else 1
            elif c in "[{":
                if self._depth == 0:
                    self._outer = c
                self._depth += 1
                self._expect = self._depth == 1
            elif c in "]}":
                self._depth = max(self._depth - 1, 0)
            elif c == "," and self._depth == 1:
                self._expect = True
            i += 1

    def line_of(self, path: TomlPath) -> int:
        for i in range(len(path), 0, -1):
            if path[:i] in self.lines:
                return self.lines[path[:i]]
        return 0


# --------------------------------------------------------------------------- validation

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}")
HOSTNAME = re.compile(
    r"(?=.{1,64}$)[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
)
_MODE = re.compile(r"0?[0-7]{3,4}")
_HASH = re.compile(r"\$(?:1|2[abxy]|5|6|7|y|gy|sha1|md5)\$[^:\s]+")
_UNIT = re.compile(r"[A-Za-z0-9:_.\\@-]+")
ZONE = re.compile(r"[A-Za-z0-9_+-]+(?:/[A-Za-z0-9_+-]+)*")
_LOCALE = re.compile(r"[A-Za-z0-9_.@-]+")
_GLOB = re.compile(r"[*?\[]")
_DISTRO = re.compile(r"[a-z][a-z0-9_-]*-[0-9][0-9.]*")
_SEMVER = re.compile(r"\d+\.\d+\.\d+(?:[-+][0-9A-Za-z.+-]*)?")
_KARG = re.compile(r'(?:[^\s"]|"[^"]*")+')

_TOP_KEYS = frozenset(["name", "description", "version", "packages", "modules", "customizations"])
_TOP_UNSUPPORTED = {
    "distro": "the base image is the distribution",
    "groups": "package groups need comps metadata: list the packages",
    "containers": "embed images with a Containerfile build",
    "enabled_modules": "DNF modules are not available in a layer",
    "minimal": "",
}
_CUSTOMIZATION_KEYS = frozenset([
    "hostname", "kernel", "services", "files", "directories", "user", "group", "sshkey",
    "timezone", "locale",
])  # fmt: skip
# osbuild's customizations that a layer cannot honour
_CUSTOMIZATION_UNSUPPORTED = dict.fromkeys([
    "firewall", "filesystem", "disk", "partitioning_mode", "installation_device", "fdo",
    "openscap", "ignition", "fips", "installer", "rhsm", "rpm", "repositories", "cacerts",
    "wsl", "subscription",
], "")  # fmt: skip
_TYPE_NAMES = {
    str: "a string",
    int: "an integer",
    bool: "a boolean",
    float: "a number",
    list: "an array",
    dict: "a table",
}


def _type_name(value: object) -> str:
    return _TYPE_NAMES.get(type(value), "a date/time")


class _Checker:
    def __init__(self, locator: _Locator) -> None:
        self.locator = locator
        self.errors: list[tuple[int, str]] = []

    def at(self, path: TomlPath) -> Location:
        return Location(self.locator.line_of(path), format_path(path))

    def error(self, path: TomlPath, message: str) -> None:
        prefix = f"{format_path(path)}: " if path else ""
        self.errors.append((self.locator.line_of(path), prefix + message))

    def keys(
        self,
        table: Mapping[str, Any],
        path: TomlPath,
        allowed: Iterable[str],
        unsupported: Mapping[str, str] | None = None,
    ) -> None:
        allowed = set(allowed)
        unsupported = unsupported or {}
        for key in table:
            if key in allowed:
                continue
            if key in unsupported:
                why = unsupported[key]
                self.error(
                    (*path, key),
                    "not supported in a layer blueprint" + (f" ({why})" if why else ""),
                )
            else:
                self.error(
                    (*path, key), f"unknown key (expected one of: {', '.join(sorted(allowed))})"
                )

    def table(self, parent: Mapping[str, Any], key: str, path: TomlPath) -> dict[str, Any]:
        value = parent.get(key, {})
        if not isinstance(value, dict):
            self.error((*path, key), f"must be a table, not {_type_name(value)}")
            return {}
        return value

    def tables(
        self, parent: Mapping[str, Any], key: str, path: TomlPath
    ) -> list[tuple[TomlPath, dict[str, Any]]]:
        value = parent.get(key, [])
        if not isinstance(value, list):
            self.error(
                (*path, key),
                f"must be an array of tables ([[{format_path((*path, key))}]]), "
                f"not {_type_name(value)}",
            )
            return []
        out = []
        for i, item in enumerate(value):
            if isinstance(item, dict):
                out.append(((*path, key, i), item))
            else:
                self.error((*path, key, i), f"must be a table, not {_type_name(item)}")
        return out

    def string(
        self, table: Mapping[str, Any], key: str, path: TomlPath, *, required: bool = False
    ) -> str | None:
        if key not in table:
            if required:
                self.error(path, f"{key!r} is required")
            return None
        value = table[key]
        if not isinstance(value, str):
            self.error((*path, key), f"must be a string, not {_type_name(value)}")
            return None
        return value

    def integer(self, table: Mapping[str, Any], key: str, path: TomlPath) -> int | None:
        if key not in table:
            return None
        value = table[key]
        if not isinstance(value, int) or isinstance(value, bool):
            self.error((*path, key), f"must be an integer, not {_type_name(value)}")
            return None
        if value < 0 or value > 0xFFFFFFFE:
            self.error((*path, key), f"{value} is out of range")
            return None
        return value

    def boolean(self, table: Mapping[str, Any], key: str, path: TomlPath) -> bool | None:
        if key not in table:
            return None
        value = table[key]
        if not isinstance(value, bool):
            self.error((*path, key), f"must be true or false, not {_type_name(value)}")
            return None
        return value

    def strings(self, table: Mapping[str, Any], key: str, path: TomlPath) -> tuple[str, ...]:
        if key not in table:
            return ()
        value = table[key]
        if not isinstance(value, list):
            self.error((*path, key), f"must be an array of strings, not {_type_name(value)}")
            return ()
        out = []
        for i, item in enumerate(value):
            if isinstance(item, str):
                out.append(item)
            else:
                self.error((*path, key, i), f"must be a string, not {_type_name(item)}")
        return tuple(out)

    def owner(self, table: Mapping[str, Any], key: str, path: TomlPath) -> str | int | None:
        if key not in table:
            return None
        value = table[key]
        if isinstance(value, str):
            if not _NAME.fullmatch(value):
                self.error((*path, key), f"{value!r} is not a valid {key} name")
                return None
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return self.integer(table, key, path)
        self.error((*path, key), f"must be a {key} name or id, not {_type_name(value)}")
        return None

    def mode(self, table: Mapping[str, Any], path: TomlPath) -> int | None:
        if "mode" not in table:
            return None
        value = table["mode"]
        if not isinstance(value, str):
            self.error(
                (*path, "mode"), f'must be an octal string like "0644", not {_type_name(value)}'
            )
            return None
        if not _MODE.fullmatch(value):
            self.error((*path, "mode"), f'{value!r} is not an octal mode like "0644"')
            return None
        return int(value, 8)

    def fs_path(self, value: str | None, path: TomlPath) -> str | None:
        if value is None:
            return None
        where = (*path, "path")
        if not value.startswith("/"):
            self.error(where, f"{value!r} is not an absolute path")
            return None
        if posixpath.normpath(value) != value or value.startswith("//") or "\0" in value:
            self.error(
                where, f"{value!r} is not a canonical path (no '.', '..', '//' or trailing '/')"
            )
            return None
        if value == "/usr/etc" or value.startswith("/usr/etc/"):
            self.error(where, f"{value} is how /etc is stored: write {value[4:]} instead")
            return None
        if not any(value.startswith(r + "/") for r in FILE_ROOTS):
            self.error(
                where, f"{value} is not under {' or '.join(FILE_ROOTS)} (what a layer may change)"
            )
            return None
        if value in DENIED_FILES:
            self.error(where, f"{value} may not be written: use the user and group customizations")
            return None
        return value


def load(path: Path, *, compose: bool = False) -> Blueprint:
    """Read and validate the blueprint at ``path`` (``compose``: see :func:`parse`)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(
            f"cannot read the blueprint {path}: {getattr(e, 'strerror', None) or e}"
        ) from e
    return parse(text, filename=str(path), compose=compose)


def parse(text: str, *, filename: str = "blueprint.toml", compose: bool = False) -> Blueprint:
    """Parse and validate ``text``; raises :class:`BlueprintError` listing every problem.

    ``compose``: the blueprint of a whole OS (``ocitree compose``), which may also name its
    ``distro`` and package ``[[groups]]``; a layer blueprint may not.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"\(at line (\d+), column \d+\)", str(e))
        line = int(m.group(1)) if m else 0
        raise BlueprintError(filename, [(line, f"not valid TOML: {e}")]) from e
    c = _Checker(_Locator(text))
    if compose:
        c.keys(data, (), _TOP_KEYS | {"distro", "groups"}, {"containers": "", "minimal": ""})
    else:
        c.keys(data, (), _TOP_KEYS, _TOP_UNSUPPORTED)
    name = c.string(data, "name", (), required=True)
    if name is not None and not name.strip():
        c.error(("name",), "must not be empty")
    description = c.string(data, "description", ()) or ""
    version = c.string(data, "version", ())
    if version is not None and not _SEMVER.fullmatch(version):
        c.error(("version",), f'{version!r} is not a semver version like "0.0.1"')
    packages = _packages(c, data, "packages")
    modules = _packages(c, data, "modules")
    custom = _customizations(c, c.table(data, "customizations", ()))
    distro = c.string(data, "distro", ()) if compose else None
    if distro is not None and not _DISTRO.fullmatch(distro):
        c.error(("distro",), f'{distro!r} is not a distribution name like "rhel-8.7"')
    groups = _groups_of_packages(c, data) if compose else ()
    if c.errors:
        raise BlueprintError(filename, c.errors)
    return Blueprint(
        name=name or "",
        description=description,
        version=version,
        packages=packages,
        modules=modules,
        customizations=custom,
        filename=filename,
        distro=distro,
        groups=groups,
        distro_at=c.at(("distro",)),
    )


def _groups_of_packages(c: _Checker, data: Mapping[str, Any]) -> tuple[str, ...]:
    out: list[str] = []
    for path, entry in c.tables(data, "groups", ()):
        c.keys(entry, path, ("name",))
        name = c.string(entry, "name", path, required=True)
        if name is None:
            continue
        if not _NAME.fullmatch(name):
            c.error((*path, "name"), f'{name!r} is not a package group id like "core"')
        elif name in out:
            c.error(path, f"group {name} is listed twice")
        else:
            out.append(name)
    return tuple(out)


def _packages(c: _Checker, data: Mapping[str, Any], key: str) -> tuple[Package, ...]:
    out = []
    seen: set[str] = set()
    for path, entry in c.tables(data, key, ()):
        c.keys(entry, path, ("name", "version"))
        name = c.string(entry, "name", path, required=True)
        version = c.string(entry, "version", path)
        if name is not None and (
            not name or _GLOB.search(name) or any(ch.isspace() for ch in name)
        ):
            c.error((*path, "name"), f"{name!r}: give an exact package name (no globs)")
            name = None
        if version is not None and (
            any(ch.isspace() for ch in version) or version.startswith(("<", ">", "="))
        ):
            c.error((*path, "version"), f"{version!r} is not a version or version glob")
            version = None
        if name is None:
            continue
        if name in seen:
            c.error(path, f"{name} is listed twice")
        seen.add(name)
        out.append(Package(name, version or "*", c.at(path)))
    return tuple(out)


def _customizations(c: _Checker, table: dict[str, Any]) -> Customizations:
    base: TomlPath = ("customizations",)
    c.keys(table, base, _CUSTOMIZATION_KEYS, _CUSTOMIZATION_UNSUPPORTED)
    hostname = c.string(table, "hostname", base)
    if hostname is not None and not HOSTNAME.fullmatch(hostname):
        c.error((*base, "hostname"), f"{hostname!r} is not a valid host name")
        hostname = None

    kernel = c.table(table, "kernel", base)
    kpath = (*base, "kernel")
    c.keys(kernel, kpath, ("append",), {"name": "install the kernel package with [[packages]]"})
    append = c.string(kernel, "append", kpath) or ""
    kargs = tuple(_KARG.findall(append))
    if append.count('"') % 2:
        c.error((*kpath, "append"), f"{append!r} has an unbalanced '\"'")

    services = _services(c, c.table(table, "services", base), (*base, "services"))
    directories = _directories(c, table)
    files = _files(c, table, {d.path for d in directories})
    groups = _groups(c, table)
    users = _users(c, table)
    sshkeys = []
    for path, entry in c.tables(table, "sshkey", base):
        c.keys(entry, path, ("user", "key"))
        user = c.string(entry, "user", path, required=True)
        key = c.string(entry, "key", path, required=True)
        if user is not None and not _NAME.fullmatch(user):
            c.error((*path, "user"), f"{user!r} is not a valid user name")
        elif user is not None and key is not None:
            sshkeys.append(SshKey(user, key, c.at(path)))

    tz_table = c.table(table, "timezone", base)
    tz_path = (*base, "timezone")
    c.keys(
        tz_table,
        tz_path,
        ("timezone",),
        {"ntpservers": "write the NTP client's configuration with [[customizations.files]]"},
    )
    timezone = c.string(tz_table, "timezone", tz_path)
    if timezone is not None and not ZONE.fullmatch(timezone):
        c.error(
            (*tz_path, "timezone"), f'{timezone!r} is not a time zone name like "Europe/Berlin"'
        )
        timezone = None

    locale = c.table(table, "locale", base)
    lpath = (*base, "locale")
    c.keys(locale, lpath, ("languages", "keyboard"))
    languages = c.strings(locale, "languages", lpath)
    for i, lang in enumerate(languages):
        if not _LOCALE.fullmatch(lang):
            c.error((*lpath, "languages", i), f'{lang!r} is not a locale name like "en_US.UTF-8"')
    keyboard = c.string(locale, "keyboard", lpath)
    if keyboard is not None and not _LOCALE.fullmatch(keyboard):
        c.error((*lpath, "keyboard"), f'{keyboard!r} is not a keymap name like "us"')

    return Customizations(
        hostname=hostname,
        kernel_append=kargs,
        services=services,
        files=files,
        directories=directories,
        users=users,
        groups=groups,
        sshkeys=tuple(sshkeys),
        timezone=timezone,
        languages=languages,
        keyboard=keyboard,
        kernel_at=c.at((*kpath, "append")),
        timezone_at=c.at((*tz_path, "timezone")),
    )


def _services(c: _Checker, table: dict[str, Any], path: TomlPath) -> Services:
    c.keys(table, path, ("enabled", "disabled", "masked"))
    lists = {}
    for key in ("enabled", "disabled", "masked"):
        names = c.strings(table, key, path)
        for i, name in enumerate(names):
            if not _UNIT.fullmatch(name):
                c.error((*path, key, i), f"{name!r} is not a systemd unit name")
        lists[key] = tuple(n for n in names if _UNIT.fullmatch(n))
    for a, b in (("enabled", "disabled"), ("enabled", "masked")):
        for name in sorted(set(lists[a]) & set(lists[b])):
            c.error((*path, b), f"{name} is also {a}")
    return Services(lists["enabled"], lists["disabled"], lists["masked"], c.at(path))


_Owned = tuple[str | None, int | None, str | int | None, str | int | None]


def _owned_paths(
    c: _Checker, table: dict[str, Any], key: str, extra: str
) -> Iterator[tuple[TomlPath, dict[str, Any], _Owned]]:
    """The entries of ``[[customizations.KEY]]``: path, mode, user and group checked
    (``extra`` is the one other key they take), each with its (path, mode, user, group)."""
    for path, entry in c.tables(table, key, ("customizations",)):
        c.keys(entry, path, ("path", "mode", "user", "group", extra))
        p = c.fs_path(c.string(entry, "path", path, required=True), path)
        owned = (
            p,
            c.mode(entry, path),
            c.owner(entry, "user", path),
            c.owner(entry, "group", path),
        )
        yield path, entry, owned


def _directories(c: _Checker, table: dict[str, Any]) -> tuple[Directory, ...]:
    out: list[Directory] = []
    seen: set[str] = set()
    for path, entry, (p, mode, user, group) in _owned_paths(
        c, table, "directories", "ensure_parents"
    ):
        parents = c.boolean(entry, "ensure_parents", path)
        if p is None:
            continue
        if p in seen:
            c.error((*path, "path"), f"{p} is listed twice")
        seen.add(p)
        out.append(Directory(p, mode, user, group, bool(parents), c.at(path)))
    return tuple(out)


def _files(c: _Checker, table: dict[str, Any], directories: set[str]) -> tuple[File, ...]:
    out: list[File] = []
    seen: set[str] = set()
    for path, entry, (p, mode, user, group) in _owned_paths(c, table, "files", "data"):
        data = c.string(entry, "data", path)
        if p is None:
            continue
        if p in seen:
            c.error((*path, "path"), f"{p} is listed twice")
        elif p in directories:
            c.error((*path, "path"), f"{p} is also in customizations.directories")
        seen.add(p)
        out.append(File(p, mode, user, group, data or "", c.at(path)))
    return tuple(out)


def _groups(c: _Checker, table: dict[str, Any]) -> tuple[Group, ...]:
    out: list[Group] = []
    names: set[str] = set()
    gids: set[int] = set()
    for path, entry in c.tables(table, "group", ("customizations",)):
        c.keys(entry, path, ("name", "gid"))
        name = c.string(entry, "name", path, required=True)
        gid = c.integer(entry, "gid", path)
        if name is not None and not _NAME.fullmatch(name):
            c.error((*path, "name"), f"{name!r} is not a valid group name")
            continue
        if name is None:
            continue
        if name in names:
            c.error((*path, "name"), f"group {name} is listed twice")
        if gid is not None and gid in gids:
            c.error((*path, "gid"), f"gid {gid} is given twice")
        names.add(name)
        if gid is not None:
            gids.add(gid)
        out.append(Group(name, gid, c.at(path)))
    return tuple(out)


def _users(c: _Checker, table: dict[str, Any]) -> tuple[User, ...]:
    out: list[User] = []
    names: set[str] = set()
    uids: set[int] = set()
    allowed = [
        "name", "description", "password", "key", "home", "shell", "groups", "uid", "gid",
        "expiredate",
    ]  # fmt: skip
    for path, entry in c.tables(table, "user", ("customizations",)):
        c.keys(entry, path, allowed)
        name = c.string(entry, "name", path, required=True)
        description = c.string(entry, "description", path)
        password = c.string(entry, "password", path)
        key = c.string(entry, "key", path)
        home = c.string(entry, "home", path)
        shell = c.string(entry, "shell", path)
        groups = c.strings(entry, "groups", path)
        uid = c.integer(entry, "uid", path)
        gid = c.integer(entry, "gid", path)
        expiredate = c.integer(entry, "expiredate", path)
        ok = True
        if name is not None and not _NAME.fullmatch(name):
            c.error((*path, "name"), f"{name!r} is not a valid user name")
            ok = False
        if description is not None and any(ch in description for ch in ":\n"):
            c.error((*path, "description"), "must not contain ':' or a line break")
            ok = False
        if password is not None and not _HASH.fullmatch(password):
            c.error(
                (*path, "password"),
                "is not a crypt(3) hash ($6$..., $y$...): a plain-text password would be "
                "readable in the image; hash it (openssl passwd -6)",
            )
            ok = False
        for what, value in (("home", home), ("shell", shell)):
            if value is not None and (
                not value.startswith("/") or any(ch in value for ch in ":\n")
            ):
                c.error((*path, what), f"{value!r} is not an absolute path")
                ok = False
        for i, g in enumerate(groups):
            if not _NAME.fullmatch(g):
                c.error((*path, "groups", i), f"{g!r} is not a valid group name")
                ok = False
        if name is None or not ok:
            continue
        if name in names:
            c.error((*path, "name"), f"user {name} is listed twice")
        if uid is not None and uid in uids:
            c.error((*path, "uid"), f"uid {uid} is given twice")
        names.add(name)
        if uid is not None:
            uids.add(uid)
        home = posixpath.normpath(home) if home else None
        fields = (description, password, key, home, shell, groups, uid, gid, expiredate)
        out.append(User(name, *fields, at=c.at(path)))
    return tuple(out)


# --------------------------------------------------------------------------- applying

Installer = Callable[[Sequence[str]], object]


def apply(
    bp: Blueprint, root: Path, *, install: Installer, source_date_epoch: int | None = None
) -> None:
    """Make the build ``root`` (real ``/etc``) what ``bp`` asks for (module docstring).

    ``install(specs)`` installs packages in one transaction (the build's installer).
    ``source_date_epoch`` dates new users' passwords (default: ``SOURCE_DATE_EPOCH``,
    else now).
    """
    app = _Applier(bp, root, source_date_epoch)
    cz = bp.customizations
    specs = [p.spec for p in (*bp.packages, *bp.modules)]
    if specs:
        with step(f"Installing {' '.join(p.name for p in (*bp.packages, *bp.modules))}"):
            install(specs)
    if cz.groups or cz.users or cz.sshkeys:
        with step("Adding groups and users"):
            for g in cz.groups:
                app.group(g)
            for u in cz.users:
                app.user(u)
            for k in cz.sshkeys:
                app.sshkey(k)
    if cz.directories or cz.files:
        with step("Writing files and directories"):
            for d in cz.directories:
                app.directory(d)
            for f in cz.files:
                app.file(f)
    services = cz.services
    if services.enabled or services.disabled or services.masked:
        with step("Enabling and disabling services"):
            for verb, units in (
                ("enable", services.enabled),
                ("disable", services.disabled),
                ("mask", services.masked),
            ):
                if units:
                    app.systemctl(verb, units, services.at)
    if cz.kernel_append:
        app.kargs(cz.kernel_append, cz.kernel_at)
    if cz.hostname:
        app.write("/etc/hostname", cz.hostname + "\n")
    if cz.timezone:
        app.timezone(cz.timezone, cz.timezone_at)
    if cz.languages:
        app.set_var("/etc/locale.conf", "LANG", cz.languages[0])
    if cz.keyboard:
        app.set_var("/etc/vconsole.conf", "KEYMAP", cz.keyboard)


@dataclass
class _Entry:
    """A line of passwd/group/shadow, split; ``source`` is where it was found."""

    fields: list[str]
    source: str

    @property
    def name(self) -> str:
        return self.fields[0]


class _Applier:
    def __init__(self, bp: Blueprint, root: Path, epoch: int | None = None) -> None:
        self.bp = bp
        self.root = root
        self.epoch = epoch

    # ---- helpers

    def fail(self, at: Location, message: str) -> UserError:
        text = f"{at.path}: {message}" if at.path else message
        return BlueprintError(self.bp.filename, [(at.line, text)])

    def host(self, path: str) -> Path:
        return resolve_in_root(self.root, path)

    def entries(self, db: str) -> list[_Entry]:
        """``/etc/DB`` then ``/usr/lib/DB`` (nss-altfiles), first name wins."""
        out: list[_Entry] = []
        seen: set[str] = set()
        for source in (f"/etc/{db}", f"/usr/lib/{db}"):
            p = self.host(source)
            if not p.is_file():
                continue
            for line in p.read_text(encoding="utf-8", errors="surrogateescape").splitlines():
                fields = line.split(":")
                if len(fields) < 3 or not fields[0] or fields[0] in seen:
                    continue
                seen.add(fields[0])
                out.append(_Entry(fields, source))
        return out

    def find(self, db: str, name: str) -> _Entry | None:
        return next((e for e in self.entries(db) if e.name == name), None)

    def ids(self, db: str) -> set[int]:
        return {int(e.fields[2]) for e in self.entries(db) if e.fields[2].isdigit()}

    def login_defs(self, key: str, default: int) -> int:
        p = self.host("/etc/login.defs")
        if p.is_file():
            for line in p.read_text(errors="replace").splitlines():
                fields = line.split()
                if len(fields) >= 2 and fields[0] == key and fields[1].isdigit():
                    return int(fields[1])
        return default

    def free_id(self, db: str, prefer: int | None = None) -> int:
        used = self.ids(db)
        if prefer is not None and prefer not in used:
            return prefer
        kind = "UID" if db == "passwd" else "GID"
        low, high = self.login_defs(f"{kind}_MIN", 1000), self.login_defs(f"{kind}_MAX", 60000)
        for n in range(low, high + 1):
            if n not in used:
                return n
        raise UserError(f"no free {kind} between {low} and {high} in the image")

    def append(self, path: str, line: str, *, mode: int = 0o644) -> None:
        p = self.host(path)
        if not p.exists():
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text("")
            p.chmod(mode)
        text = p.read_text(encoding="utf-8", errors="surrogateescape")
        if text and not text.endswith("\n"):
            text += "\n"
        p.write_text(text + line + "\n", encoding="utf-8", errors="surrogateescape")

    def rewrite(self, path: str, edit: Callable[[list[str]], list[str]]) -> None:
        p = self.host(path)
        lines = p.read_text(encoding="utf-8", errors="surrogateescape").splitlines()
        p.write_text(
            "".join(f"{ln}\n" for ln in edit(lines)), encoding="utf-8", errors="surrogateescape"
        )

    def write(self, path: str, text: str) -> None:
        p = self.host(path)
        if p.is_symlink():
            p.unlink()
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text, encoding="utf-8")

    def uid_of(self, owner: str | int | None, at: Location) -> int:
        return self._id("passwd", "user", owner, at)

    def gid_of(self, owner: str | int | None, at: Location) -> int:
        return self._id("group", "group", owner, at)

    def _id(self, db: str, what: str, owner: str | int | None, at: Location) -> int:
        if owner is None:
            return 0
        if isinstance(owner, int):
            return owner
        entry = self.find(db, owner)
        if entry is None or not entry.fields[2].isdigit():
            raise self.fail(at, f"no {what} {owner!r} in the image or the blueprint")
        return int(entry.fields[2])

    # ---- groups and users

    def group(self, g: Group) -> None:
        existing = self.find("group", g.name)
        if existing is not None:
            if g.gid is not None and existing.fields[2] != str(g.gid):
                raise self.fail(
                    g.at, f"group {g.name} exists in the image with gid {existing.fields[2]}"
                )
            return
        if g.gid is not None and g.gid in self.ids("group"):
            raise self.fail(g.at, f"gid {g.gid} is taken in the image")
        gid = g.gid if g.gid is not None else self.free_id("group")
        self._add_group(g.name, gid)

    def _add_group(self, name: str, gid: int) -> None:
        self.append("/etc/group", f"{name}:x:{gid}:")
        if self.host("/etc/gshadow").is_file():
            self.append("/etc/gshadow", f"{name}:!::")

    def user(self, u: User) -> None:
        existing = self.find("passwd", u.name)
        if existing is not None:
            changed = [
                k for k in ("description", "home", "shell", "uid", "gid", "expiredate")
                if getattr(u, k) is not None
            ]  # fmt: skip
            if changed:
                raise self.fail(
                    u.at,
                    f"user {u.name} exists in the image: only key, password and groups can be "
                    f"given for it, not {', '.join(changed)}",
                )
            if u.password is not None:
                self._set_password(u.name, u.password, u.at)
            self._join(u.name, u.groups, u.at)
            if u.key:
                self._add_key(existing, u.key)
            return
        if u.uid is not None and u.uid in self.ids("passwd"):
            raise self.fail(u.at, f"uid {u.uid} is taken in the image")
        uid = u.uid if u.uid is not None else self.free_id("passwd")
        if u.gid is not None:
            gid = u.gid
            if gid not in self.ids("group"):
                if self.find("group", u.name) is not None:
                    raise self.fail(u.at, f"no group with gid {gid} in the image or the blueprint")
                self._add_group(u.name, gid)  # its private group, with the gid asked for
        else:
            own = self.find("group", u.name)
            if own is not None and own.fields[2].isdigit():
                gid = int(own.fields[2])
            else:
                gid = self.free_id("group", prefer=uid)
                self._add_group(u.name, gid)
        home = u.home or f"{DEFAULT_HOME}/{u.name}"
        shell = u.shell or next(
            (s for s in ("/bin/bash", "/bin/sh") if os.path.lexists(self.host(s))), "/bin/bash"
        )
        fields = [u.name, "x", str(uid), str(gid), u.description or "", home, shell]
        self.append("/etc/passwd", ":".join(fields))
        epoch = self.epoch
        if epoch is None:
            epoch = int(os.environ.get("SOURCE_DATE_EPOCH", datetime.now(UTC).timestamp()))
        days = epoch // 86400
        expire = "" if u.expiredate is None else str(u.expiredate)
        shadow = [u.name, u.password or "!", str(days), "0", "99999", "7", "", expire, ""]
        self.append("/etc/shadow", ":".join(shadow), mode=0)
        self._join(u.name, u.groups, u.at)
        entry = _Entry(fields, "/etc/passwd")
        self._make_home(entry, home)
        if u.key:
            self._add_key(entry, u.key)

    def sshkey(self, k: SshKey) -> None:
        entry = self.find("passwd", k.user)
        if entry is None:
            raise self.fail(k.at, f"no user {k.user!r} in the image or the blueprint")
        self._add_key(entry, k.key)

    def _set_password(self, name: str, password: str, at: Location) -> None:
        if not self.host("/etc/shadow").is_file():
            raise self.fail(at, "the image has no /etc/shadow")

        def edit(lines: list[str]) -> list[str]:
            out = []
            found = False
            for line in lines:
                fields = line.split(":")
                if fields[0] == name and len(fields) > 1:
                    fields[1] = password
                    found = True
                out.append(":".join(fields))
            if not found:
                out.append(f"{name}:{password}:::::::")
            return out

        self.rewrite("/etc/shadow", edit)

    def _join(self, user: str, groups: Sequence[str], at: Location) -> None:
        for name in groups:
            entry = self.find("group", name)
            if entry is None:
                raise self.fail(at, f"no group {name!r} in the image or the blueprint")
            if entry.source != "/etc/group":
                # nss-altfiles: /usr/lib/group is read-only content; /etc/group takes members
                self.append("/etc/group", ":".join(entry.fields))
            self._add_member("/etc/group", name, user, 3)
            if self.host("/etc/gshadow").is_file():
                self._add_member("/etc/gshadow", name, user, 3)

    def _add_member(self, path: str, group: str, user: str, index: int) -> None:
        def edit(lines: list[str]) -> list[str]:
            out = []
            for line in lines:
                fields = line.split(":")
                if fields[0] == group and len(fields) > index:
                    members = [m for m in fields[index].split(",") if m]
                    if user not in members:
                        members.append(user)
                    fields[index] = ",".join(members)
                out.append(":".join(fields))
            return out

        self.rewrite(path, edit)

    def _home_dir(self, home: str) -> Path:
        # Follow every component (/root -> var/roothome), inside the root.
        return self.host(home.rstrip("/") + "/.ocitree-probe").parent

    def _make_home(self, entry: _Entry, home: str) -> None:
        uid, gid = int(entry.fields[2]), int(entry.fields[3])
        d = self._home_dir(home)
        if d.exists():
            return
        d.parent.mkdir(parents=True, exist_ok=True)
        skel = self.host("/etc/skel")
        if skel.is_dir():
            shutil.copytree(skel, d, symlinks=True)
        else:
            d.mkdir()
        _chown_tree(d, uid, gid)
        d.chmod(0o700)
        self._declare(home, 0o700, entry)

    def _declare(self, path: str, mode: int, entry: _Entry) -> None:
        """A tmpfiles.d ``d`` line for a directory under /var (ostree seeds /var once)."""
        real = "/" + str(self._home_dir(path).relative_to(self.root))
        if not real.startswith("/var/"):
            return
        # Numeric ids: a device whose /etc/passwd was changed keeps its own copy.
        line = f"d {real} {mode:04o} {entry.fields[2]} {entry.fields[3]} -"
        p = self.host(TMPFILES_FILE)
        if p.is_file() and line in p.read_text().splitlines():
            return
        self.append(TMPFILES_FILE, line)

    def _add_key(self, entry: _Entry, key: str) -> None:
        uid, gid = int(entry.fields[2]), int(entry.fields[3])
        home = entry.fields[5] if len(entry.fields) > 5 and entry.fields[5] else "/"
        if not self._home_dir(home).exists():
            self._make_home(entry, home)
        ssh = self._home_dir(home) / ".ssh"
        if not ssh.is_dir():
            ssh.mkdir(parents=True)
            os.chown(ssh, uid, gid)
            ssh.chmod(0o700)
            self._declare(home.rstrip("/") + "/.ssh", 0o700, entry)
        keys = ssh / "authorized_keys"
        if keys.is_symlink():
            keys.unlink()
        have = keys.read_text().splitlines() if keys.is_file() else []
        new = [ln.strip() for ln in key.splitlines() if ln.strip() and ln.strip() not in have]
        keys.write_text("".join(f"{ln}\n" for ln in [*have, *new]))
        os.chown(keys, uid, gid)
        keys.chmod(0o600)

    # ---- files and directories

    def directory(self, d: Directory) -> None:
        target = self.host(d.path)
        if target.is_dir() and not target.is_symlink():
            if d.mode is not None or d.user is not None or d.group is not None:
                raise self.fail(
                    d.at,
                    f"{d.path} exists in the image: mode, user and group are only for a new "
                    "directory",
                )
            return
        if os.path.lexists(target):
            raise self.fail(d.at, f"{d.path} exists in the image and is not a directory")
        if not target.parent.is_dir():
            if not d.ensure_parents:
                raise self.fail(
                    d.at, f"the parent of {d.path} does not exist (set ensure_parents = true)"
                )
            target.parent.mkdir(parents=True, mode=0o755)
        uid, gid = self.uid_of(d.user, d.at), self.gid_of(d.group, d.at)
        target.mkdir()
        os.chown(target, uid, gid)
        target.chmod(0o755 if d.mode is None else d.mode)

    def file(self, f: File) -> None:
        target = self.host(f.path)
        if target.is_dir() and not target.is_symlink():
            raise self.fail(f.at, f"{f.path} is a directory in the image")
        if not target.parent.is_dir():
            raise self.fail(
                f.at,
                f"the directory of {f.path} does not exist: add it to "
                "[[customizations.directories]]",
            )
        uid, gid = self.uid_of(f.user, f.at), self.gid_of(f.group, f.at)
        if target.is_symlink():
            target.unlink()  # osbuild replaces a link with the file
        target.write_text(f.data, encoding="utf-8")
        os.chown(target, uid, gid)
        target.chmod(0o644 if f.mode is None else f.mode)

    # ---- the rest

    def systemctl(self, verb: str, units: Sequence[str], at: Location) -> None:
        result = systemd.systemctl(self.root, [verb, *units])
        if result.exit_code != 0:
            raise self.fail(at, f"systemctl {verb} {' '.join(units)}: {result.stderr.strip()}")
        for line in result.stdout.splitlines():
            logger.debug("systemctl: %s", line)

    def kargs(self, kargs: Sequence[str], at: Location) -> None:
        p = self.host(KARGS_FILE)
        have: list[str] = []
        if p.is_file():
            try:
                old = tomllib.loads(p.read_text())
            except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
                raise self.fail(at, f"the image's {KARGS_FILE} is not valid TOML: {e}") from e
            have = [str(a) for a in old.get("kargs", []) if isinstance(a, str)]
        merged = have + [a for a in kargs if a not in have]
        body = ", ".join(json.dumps(a) for a in merged)
        self.write(
            KARGS_FILE,
            "# Kernel arguments of ocitree build --blueprint (customizations.kernel.append),\n"
            f"# applied by bootc when it deploys the image.\nkargs = [{body}]\n",
        )

    def timezone(self, zone: str, at: Location) -> None:
        if not self.host(f"/usr/share/zoneinfo/{zone}").is_file():
            raise self.fail(at, f"the image has no time zone {zone} (/usr/share/zoneinfo/{zone})")
        link = self.host("/etc/localtime")
        if os.path.lexists(link):
            link.unlink()
        link.symlink_to(f"../usr/share/zoneinfo/{zone}")

    def set_var(self, path: str, key: str, value: str) -> None:
        p = self.host(path)
        lines = p.read_text().splitlines() if p.is_file() else []
        lines = [ln for ln in lines if not ln.startswith(f"{key}=")] + [f"{key}={value}"]
        self.write(path, "".join(f"{ln}\n" for ln in lines))


def _chown_tree(top: Path, uid: int, gid: int) -> None:
    os.chown(top, uid, gid, follow_symlinks=False)
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            os.chown(Path(dirpath) / name, uid, gid, follow_symlinks=False)
