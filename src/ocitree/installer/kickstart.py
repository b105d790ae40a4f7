"""Kickstarts that install an ostree commit or an ostree container image with MicroShift's
disk layout, validated with pykickstart before anyone sees them.

:func:`render` turns :class:`KickstartOptions` into kickstart text: the payload
(``ostreesetup`` for a commit served over HTTP or ``file://``, as osbuild's edge installer
writes it; ``ostreecontainer`` for an image), MicroShift's LVM layout (``/boot/efi``,
``/boot``, one physical volume that grows, a volume group whose free space is left for
MicroShift's LVMS storage, a root logical volume of a fixed size), the blueprint's users,
groups, keys, host name and services, and the registry credentials and pull secret,
written in ``%post`` (and, for an image install, in ``%pre`` too: anaconda pulls the image
with the ostree container stack, which reads ``/etc/ostree/auth.json`` of the installer
environment). The result is parsed with pykickstart's handler for the chosen version
(what ``ksvalidator`` and anaconda do) and the parsed values are checked against the
options, so text that anaconda would read differently is never returned.
"""

from __future__ import annotations

import functools
import json
import re
import shlex
import urllib.parse
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pykickstart.errors import KickstartDeprecationWarning, KickstartError, KickstartParseWarning
from pykickstart.parser import KickstartParser
from pykickstart.version import makeVersion, versionMap

from ocitree.build.blueprint import HOSTNAME, ZONE, Blueprint, User
from ocitree.errors import UserError
from ocitree.log import logger

__all__ = [
    "AUTH_FILE",
    "DEFAULT_VERSION",
    "PULL_SECRET_FILE",
    "CommitSource",
    "ContainerSource",
    "KickstartOptions",
    "KickstartValidationError",
    "parse_size",
    "read_auth_file",
    "render",
    "supported_versions",
    "validate",
]

DEFAULT_VERSION = "RHEL9"
AUTH_FILE = "/etc/ostree/auth.json"  # what rpm-ostree, bootc and ostree-ext read as root
PULL_SECRET_FILE = "/etc/crio/openshift-pull-secret"  # CRI-O's global_auth_file in MicroShift
EFI_SIZE_MIB = 200
BOOT_SIZE_MIB = 800
MIN_ROOT_MIB = 1024
TRANSPORTS = ("registry", "oci", "oci-archive")
_HEREDOC_END = "OCITREE_EOF"

_OSNAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_REF = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*(?:/[A-Za-z0-9_][A-Za-z0-9._-]*)*")
_IMAGE = re.compile(
    r"(?:[A-Za-z0-9.-]+(?::[0-9]+)?/)?[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[0-9a-f]{64})?"
)
_LOCAL_IMAGE = re.compile(r"/[A-Za-z0-9_.@/+-]*(?::[A-Za-z0-9_.@-][A-Za-z0-9_.:@-]*)?")
_VG = re.compile(r"[A-Za-z0-9_+][A-Za-z0-9_+.-]{0,126}")
_DISK = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:/-]*")
_LANG = re.compile(r"[a-z]{2,3}(?:_[A-Z]{2})?(?:\.[A-Za-z0-9-]+)?(?:@[A-Za-z0-9]+)?")
_KEYMAP = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_HASH = re.compile(r"\$(?:1|2[abxy]|5|6|7|y|gy)\$[^:\s]+")
_SIZE = re.compile(r"([0-9]+)\s*(|M|MB|MiB|G|GB|GiB|T|TB|TiB)", re.IGNORECASE)
# Besides "\n", str.splitlines() (pykickstart's line splitter) breaks lines at these.
_LINE_BREAKS = frozenset("\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")


class KickstartValidationError(Exception):
    """pykickstart rejected or misread a kickstart that :func:`render` wrote: a bug."""


# --------------------------------------------------------------------------- options


@dataclass(frozen=True)
class CommitSource:
    """An ostree commit pulled from a repository over http(s) or from ``file://``."""

    url: str
    ref: str
    osname: str = "rhel"
    remote: str | None = None  # default: anaconda names the remote after osname
    gpg_verify: bool = True


@dataclass(frozen=True)
class ContainerSource:
    """An ostree container image (``ostreecontainer``)."""

    image: str  # registry: HOST/NAME[:TAG][@DIGEST]; oci, oci-archive: /PATH[:TAG]
    transport: str = "registry"
    stateroot: str | None = None  # default: anaconda's ("default")
    remote: str | None = None
    verify_signatures: bool = True


@dataclass(frozen=True)
class KickstartOptions:
    source: CommitSource | ContainerSource
    version: str = DEFAULT_VERSION
    root_size_mib: int = 10240
    volume_group: str = "rhel"
    disk: str | None = None  # only this disk is used (ignoredisk --only-use)
    reqpart: bool = False  # platform boot partitions (reqpart --add-boot), not /boot/efi
    lang: str | None = None  # None: the blueprint's, else en_US.UTF-8
    keyboard: str | None = None  # None: the blueprint's, else us
    timezone: str | None = None  # None: the blueprint's, else UTC
    hostname: str | None = None  # None: the blueprint's, else none
    root_password: str | None = None  # a crypt(3) hash; None: the root account is locked
    blueprint: Blueprint | None = None
    auth_json: str | None = None  # registry credentials, containers-auth.json(5)
    pull_secret: str | None = None  # the OpenShift pull secret for CRI-O

    @property
    def has_secrets(self) -> bool:
        """Whether the kickstart holds credentials or a password hash (write it 0600)."""
        users = self.blueprint.customizations.users if self.blueprint else ()
        passwords = any(u.password for u in users)
        return bool(self.auth_json or self.pull_secret or self.effective_root_password or passwords)

    @property
    def effective_root_password(self) -> str | None:
        if self.root_password:
            return self.root_password
        users = self.blueprint.customizations.users if self.blueprint else ()
        return next((u.password for u in users if u.name == "root" and u.password), None)


# --------------------------------------------------------------------------- inputs


def supported_versions() -> list[str]:
    """pykickstart's version names that have ``ostreesetup``, oldest first."""
    names = [n for n in versionMap if n != "DEVEL" and "ostreesetup" in _commands(n)]
    return sorted(names, key=lambda n: (versionMap[n], n))


@functools.cache
def _commands(name: str) -> dict[str, Any]:
    commands: dict[str, Any] = makeVersion(versionMap[name]).commands
    return commands


def _version(name: str) -> str:
    """pykickstart's name for ``name`` (any case) if it can install ostree, else UserError."""
    key = name.strip().upper()
    if key in versionMap and "ostreesetup" in _commands(key):
        return key
    known = supported_versions()
    rhel = [n for n in known if n.startswith("RHEL")]
    fedora = [n for n in known if n.startswith("F")][-4:]
    raise UserError(
        f"unknown kickstart version {name!r}",
        hint=f"one of {', '.join(rhel + fedora)}, ... (pykickstart's names, e.g. RHEL9, F40)",
    )


def parse_size(text: str) -> int:
    """A size in MiB: ``10240`` (MiB), ``512M``, ``10G``/``10GiB``, ``1T`` (binary units)."""
    m = _SIZE.fullmatch(text.strip())
    if not m:
        raise UserError(f"invalid size {text!r}", hint="write MiB as a number, or e.g. 10G, 512M")
    unit = m.group(2)[:1].upper()
    mib = int(m.group(1)) * {"": 1, "M": 1, "G": 1024, "T": 1024 * 1024}[unit]
    if mib < MIN_ROOT_MIB:
        raise UserError(f"size {text!r} is too small", hint=f"at least {MIN_ROOT_MIB} MiB (1G)")
    return mib


def read_auth_file(path: Path, what: str = "registry auth file") -> str:
    """The text of a containers-auth.json(5) file (``{"auths": {...}}``), checked."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(
            f"cannot read the {what} {path}: {getattr(e, 'strerror', None) or e}"
        ) from e
    text = text.replace("\r\n", "\n").replace("\r", "\n").strip()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(
            f"the {what} {path} is not valid JSON: {e}", hint="give a containers auth.json file"
        ) from e
    if not isinstance(data, dict) or not isinstance(data.get("auths"), dict):
        raise UserError(
            f'the {what} {path} has no "auths" object',
            hint='write {"auths": {"HOST": {"auth": "BASE64(user:password)"}}}',
        )
    if any(c in _LINE_BREAKS for c in text):
        raise UserError(
            f"the {what} {path} holds a line separator character inside a string",
            hint="write it as a JSON escape (\\u2028)",
        )
    return text + "\n"


# --------------------------------------------------------------------------- checks


def _check(value: str, pattern: re.Pattern[str], what: str, hint: str) -> str:
    if not pattern.fullmatch(value):
        raise UserError(f"invalid {what} {value!r}", hint=hint)
    return value


def _plain(value: str, what: str) -> str:
    """Free text for a command line: no control characters or line breaks."""
    if any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F or c in _LINE_BREAKS for c in value):
        raise UserError(f"{what} {value!r} contains a control character or line break")
    return value


def _check_source(source: CommitSource | ContainerSource) -> None:
    if isinstance(source, CommitSource):
        url = urllib.parse.urlsplit(source.url)
        ok = (url.scheme in ("http", "https") and url.hostname) or (
            url.scheme == "file" and url.path.startswith("/") and not url.netloc
        )
        if not ok or any(c.isspace() or c in "'\"\\" for c in source.url):
            raise UserError(
                f"invalid ostree repository URL {source.url!r}",
                hint="http://HOST[:PORT]/PATH, https://..., or file:///PATH (anaconda's choices)",
            )
        _plain(source.url, "ostree repository URL")
        _check(source.ref, _REF, "ostree ref", "e.g. rhel/9/x86_64/edge, or a commit checksum")
        names: list[str | None] = [source.osname, source.remote]
    else:
        if source.transport not in TRANSPORTS:
            raise UserError(
                f"unknown transport {source.transport!r}", hint=f"one of {', '.join(TRANSPORTS)}"
            )
        if source.transport == "registry":
            _check(source.image, _IMAGE, "image", "HOST[:PORT]/NAME[:TAG][@sha256:DIGEST]")
        else:
            _check(source.image, _LOCAL_IMAGE, f"{source.transport} path", "/PATH[:TAG]")
        names = [source.stateroot, source.remote]
    for name in names:
        if name is not None:
            _check(name, _OSNAME, "osname/remote", "letters, digits, '_', '.', '-'")


def _check_options(o: KickstartOptions) -> None:
    _check_source(o.source)
    if o.root_size_mib < MIN_ROOT_MIB:
        raise UserError(f"root size {o.root_size_mib} MiB is too small", hint="at least 1G")
    _check(o.volume_group, _VG, "volume group name", "letters, digits, '_', '+', '.', '-'")
    if o.disk is not None:
        _check(o.disk, _DISK, "disk", "e.g. vda, sda, nvme0n1, /dev/disk/by-id/...")
    if o.lang is not None:
        _check(o.lang, _LANG, "language", "e.g. en_US.UTF-8")
    if o.keyboard is not None:
        _check(o.keyboard, _KEYMAP, "keyboard", "a console keymap, e.g. us, de-nodeadkeys")
    if o.timezone is not None:
        _check(o.timezone, ZONE, "time zone", "e.g. UTC, Europe/Berlin")
    if o.hostname is not None:
        _check(o.hostname, HOSTNAME, "host name", "e.g. edge-01.example.com")
    if o.root_password is not None:
        _check(o.root_password, _HASH, "root password hash", "a crypt(3) hash: openssl passwd -6")


# --------------------------------------------------------------------------- rendering


def _q(value: str) -> str:
    """One word for pykickstart's shlex split (and anaconda's, the same code)."""
    return shlex.quote(value)


def _opt(name: str, value: str | int) -> str:
    return f"--{name}={_q(str(value))}"


def _payload(source: CommitSource | ContainerSource) -> list[str]:
    if isinstance(source, CommitSource):
        words = ["ostreesetup", _opt("osname", source.osname)]
        if source.remote:
            words.append(_opt("remote", source.remote))
        words += [_opt("url", source.url), _opt("ref", source.ref)]
        if not source.gpg_verify:
            words.append("--nogpg")
        return ["# The OS: an ostree commit", " ".join(words)]
    words = ["ostreecontainer"]
    if source.stateroot:
        words.append(_opt("stateroot", source.stateroot))
    if source.remote:
        words.append(_opt("remote", source.remote))
    words += [_opt("url", source.image), _opt("transport", source.transport)]
    if not source.verify_signatures:
        words.append("--no-signature-verification")
    return ["# The OS: an ostree container image", " ".join(words)]


def _storage(o: KickstartOptions) -> list[str]:
    vg = o.volume_group
    lines = [
        "# MicroShift's layout: a root logical volume of a fixed size; the rest of the",
        f"# volume group {vg} stays free for MicroShift's storage (LVMS)",
    ]
    if o.disk:
        lines.append(f"ignoredisk --only-use={_q(o.disk)}")
    lines += ["zerombr", "clearpart --all --initlabel"]
    if o.reqpart:
        lines.append("reqpart --add-boot")
    else:
        lines += [
            f"part /boot/efi --fstype=efi --size={EFI_SIZE_MIB}",
            f"part /boot --fstype=xfs --size={BOOT_SIZE_MIB}",
        ]
    lines += [
        "part pv.01 --grow",
        f"volgroup {vg} pv.01",
        f"logvol / --vgname={vg} --fstype=xfs --size={o.root_size_mib} --name=root",
    ]
    return lines


def _system(o: KickstartOptions) -> list[str]:
    c = o.blueprint.customizations if o.blueprint else None
    lang = o.lang or (c.languages[0] if c and c.languages else "en_US.UTF-8")
    extra_langs = [x for x in (c.languages[1:] if c and not o.lang else ()) if x != lang]
    keyboard = o.keyboard or (c.keyboard if c and c.keyboard else "us")
    zone = o.timezone or (c.timezone if c and c.timezone else "UTC")
    hostname = o.hostname or (c.hostname if c else None)
    lang_line = f"lang {_q(lang)}"
    if extra_langs:
        lang_line += f" --addsupport={_q(','.join(extra_langs))}"
    network = "network --bootproto=dhcp --device=link --activate --onboot=on"
    if hostname:
        network += f" {_opt('hostname', hostname)}"
    password = o.effective_root_password
    rootpw = f"rootpw --iscrypted {_q(password)}" if password else "rootpw --lock"
    lines = [
        "text",
        "reboot",
        lang_line,
        f"keyboard {_opt('vckeymap', keyboard)}",
        f"timezone {_q(zone)} --utc",
        network,
        rootpw,
    ]
    if c and c.kernel_append:
        kargs = " ".join(_plain(a, "kernel argument") for a in c.kernel_append)
        lines.append(f"bootloader {_opt('append', kargs)}")
    return lines


def _ssh_keys(bp: Blueprint) -> list[tuple[str, str]]:
    """(user, key) for every key line of the blueprint's users and sshkeys."""
    c = bp.customizations
    pairs = [(u.name, u.key) for u in c.users if u.key] + [(k.user, k.key) for k in c.sshkeys]
    return [(user, ln.strip()) for user, key in pairs for ln in key.splitlines() if ln.strip()]


def _user(u: User) -> str:
    words = ["user", _opt("name", u.name)]
    if u.description:
        words.append(_opt("gecos", _plain(u.description, "user description")))
    for name, value in (("uid", u.uid), ("gid", u.gid), ("homedir", u.home), ("shell", u.shell)):
        if value is not None:
            words.append(_opt(name, value))
    if u.groups:
        words.append(_opt("groups", ",".join(u.groups)))
    if u.password:
        words += ["--iscrypted", _opt("password", u.password)]
    return " ".join(words)


def _accounts(bp: Blueprint) -> tuple[list[str], list[str]]:
    """Kickstart commands for the blueprint's groups, users, keys and services, and the
    %post lines for what kickstart has no command for (expiry dates, masked units).
    A user ``root`` gives its password to ``rootpw`` and its key to ``sshkey``."""
    c = bp.customizations
    lines = []
    for g in c.groups:
        gid = [] if g.gid is None else [_opt("gid", g.gid)]
        lines.append(" ".join(["group", _opt("name", g.name), *gid]))
    lines += [_user(u) for u in c.users if u.name != "root"]
    for user, key in _ssh_keys(bp):
        lines.append(f"sshkey {_opt('username', user)} {_q(_plain(key, 'SSH key'))}")
    words = []
    for what, units in (("enabled", c.services.enabled), ("disabled", c.services.disabled)):
        if any("," in u for u in units):
            raise UserError(f"a unit name in services.{what} contains ','")
        if units:
            words.append(_opt(what, ",".join(units)))
    if words:
        lines.append(" ".join(["services", *words]))
    post = [f"chage -E {u.expiredate} {_q(u.name)}" for u in c.users if u.expiredate is not None]
    post += [f"systemctl mask {_q(unit)}" for unit in c.services.masked]
    parts = {
        "packages": bp.packages,
        "modules": bp.modules,
        "customizations.files": c.files,
        "customizations.directories": c.directories,
    }
    ignored = [name for name, present in parts.items() if present]
    if ignored:
        logger.warning(
            "%s: %s belong to the image, not the kickstart: ignored",
            bp.filename,
            ", ".join(ignored),
        )
    return lines, post


def _secret_file(path: str, text: str) -> list[str]:
    """Shell lines writing ``text`` to ``path`` (0600, root's; the script sets umask 077
    first) through a quoted here-document, so the shell expands nothing in it."""
    body = text.splitlines()
    if any(c in _LINE_BREAKS for c in text) or any(
        ln.strip() == _HEREDOC_END or ln.lstrip().startswith("%") for ln in body
    ):
        raise ValueError(f"{path}: this content cannot go into a here-document")
    return [
        f"cat > {path} <<'{_HEREDOC_END}'",
        *body,
        _HEREDOC_END,
        f"chown root:root {path}",
        f"chmod 0600 {path}",
    ]


def _script(header: str, body: list[str], files: list[tuple[str, str]]) -> list[str]:
    lines = [header, "set -eu", *body]
    if files:
        dirs = sorted({path.rsplit("/", 1)[0] for path, _ in files})
        lines += [f"mkdir -p {' '.join(dirs)}", "umask 077"]
        for path, text in files:
            lines += _secret_file(path, text)
    return [*lines, "%end", ""]


def _container_versions() -> list[str]:
    return [n for n in supported_versions() if "ostreecontainer" in _commands(n)]


def render(o: KickstartOptions) -> str:
    """The kickstart for ``o``, validated (:func:`validate`); bad options are UserErrors."""
    _check_options(o)
    version = _version(o.version)
    container = isinstance(o.source, ContainerSource)
    commands = _commands(version)
    if o.reqpart and "reqpart" not in commands:
        raise UserError(f"kickstart version {o.version} has no reqpart command", hint="F23, RHEL7")
    if container and "ostreecontainer" not in commands:
        rhel = [n for n in _container_versions() if n.startswith("RHEL")]
        raise UserError(
            f"kickstart version {o.version} has no ostreecontainer command (image installs)",
            hint=f"use {', '.join(rhel)} or F38 and later, or install a commit with --ostree-url",
        )
    lines = [f"# Written by ocitree kickstart for {version}", ""]
    lines += [*_system(o), "", *_storage(o), ""]
    post: list[str] = []
    if o.blueprint:
        accounts, post = _accounts(o.blueprint)
        if accounts:
            lines += [f"# From the blueprint {Path(o.blueprint.filename).name}", *accounts, ""]
    lines += [*_payload(o.source), ""]
    files = [(AUTH_FILE, o.auth_json)] if o.auth_json else []
    if container and files:
        lines += [
            "# anaconda pulls the image with the ostree container stack, which reads",
            f"# {AUTH_FILE} of the installer environment",
            *_script("%pre --erroronfail --log=/tmp/ocitree-pre.log", [], files),
        ]
    if o.pull_secret:
        files.append((PULL_SECRET_FILE, o.pull_secret))
    if post or files:
        header = "%post --erroronfail --log=/var/log/anaconda/ocitree-post.log"
        lines += _script(header, post, files)
    text = "\n".join(lines)
    _check_parsed(validate(text, o.version), o)
    return text


# --------------------------------------------------------------------------- validation


def validate(text: str, version: str = DEFAULT_VERSION) -> Any:
    """Parse ``text`` as pykickstart's handler for ``version`` does, warnings being errors
    (as ksvalidator); returns the handler. Raises :class:`KickstartValidationError`."""
    handler = makeVersion(versionMap[_version(version)])
    parser = KickstartParser(handler, followIncludes=False, errorsAreFatal=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", KickstartParseWarning)
        warnings.simplefilter("error", KickstartDeprecationWarning)
        try:
            parser.readKickstartFromString(text)
        except (KickstartError, KickstartParseWarning, KickstartDeprecationWarning) as e:
            lineno = getattr(e, "lineno", None)
            message = getattr(e, "message", None) or str(e)
            where = f"line {lineno}" if lineno else "kickstart"
            if lineno and 0 < lineno <= len(text.splitlines()):
                where += f" ({text.splitlines()[lineno - 1]!r})"
            raise KickstartValidationError(
                f"pykickstart {version} rejects the kickstart: {where}: {message}".strip()
            ) from e
    if parser.errorsCount:
        raise KickstartValidationError(f"pykickstart {version} found {parser.errorsCount} errors")
    return handler


def _check_parsed(handler: Any, o: KickstartOptions) -> None:
    """What pykickstart read back must be what was asked for (the quoting is right)."""
    got: dict[str, object] = {}
    want: dict[str, object] = {}
    s = o.source
    if isinstance(s, CommitSource):
        ost = handler.ostreesetup
        got.update(url=ost.url, ref=ost.ref, osname=ost.osname, nogpg=bool(ost.nogpg))
        want.update(url=s.url, ref=s.ref, osname=s.osname, nogpg=not s.gpg_verify)
    else:
        ost = handler.ostreecontainer
        got.update(url=ost.url, transport=ost.transport, nosig=bool(ost.noSignatureVerification))
        want.update(url=s.image, transport=s.transport, nosig=not s.verify_signatures)
    root = [lv for lv in handler.logvol.lvList if lv.mountpoint == "/"]
    got.update(vg=[v.vgname for v in handler.volgroup.vgList])
    got.update(root=[(r.vgname, r.size) for r in root], rootpw=handler.rootpw.password or None)
    want.update(vg=[o.volume_group], root=[(o.volume_group, o.root_size_mib)])
    want.update(rootpw=o.effective_root_password)
    if o.blueprint:
        users = [u for u in o.blueprint.customizations.users if u.name != "root"]
        got["users"] = [(u.name, u.password or None, u.groups) for u in handler.user.userList]
        want["users"] = [(u.name, u.password, list(u.groups)) for u in users]
        got["keys"] = [(k.username, k.key) for k in handler.sshkey.sshUserList]
        want["keys"] = _ssh_keys(o.blueprint)
    for key, value in want.items():
        if got.get(key) != value:
            raise KickstartValidationError(
                f"pykickstart reads {key} as {got.get(key)!r}, not {value!r}"
            )
    scripts = [script.script for script in handler.scripts]
    for secret in (o.auth_json, o.pull_secret):
        if secret and not any(secret in script for script in scripts):
            raise KickstartValidationError("a credential file is not whole in a %post script")
