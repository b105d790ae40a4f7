"""An offline ``systemctl`` for image builds: what ``systemctl --root=ROOT`` does, on a root.

A build has no running systemd, so a step's (or an rpm scriptlet's) ``systemctl`` calls are
answered here, on the build root: ``enable``/``disable``/``preset``/``mask`` and friends
create or remove the symlinks under ``etc/systemd/system`` that systemd documents, from
the units' ``[Install]`` sections and the preset files; ``start``, ``restart`` and the like
do nothing; ``is-active`` says ``inactive``.

Everything happens inside the root: paths are resolved as if the root were ``/`` (an
absolute symlink such as ``lib -> /usr/lib`` is followed inside the root, never to the
host), and unit names from the command line or from unit files must be plain names.
"""

from __future__ import annotations

import os
import posixpath
import re
import stat
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path

from ocitree.errors import UserError

__all__ = ["SystemctlResult", "systemctl"]


@dataclass(frozen=True)
class SystemctlResult:
    exit_code: int
    stdout: str
    stderr: str


# Search paths inside the root, highest priority first (systemd.unit(5), "Unit File Load
# Path", without the runtime and generator directories a build does not have).
_UNIT_DIRS = (
    "/etc/systemd/system",
    "/usr/local/lib/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
)
_CONFIG_DIR = "/etc/systemd/system"
_PRESET_DIRS = (
    "/etc/systemd/system-preset",
    "/usr/local/lib/systemd/system-preset",
    "/usr/lib/systemd/system-preset",
    "/lib/systemd/system-preset",
)
_UNIT_TYPES = frozenset(
    [
        "service",
        "socket",
        "device",
        "mount",
        "automount",
        "swap",
        "target",
        "path",
        "timer",
        "slice",
        "scope",
    ]
)
_DEP_DIRS = (".wants", ".requires", ".upholds")
_NAME_RE = re.compile(r"[A-Za-z0-9:_.\\-]+(?:@[A-Za-z0-9:_.\\@-]*)?\.([a-z]+)")
_NAME_MAX = 255
_MAX_HOPS = 40
_DEV_NULL = "/dev/null"

_NOOP_VERBS = frozenset(
    [
        "start",
        "stop",
        "restart",
        "reload",
        "try-restart",
        "condrestart",
        "reload-or-restart",
        "try-reload-or-restart",
        "force-reload",
        "daemon-reload",
        "daemon-reexec",
        "reset-failed",
        "kill",
    ]
)
_FLAGS_IGNORED = frozenset(
    [
        "--no-reload",
        "--now",
        "--system",
        "--no-block",
        "--no-pager",
        "--no-ask-password",
        "--no-warn",
    ]
)
_FLAGS_UNSUPPORTED = frozenset({"--user", "--global", "--runtime"})
_PRESET_MODES = ("full", "enable-only", "disable-only")

_NO_INSTALL_NOTICE = (
    "The unit files have no installation config (WantedBy=, RequiredBy=, UpheldBy=,\n"
    "Also=, or Alias= settings in the [Install] section, and DefaultInstance= for\n"
    "template units). This means they are not meant to be enabled or disabled using\n"
    "systemctl; nothing was changed for them."
)


class _Failed(UserError):
    """Ends the command with exit code 1 and ``message`` on stderr."""


def systemctl(root: Path, argv: Sequence[str]) -> SystemctlResult:
    """Run ``systemctl ARGV`` (without the program name) offline on the image root ``root``."""
    ctl = _Systemctl(root)
    try:
        code = ctl.run(list(argv))
    except _Failed as e:
        ctl.err.append(e.message)
        code = 1
    except OSError as e:
        ctl.err.append(f"systemctl: {e}")
        code = 1
    return SystemctlResult(code, _text(ctl.out), _text(ctl.err))


def _text(lines: list[str]) -> str:
    return "".join(line + "\n" for line in lines)


# Unit names


def _is_valid_name(name: str) -> bool:
    m = _NAME_RE.fullmatch(name)
    return (
        m is not None and m.group(1) in _UNIT_TYPES and len(name) <= _NAME_MAX and ".." not in name
    )


def _check_name(name: str, where: str = "") -> str:
    if not _is_valid_name(name):
        at = f" (in {where})" if where else ""
        raise _Failed(f"systemctl: invalid unit name {name!r}{at}")
    return name


def _mangle(arg: str) -> str:
    """A unit name from the command line: ``.service`` added when there is no unit type."""
    if "/" in arg or ".." in arg or not arg:
        raise _Failed(f"systemctl: invalid unit name {arg!r}: paths are not accepted")
    _, dot, suffix = arg.rpartition(".")
    if not dot or suffix not in _UNIT_TYPES:
        arg += ".service"
    return _check_name(arg)


def _parts(name: str) -> tuple[str, str | None, str]:
    """(prefix, instance, type): instance is None for a plain unit, "" for a template."""
    stem, _, suffix = name.rpartition(".")
    prefix, at, instance = stem.partition("@")
    return prefix, (instance if at else None), suffix


def _is_template(name: str) -> bool:
    return _parts(name)[1] == ""


def _instance(name: str) -> str | None:
    inst = _parts(name)[1]
    return inst or None


def _template_of(name: str) -> str:
    prefix, _, suffix = _parts(name)
    return f"{prefix}@.{suffix}"


def _instantiate(template: str, instance: str) -> str:
    prefix, _, suffix = _parts(template)
    return f"{prefix}@{instance}.{suffix}"


# Unit files


@dataclass(frozen=True)
class _Install:
    """A unit file's ``[Install]`` section (drop-ins do not contribute to it)."""

    wanted_by: tuple[str, ...] = ()
    required_by: tuple[str, ...] = ()
    upheld_by: tuple[str, ...] = ()
    alias: tuple[str, ...] = ()
    also: tuple[str, ...] = ()
    default_instance: str | None = None

    @property
    def has_rules(self) -> bool:
        return bool(self.wanted_by or self.required_by or self.upheld_by or self.alias)

    def deps(self) -> Iterator[tuple[str, str]]:
        """(directory suffix, target) for each WantedBy=/RequiredBy=/UpheldBy= value."""
        for kind, targets in zip(
            _DEP_DIRS, (self.wanted_by, self.required_by, self.upheld_by), strict=True
        ):
            for target in targets:
                yield kind, target


_LIST_KEYS = {
    "WantedBy": "wanted_by",
    "RequiredBy": "required_by",
    "UpheldBy": "upheld_by",
    "Alias": "alias",
    "Also": "also",
}


def _logical_lines(text: str) -> Iterator[str]:
    """Non-empty, non-comment lines with backslash continuations joined."""
    pending: str | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if pending is not None:
            if line.startswith(("#", ";")):
                continue
            if line.endswith("\\"):
                pending += " " + line[:-1]
                continue
            yield pending + " " + line
            pending = None
            continue
        if not line or line.startswith(("#", ";")):
            continue
        if line.endswith("\\"):
            pending = line[:-1]
            continue
        yield line
    if pending is not None:
        yield pending


def _parse_install(text: str) -> _Install:
    lists: dict[str, list[str]] = {attr: [] for attr in _LIST_KEYS.values()}
    default_instance: str | None = None
    section = ""
    for line in _logical_lines(text):
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip()
            continue
        if section != "Install" or "=" not in line:
            continue
        key, _, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if key in _LIST_KEYS:
            words = [w.strip("\"'") for w in value.split()]
            target = lists[_LIST_KEYS[key]]
            if not words:
                target.clear()  # an empty assignment resets the list
            target.extend(w for w in words if w)
        elif key == "DefaultInstance":
            default_instance = value or None
    return _Install(
        wanted_by=tuple(lists["wanted_by"]),
        required_by=tuple(lists["required_by"]),
        upheld_by=tuple(lists["upheld_by"]),
        alias=tuple(lists["alias"]),
        also=tuple(lists["also"]),
        default_instance=default_instance,
    )


@dataclass(frozen=True)
class _Unit:
    name: str  # the unit's name; an instance's own name when an instance was asked for
    file_name: str  # the name of its unit file: the template's, for an instance
    path: str  # the unit file's path inside the root: what new symlinks point to
    real: str  # the same with all symlinks resolved
    install: _Install = field(default_factory=_Install)
    masked: bool = False
    alias_of: str | None = None  # the name asked for, when that is an alias of this unit

    @property
    def is_template(self) -> bool:
        return _is_template(self.name)

    def link_name(self, instance: str | None = None) -> str | None:
        """The name of its ``.wants/`` links: for a template, an instance's (or None)."""
        if not self.is_template:
            return self.name
        inst = instance or self.install.default_instance
        return _instantiate(self.name, inst) if inst else None


def _expand(value: str, name: str, where: str) -> str:
    """Resolve the unit-name specifiers an [Install] value may use (systemd.unit(5))."""
    prefix, instance, _ = _parts(name)
    out: list[str] = []
    i = 0
    while i < len(value):
        c = value[i]
        if c != "%":
            out.append(c)
            i += 1
            continue
        spec = value[i + 1 : i + 2]
        i += 2
        if spec == "%":
            out.append("%")
        elif spec == "n":
            out.append(name)
        elif spec == "N":
            out.append(name.rpartition(".")[0])
        elif spec == "p":
            out.append(prefix)
        elif spec == "i":
            out.append(instance or "")
        elif spec == "j":
            out.append(prefix.rpartition("-")[2])
        else:
            raise _Failed(f"systemctl: specifier %{spec} in {where} is not supported")
    return "".join(out)


# Presets


@dataclass(frozen=True)
class _Rule:
    action: str  # "enable", "disable" or "ignore"
    pattern: str
    instances: tuple[str, ...] = ()

    def matches(self, name: str) -> bool:
        if fnmatchcase(name, self.pattern):
            return True
        inst = _instance(name)
        # "enable foo@.service a b" covers the instances a and b of foo@.service.
        return bool(
            self.instances
            and inst
            and inst in self.instances
            and fnmatchcase(_template_of(name), self.pattern)
        )


def _parse_presets(text: str) -> list[_Rule]:
    rules: list[_Rule] = []
    for line in text.splitlines():
        words = line.split()
        if not words or words[0].startswith(("#", ";")) or len(words) < 2:
            continue
        action = words[0]
        if action == "enable":
            rules.append(_Rule(action, words[1], tuple(words[2:])))
        elif action in ("disable", "ignore"):
            rules.append(_Rule(action, words[1]))
    return rules


# Options


@dataclass
class _Options:
    quiet: bool = False
    force: bool = False
    preset_mode: str = "full"


def _parse_args(argv: list[str]) -> tuple[_Options, list[str]]:
    opts = _Options()
    words: list[str] = []
    i = 0
    only_words = False
    while i < len(argv):
        arg = argv[i]
        i += 1
        if only_words or arg == "-" or not arg.startswith("-"):
            words.append(arg)
        elif arg == "--":
            only_words = True
        elif arg.startswith("--"):
            name, eq, value = arg.partition("=")
            if name in ("--root", "--preset-mode") and not eq:
                if i >= len(argv):
                    raise _Failed(f"systemctl: option '{name}' requires an argument")
                value = argv[i]
                i += 1
            if name == "--quiet":
                opts.quiet = True
            elif name == "--force":
                opts.force = True
            elif name == "--root":
                pass  # the root is given
            elif name == "--preset-mode":
                if value not in _PRESET_MODES:
                    raise _Failed(f"systemctl: unknown preset mode {value!r}")
                opts.preset_mode = value
            elif name in _FLAGS_UNSUPPORTED:
                raise _Failed(f"systemctl: {name} is not supported in an image build")
            elif name not in _FLAGS_IGNORED:
                raise _Failed(f"systemctl: unrecognized option '{arg}'")
            if eq and name not in ("--root", "--preset-mode"):
                raise _Failed(f"systemctl: option '{name}' doesn't allow an argument")
        else:
            for ch in arg[1:]:
                if ch == "q":
                    opts.quiet = True
                elif ch == "f":
                    opts.force = True
                else:
                    raise _Failed(f"systemctl: invalid option -- '{ch}'")
    return opts, words


# The command


class _Systemctl:
    def __init__(self, root: Path) -> None:
        self.host = Path(os.path.abspath(root))
        self.opts = _Options()
        self.out: list[str] = []
        self.err: list[str] = []
        self._dirs: list[str] | None = None
        self._rules: list[_Rule] | None = None

    # Paths inside the root

    def resolve(self, inner: str, *, follow_last: bool = True) -> tuple[Path, str]:
        """The host path of ``inner`` and its resolved path inside the root.

        Symlinks are followed as if the root were ``/``, so the result is always under the
        root; missing components are kept as they are (the path may not exist).
        """
        pending = deque(p for p in inner.split("/") if p not in ("", "."))
        done: list[str] = []
        hops = 0
        while pending:
            part = pending.popleft()
            if part == "..":
                if done:
                    done.pop()
                continue
            if not pending and not follow_last:
                done.append(part)
                break
            here = self.host.joinpath(*done, part)
            try:
                st = os.lstat(here)
            except (FileNotFoundError, NotADirectoryError):
                done.append(part)
                continue
            if not stat.S_ISLNK(st.st_mode):
                done.append(part)
                continue
            hops += 1
            if hops > _MAX_HOPS:
                raise _Failed(f"systemctl: too many levels of symbolic links in {inner}")
            target = os.readlink(here)
            if target.startswith("/"):
                done = []
            pending.extendleft(reversed([p for p in target.split("/") if p not in ("", ".")]))
        return self.host.joinpath(*done), "/" + "/".join(done)

    def link_target(self, link_dir_real: str, raw: str) -> str:
        """Where a symlink in ``link_dir_real`` with contents ``raw`` ends up, inside the root."""
        joined = raw if raw.startswith("/") else posixpath.join(link_dir_real, raw)
        return self.resolve(joined)[1]

    def unit_dirs(self) -> list[str]:
        """The unit search directories that exist, each once (``lib`` may be ``usr/lib``)."""
        if self._dirs is None:
            seen: set[str] = set()
            self._dirs = []
            for d in _UNIT_DIRS:
                host, real = self.resolve(d)
                if real not in seen and host.is_dir():
                    seen.add(real)
                    self._dirs.append(d)
        return self._dirs

    # Units

    def find(self, name: str) -> _Unit | None:
        """The unit ``name`` (an instance falls back to its template), first match wins."""
        candidates = [name]
        if _instance(name):
            candidates.append(_template_of(name))
        for file_name in candidates:
            for d in self.unit_dirs():
                unit = self._load(d, file_name, name)
                if unit is not None:
                    return unit
        return None

    def require(self, name: str, verb: str) -> _Unit:
        unit = self.find(name)
        if unit is None:
            raise _Failed(f"Failed to {verb} unit: Unit file {name} does not exist.")
        return unit

    def _load(self, directory: str, file_name: str, name: str) -> _Unit | None:
        inner = f"{directory}/{file_name}"
        host, _ = self.resolve(inner, follow_last=False)
        try:
            st = os.lstat(host)
        except (FileNotFoundError, NotADirectoryError):
            return None
        if stat.S_ISLNK(st.st_mode):
            if os.readlink(host) == _DEV_NULL:
                return _Unit(name, file_name, inner, inner, masked=True)
            real_host, real = self.resolve(inner)
            if real == _DEV_NULL:
                return _Unit(name, file_name, inner, inner, masked=True)
            if not real_host.is_file():
                return None  # dangling: not a unit file here
            install = self._read_install(real_host, real)
            real_file = posixpath.basename(real)
            if real_file != file_name and _is_valid_name(real_file):
                # An alias: the unit is the one the link points to.
                real_name = real_file
                inst = _instance(name)
                if inst and _is_template(real_file):
                    real_name = _instantiate(real_file, inst)
                alias_of = name if real_name != name else None
                return _Unit(real_name, real_file, real, real, install, alias_of=alias_of)
            return _Unit(name, file_name, real, real, install)
        if not stat.S_ISREG(st.st_mode):
            return None
        if st.st_size == 0:
            return _Unit(name, file_name, inner, inner, masked=True)
        _, real = self.resolve(inner)
        return _Unit(name, file_name, inner, real, self._read_install(host, real))

    def _read_install(self, host: Path, inner: str) -> _Install:
        try:
            text = host.read_bytes().decode("utf-8", errors="replace")
        except OSError as e:
            raise _Failed(f"systemctl: cannot read {inner}: {e.strerror}") from e
        return _parse_install(text)

    def closure(self, units: Iterable[_Unit], verb: str, *, strict: bool) -> list[_Unit]:
        """The units with the ones their ``Also=`` names, transitively, each once."""
        out: list[_Unit] = []
        seen: set[str] = set()
        queue = deque(units)
        while queue:
            unit = queue.popleft()
            if unit.name in seen:
                continue
            seen.add(unit.name)
            out.append(unit)
            for raw in unit.install.also:
                name = _check_name(
                    _expand(raw, unit.name, f"Also= of {unit.name}"), f"Also= of {unit.name}"
                )
                also = self.find(name)
                if also is None:
                    if strict:
                        raise _Failed(f"Failed to {verb} unit: Unit file {name} does not exist.")
                    continue
                if also.masked:
                    if strict:
                        raise _Failed(f"Failed to {verb} unit: Unit file {also.path} is masked.")
                    continue
                queue.append(also)
        return out

    def install_links(self, unit: _Unit, instance: str | None = None) -> list[tuple[str, str]]:
        """(link, target) pairs ``enable`` makes for ``unit`` (an instance of a template)."""
        link_name = unit.link_name(instance)
        spec_name = link_name or unit.name
        inst = _instance(spec_name)
        _, _, unit_type = _parts(unit.name)
        links: list[tuple[str, str]] = []
        for kind, raw in unit.install.deps():
            where = f"[Install] of {unit.file_name}"
            target = _check_name(_expand(raw, spec_name, where), where)
            if _is_template(target) and inst:
                target = _instantiate(target, inst)
            if link_name is not None and not _is_template(target):
                links.append((f"{_CONFIG_DIR}/{target}{kind}/{link_name}", unit.path))
        for raw in unit.install.alias:
            where = f"Alias= of {unit.file_name}"
            alias = _check_name(_expand(raw, spec_name, where), where)
            if _parts(alias)[2] != unit_type:
                raise _Failed(f"systemctl: Alias={alias} of {unit.name} has another unit type")
            if _is_template(alias) and inst:
                alias = _instantiate(alias, inst)
            if alias not in (unit.name, link_name):
                links.append((f"{_CONFIG_DIR}/{alias}", unit.path))
        return links

    # Symlinks

    def plan_links(self, links: Iterable[tuple[str, str]], verb: str) -> list[tuple[str, str]]:
        """Of ``links``, the ones to create; fails on a conflict (nothing is written)."""
        todo: list[tuple[str, str]] = []
        seen: set[str] = set()
        for link, target in links:
            if link in seen:
                continue
            seen.add(link)
            parent_host, parent_real = self.resolve(posixpath.dirname(link))
            host = parent_host / posixpath.basename(link)
            try:
                st = os.lstat(host)
            except (FileNotFoundError, NotADirectoryError):
                todo.append((link, target))
                continue
            if not stat.S_ISLNK(st.st_mode):
                raise _Failed(f"Failed to {verb} unit: File {link} already exists.")
            raw = os.readlink(host)
            if raw == target or (
                target != _DEV_NULL
                and raw != _DEV_NULL
                and self.link_target(parent_real, raw) == self.resolve(target)[1]
            ):
                continue  # already there
            if not self.opts.force:
                raise _Failed(
                    f"Failed to {verb} unit: File {link} already exists and is a symlink to {raw}."
                )
            todo.append((link, target))
        return todo

    def make_links(self, todo: list[tuple[str, str]]) -> None:
        for link, target in todo:
            parent_host, _ = self.resolve(posixpath.dirname(link))
            parent_host.mkdir(parents=True, exist_ok=True)
            host = parent_host / posixpath.basename(link)
            if host.is_symlink():
                host.unlink()  # --force
            os.symlink(target, host)
            self.info(f"Created symlink {link} → {target}.")

    def find_links(self, units: Iterable[_Unit]) -> list[tuple[str, Path]]:
        """The symlinks under etc/systemd/system that enable ``units``: (path, host path).

        In ``.wants/``, ``.requires/`` and ``.upholds/`` directories, links named after a
        unit (or an instance of a template, or an alias) or pointing to its file; at the
        top, alias links pointing to its file. Masks and the unit files themselves are
        never included.
        """
        names: set[str] = set()  # links by these names in .wants/ etc. are the units'
        files: set[str] = set()  # links anywhere to these files are the units'
        own_files: set[str] = set()  # files of the units, instances included
        tops: set[str] = set()  # the units' own entries at the top: never removed
        aliases: set[str] = set()  # alias links at the top, when they point to own_files
        for unit in units:
            tops.update((unit.name, unit.file_name))
            if unit.masked:
                names.add(unit.name)
                continue
            names.update(n for n in (unit.name, unit.link_name()) if n)
            for link, _ in self.install_links(unit):
                if posixpath.dirname(link) == _CONFIG_DIR:
                    aliases.add(posixpath.basename(link))
            own_files.update((unit.path, unit.real))
            if _instance(unit.name) is None:
                files.update((unit.path, unit.real))
        names.update(aliases)
        cfg_host, cfg_real = self.resolve(_CONFIG_DIR)
        if not cfg_host.is_dir():
            return []
        found: list[tuple[str, Path]] = []
        for entry in sorted(os.scandir(cfg_host), key=lambda e: e.name):
            if entry.is_symlink():
                if entry.name in tops:
                    continue
                raw = os.readlink(entry.path)
                if raw == _DEV_NULL:
                    continue
                target = self.link_target(cfg_real, raw)
                if target in files or (entry.name in aliases and target in own_files):
                    found.append((f"{_CONFIG_DIR}/{entry.name}", Path(entry.path)))
            elif entry.is_dir(follow_symlinks=False) and entry.name.endswith(_DEP_DIRS):
                sub_real = f"{cfg_real}/{entry.name}"
                for sub in sorted(os.scandir(entry.path), key=lambda e: e.name):
                    if not sub.is_symlink():
                        continue
                    raw = os.readlink(sub.path)
                    if raw == _DEV_NULL:
                        continue
                    if sub.name in names or self.link_target(sub_real, raw) in files:
                        found.append((f"{_CONFIG_DIR}/{entry.name}/{sub.name}", Path(sub.path)))
        return found

    def remove_links(self, links: list[tuple[str, Path]]) -> None:
        emptied: set[Path] = set()
        for link, host in links:
            host.unlink()
            self.info(f'Removed "{link}".')
            if posixpath.dirname(link) != _CONFIG_DIR:
                emptied.add(host.parent)
        for d in sorted(emptied):
            if not any(d.iterdir()):
                d.rmdir()

    def info(self, line: str) -> None:
        if not self.opts.quiet:
            self.err.append(line)

    def say(self, line: str) -> None:
        if not self.opts.quiet:
            self.out.append(line)

    # Verbs

    def run(self, argv: list[str]) -> int:
        self.opts, words = _parse_args(argv)
        if not self.host.is_dir():
            raise _Failed(f"systemctl: root directory {self.host} does not exist")
        verb, args = (words[0], words[1:]) if words else ("list-units", [])
        if verb in _NOOP_VERBS:
            return 0  # no systemd runs in a build
        if verb == "preset-all":
            return self.preset(None)
        if verb == "get-default":
            return self.get_default()
        if verb == "is-active":
            return self.fixed_state(args, "inactive", 3)
        if verb == "is-failed":
            return self.fixed_state(args, "inactive", 1)
        unit_verbs: dict[str, Callable[[list[str]], int]] = {
            "enable": self.enable,
            "disable": self.disable,
            "reenable": self.reenable,
            "preset": self.preset,
            "mask": self.mask,
            "unmask": self.unmask,
            "is-enabled": self.is_enabled,
            "set-default": self.set_default,
        }
        handler = unit_verbs.get(verb)
        if handler is None:
            raise _Failed(f"systemctl: '{verb}' is not supported in an image build")
        if not args:
            raise _Failed("Too few arguments.")
        return handler([_mangle(a) for a in args])

    def fixed_state(self, args: list[str], state: str, code: int) -> int:
        if not args:
            raise _Failed("Too few arguments.")
        for _ in args:
            self.say(state)
        return code

    def enable(self, names: list[str], verb: str = "enable") -> int:
        units = [self.require(n, verb) for n in names]
        for unit in units:
            if unit.masked:
                raise _Failed(f"Failed to {verb} unit: Unit file {unit.path} is masked.")
        links: list[tuple[str, str]] = []
        notice = False
        for unit in units:
            own = self.install_links(unit)
            if not own and not unit.install.also:
                notice = True
            links += own
        asked = {u.name for u in units}
        for unit in self.closure(units, verb, strict=True):
            if unit.name not in asked:
                links += self.install_links(unit)
        self.make_links(self.plan_links(links, verb))
        if notice:
            self.info(_NO_INSTALL_NOTICE)
        return 0

    def disable(self, names: list[str], verb: str = "disable") -> int:
        units = [self.require(n, verb) for n in names]
        self.remove_links(self.find_links(self.closure(units, verb, strict=False)))
        return 0

    def reenable(self, names: list[str]) -> int:
        self.disable(names, "reenable")
        return self.enable(names, "reenable")

    def is_enabled(self, names: list[str]) -> int:
        states = [self.state(n) for n in names]
        for s in states:
            self.say(s)
        if any(s in ("enabled", "static", "alias", "indirect") for s in states):
            return 0
        return 4 if all(s == "not-found" for s in states) else 1

    def state(self, name: str) -> str:
        unit = self.find(name)
        if unit is None:
            return "not-found"
        if unit.masked:
            return "masked"
        if unit.alias_of is not None:
            return "alias"
        links = self.find_links([unit])
        if links:
            if not unit.is_template:
                return "enabled"
            own = {posixpath.basename(link) for link, _ in self.install_links(unit)}
            return "enabled" if any(posixpath.basename(p) in own for p, _ in links) else "indirect"
        if unit.install.has_rules:
            return "disabled"
        return "indirect" if unit.install.also else "static"

    def mask(self, names: list[str]) -> int:
        links = [(f"{_CONFIG_DIR}/{n}", _DEV_NULL) for n in names]
        self.make_links(self.plan_links(links, "mask"))
        return 0

    def unmask(self, names: list[str]) -> int:
        cfg_host, cfg_real = self.resolve(_CONFIG_DIR)
        for name in names:
            host = cfg_host / name
            if not host.is_symlink():
                continue
            raw = os.readlink(host)
            if raw == _DEV_NULL or self.link_target(cfg_real, raw) == _DEV_NULL:
                host.unlink()
                self.info(f'Removed "{_CONFIG_DIR}/{name}".')
        return 0

    def set_default(self, names: list[str]) -> int:
        if len(names) != 1:
            raise _Failed("systemctl: set-default takes one unit")
        unit = self.require(names[0], "set default")
        if unit.masked:
            raise _Failed(f"Failed to set default target: Unit file {unit.path} is masked.")
        link = f"{_CONFIG_DIR}/default.target"
        saved = self.opts.force
        self.opts.force = True  # set-default replaces the old default
        try:
            self.make_links(self.plan_links([(link, unit.path)], "set default"))
        finally:
            self.opts.force = saved
        return 0

    def get_default(self) -> int:
        unit = self.find("default.target")
        if unit is None or unit.masked:
            raise _Failed("Failed to get default target: No such file or directory")
        self.out.append(unit.name)
        return 0

    # Presets

    def rules(self) -> list[_Rule]:
        """The preset rules: files in order of name, a name in etc hiding the same in usr."""
        if self._rules is None:
            files: dict[str, str] = {}
            for d in _PRESET_DIRS:
                host, _ = self.resolve(d)
                if not host.is_dir():
                    continue
                for entry in os.scandir(host):
                    if entry.name.endswith(".preset") and entry.name not in files:
                        files[entry.name] = f"{d}/{entry.name}"
            self._rules = []
            for base in sorted(files):
                inner = files[base]
                host, _ = self.resolve(inner, follow_last=False)
                if host.is_symlink() and os.readlink(host) == _DEV_NULL:
                    continue  # masked preset file
                real_host, _ = self.resolve(inner)
                if real_host.is_file():
                    text = real_host.read_bytes().decode("utf-8", errors="replace")
                    self._rules += _parse_presets(text)
        return self._rules

    def preset_for(self, name: str) -> _Rule:
        for rule in self.rules():
            if rule.matches(name):
                return rule
        return _Rule("enable", "*")  # no rule: enable

    def all_units(self) -> list[_Unit]:
        units: list[_Unit] = []
        seen: set[str] = set()
        for d in self.unit_dirs():
            host, _ = self.resolve(d)
            for entry in sorted(os.scandir(host), key=lambda e: e.name):
                if entry.name in seen or not _is_valid_name(entry.name):
                    continue
                seen.add(entry.name)
                unit = self.find(entry.name)
                if unit is not None and not unit.masked and unit.alias_of is None:
                    units.append(unit)
        return units

    def preset(self, names: list[str] | None) -> int:
        units = self.all_units() if names is None else [self.require(n, "preset") for n in names]
        mode = self.opts.preset_mode
        enable: list[tuple[_Unit, str | None]] = []
        disable: list[_Unit] = []
        for unit in units:
            if unit.masked:
                continue
            rule = self.preset_for(unit.name)
            if rule.action == "enable" and mode != "disable-only":
                if unit.is_template and not _instance(unit.name) and rule.instances:
                    enable += [(unit, inst) for inst in rule.instances]
                else:
                    enable.append((unit, None))
            elif rule.action == "disable" and mode != "enable-only":
                disable.append(unit)
        links: list[tuple[str, str]] = []
        for unit, inst in enable:
            links += self.install_links(unit, inst)
        asked = {u.name for u, _ in enable}
        for unit in self.closure([u for u, _ in enable], "preset", strict=False):
            if unit.name not in asked:
                links += self.install_links(unit)
        wanted = {link for link, _ in links}
        removals = [
            (link, host)
            for link, host in self.find_links(self.closure(disable, "preset", strict=False))
            if link not in wanted
        ]
        todo = self.plan_links(links, "preset")
        self.remove_links(removals)
        self.make_links(todo)
        return 0
