"""rpm-md repositories: ``.repo`` files, and their metadata and packages fetched over TLS.

:func:`read_repo_files` reads a build root's ``/etc/yum.repos.d/*.repo`` the way dnf does
(INI; ``$basearch``, ``$releasever`` and the variables of ``/etc/dnf/vars`` expanded).
Every path in a :class:`RepoConfig` is a path on the host: the certificates and
``file://`` URLs a repo file names are inside the build root and are resolved under it
(``/etc/x`` falls back to ``/usr/etc/x``, where an ostree commit keeps ``/etc``).

:class:`RepoMetadata` fetches ``repodata/repomd.xml`` and the files it lists with urllib,
presenting the client certificate the repo names (``sslclientcert``/``sslclientkey``:
Red Hat's entitlement certificates) and trusting ``sslcacert``; each file is checked
against the checksum repomd.xml gives and kept under the cache directory by checksum, so
a second build downloads only ``repomd.xml``.
"""

from __future__ import annotations

import bz2
import configparser
import contextlib
import gzip
import hashlib
import http.client
import lzma
import os
import platform
import re
import shutil
import ssl
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol

from ocitree.errors import UserError
from ocitree.log import logger

REPOS_DIRS = ("etc/yum.repos.d", "usr/etc/yum.repos.d")
VARS_DIRS = ("etc/dnf/vars", "etc/yum/vars")
TIMEOUT = 60.0
_CHUNK = 1 << 20
_REPO_NS = "{http://linux.duke.edu/metadata/repo}"
_METALINK_NS = "{http://www.metalinker.org/}"
_TRUE = {"1", "yes", "true", "on"}
_FALSE = {"0", "no", "false", "off"}
# uname -m -> dnf's $basearch
_BASEARCH = {
    "i386": "i386",
    "i486": "i386",
    "i586": "i386",
    "i686": "i386",
    "armv7l": "armhfp",
    "armv7hl": "armhfp",
    "armv8l": "armhfp",
    "arm64": "aarch64",
    "amd64": "x86_64",
    "ppc64le": "ppc64le",
    "ppc64": "ppc64",
    "s390x": "s390x",
    "aarch64": "aarch64",
    "x86_64": "x86_64",
    "riscv64": "riscv64",
}
_CLIENT_CERT_HINT = (
    "the server wants a client certificate: name it with sslclientcert= and sslclientkey= "
    "in the repo file (for Red Hat's CDN the entitlement certificate, "
    "/etc/pki/entitlement/<id>.pem and <id>-key.pem, copied into the build)"
)


@dataclass(frozen=True)
class RepoConfig:
    """One repository, as a ``.repo`` section or ``--repo`` describes it.

    ``baseurl`` is the first URL of ``baseurl=`` (``mirrors`` the others); it may be empty
    when only ``mirrorlist=`` or ``metalink=`` is given. Certificate and key paths and
    ``file://`` URLs are host paths (resolved under the build root).
    """

    id: str
    name: str
    baseurl: str
    enabled: bool
    gpgcheck: bool
    gpgkey: tuple[str, ...]
    sslclientcert: str | None
    sslclientkey: str | None
    sslcacert: str | None
    sslverify: bool
    mirrors: tuple[str, ...] = ()
    mirrorlist: str | None = None
    metalink: str | None = None
    priority: int = 99  # dnf's: lower wins
    source: str = ""  # the file it came from, or "--repo"
    root: str | None = None  # the build root its paths were resolved under

    def show(self, path: str | None) -> str:
        """A host path of this config as the build root sees it (for messages)."""
        if path and self.root and path.startswith(self.root.rstrip("/") + "/"):
            return path[len(self.root.rstrip("/")) :]
        return path or ""


# --------------------------------------------------------------------------- repo files


def host_arch() -> str:
    """The machine's architecture as rpm names it (``uname -m``)."""
    machine = platform.machine()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)


def basearch_of(arch: str) -> str:
    return _BASEARCH.get(arch, arch)


def os_release(root: Path) -> dict[str, str]:
    for rel in ("etc/os-release", "usr/lib/os-release", "usr/etc/os-release"):
        path = root / rel
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        out = {}
        for line in text.splitlines():
            key, sep, value = line.strip().partition("=")
            if sep and key and not key.startswith("#"):
                out[key] = value.strip().strip("\"'")
        return out
    return {}


def releasever_of(root: Path) -> str | None:
    """The major version of the root's ``VERSION_ID`` (``9`` for RHEL 9.2, ``38`` Fedora)."""
    version = os_release(root).get("VERSION_ID", "")
    major = version.split(".")[0]
    return major or None


def _read_vars(root: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for rel in VARS_DIRS:
        d = root / rel
        if not d.is_dir():
            continue
        for f in sorted(d.iterdir()):
            if f.is_file() and re.fullmatch(r"[A-Za-z0-9_]+", f.name):
                with contextlib.suppress(OSError):
                    out.setdefault(f.name, f.read_text(encoding="utf-8").strip())
    return out


def expand(text: str, variables: dict[str, str]) -> str:
    """Expand ``$name`` and ``${name}`` for the known variables; leave others as they are."""

    def sub(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        return variables.get(name, m.group(0))

    return re.sub(r"\$\{([A-Za-z0-9_]+)\}|\$([A-Za-z0-9_]+)", sub, text)


def _bool(value: str | None, default: bool, where: str) -> bool:
    if value is None or value.strip() == "":
        return default
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise UserError(f"{where}: {value!r} is not a boolean (use 1 or 0)")


def _split(value: str | None) -> list[str]:
    if not value:
        return []
    return [v for v in re.split(r"[\s,]+", value) if v]


def inside(root: Path, path: str) -> Path:
    """``path`` as the build root sees it, as a host path (``/etc`` may be ``/usr/etc``).

    Symlinks are not followed out of the root: ``..`` components are refused.
    """
    rel = path.lstrip("/")
    if ".." in Path(rel).parts:
        raise UserError(f"{path!r} leaves the build root")
    candidate = root / rel
    if not candidate.exists() and (rel == "etc" or rel.startswith("etc/")):
        alt = root / "usr" / rel
        if alt.exists():
            return alt
    return candidate


def _file_url_inside(root: Path, url: str) -> str:
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme != "file":
        return url
    path = urllib.parse.unquote(parsed.path)
    return inside(root, path).as_uri() + ("/" if url.endswith("/") else "")


def _cert_path(root: Path, value: str | None, key: str, where: str) -> str | None:
    if not value:
        return None
    if value.startswith("file://"):
        value = urllib.parse.unquote(urllib.parse.urlparse(value).path)
    if not value.startswith("/"):
        raise UserError(f"{where}: {key}={value} must be an absolute path")
    return str(inside(root, value))


def _repo_from_section(
    root: Path, section: configparser.SectionProxy, variables: dict[str, str], source: str
) -> RepoConfig:
    where = f"{source} [{section.name}]"

    def get(key: str) -> str | None:
        value = section.get(key)
        return expand(value.strip(), variables) if value is not None else None

    baseurls = [_file_url_inside(root, u) for u in _split(get("baseurl"))]
    mirrorlist = get("mirrorlist") or None
    metalink = get("metalink") or None
    enabled = _bool(get("enabled"), True, where)
    if not baseurls and not mirrorlist and not metalink and enabled:
        raise UserError(
            f"{where}: the repository has no baseurl, mirrorlist or metalink",
            hint="give it a baseurl= or disable it with enabled=0",
        )
    priority_text = get("priority") or "99"
    try:
        priority = int(priority_text)
    except ValueError as e:
        raise UserError(f"{where}: priority={priority_text} is not a number") from e
    return RepoConfig(
        id=section.name,
        name=get("name") or section.name,
        baseurl=baseurls[0] if baseurls else "",
        enabled=enabled,
        gpgcheck=_bool(get("gpgcheck"), False, where),
        gpgkey=tuple(_file_url_inside(root, k) for k in _split(get("gpgkey"))),
        sslclientcert=_cert_path(root, get("sslclientcert"), "sslclientcert", where),
        sslclientkey=_cert_path(root, get("sslclientkey"), "sslclientkey", where),
        sslcacert=_cert_path(root, get("sslcacert"), "sslcacert", where),
        sslverify=_bool(get("sslverify"), True, where),
        mirrors=tuple(baseurls[1:]),
        mirrorlist=_file_url_inside(root, mirrorlist) if mirrorlist else None,
        metalink=_file_url_inside(root, metalink) if metalink else None,
        priority=priority,
        source=source,
        root=str(root),
    )


def repo_from_argument(value: str, index: int = 1, *, option: str = "--repo") -> RepoConfig:
    """A ``--repo URL|DIR`` of the command line (a directory is a host path); ``option``
    is how messages name it."""
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", value):
        url = value
    else:
        path = Path(value).resolve()
        if not path.is_dir():
            raise UserError(
                f"{option} {value}: no such directory",
                hint="give an rpm-md repository (a directory with repodata/) or its URL",
            )
        url = path.as_uri()
    return RepoConfig(
        id=f"cmdline-{index}",
        name=value,
        baseurl=url,
        enabled=True,
        gpgcheck=False,
        gpgkey=(),
        sslclientcert=None,
        sslclientkey=None,
        sslcacert=None,
        sslverify=True,
        source="--repo",
    )


def read_repo_files(
    root: Path,
    *,
    extra: Sequence[str] = (),
    releasever: str | None = None,
    basearch: str | None = None,
) -> list[RepoConfig]:
    """The repositories of ``root/etc/yum.repos.d/*.repo`` then those of ``extra``.

    All sections are returned, disabled ones too (``enabled=False``). ``releasever``
    defaults to the major version of the root's os-release ``VERSION_ID``, ``basearch``
    to the machine's.
    """
    arch = basearch or host_arch()
    variables = _read_vars(root)
    variables["arch"] = arch
    variables["basearch"] = basearch_of(arch)
    rv = releasever or variables.get("releasever") or releasever_of(root)
    if rv:
        variables["releasever"] = rv
        variables.setdefault("releasever_major", rv.split(".")[0])
        minor = rv.split(".")[1] if "." in rv else ""
        variables.setdefault("releasever_minor", minor)
    repos: list[RepoConfig] = []
    seen: dict[str, str] = {}
    repos_dir = next((root / d for d in REPOS_DIRS if (root / d).is_dir()), None)
    files = sorted(repos_dir.glob("*.repo")) if repos_dir is not None else []
    for path in files:
        source = "/" + str(path.relative_to(root))
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError) as e:
            raise UserError(f"cannot read repo file {source}: {e}") from e
        for repo in parse_repo_text(text, source, variables, root=root):
            if repo.id in seen:
                raise UserError(
                    f"repository {repo.id!r} is defined in both {seen[repo.id]} and {source}"
                )
            seen[repo.id] = source
            repos.append(repo)
    for i, value in enumerate(extra, 1):
        repos.append(repo_from_argument(value, i))
    return repos


def repo_variables(*, releasever: str | None, basearch: str | None = None) -> dict[str, str]:
    """``$basearch``, ``$arch``, ``$releasever`` (and its major and minor) for repo files."""
    arch = basearch or host_arch()
    variables = {"arch": arch, "basearch": basearch_of(arch)}
    if releasever:
        variables["releasever"] = releasever
        variables["releasever_major"] = releasever.split(".")[0]
        variables["releasever_minor"] = releasever.split(".")[1] if "." in releasever else ""
    return variables


def parse_repo_text(
    text: str, source: str, variables: dict[str, str], *, root: Path = Path("/")
) -> list[RepoConfig]:
    """The repositories of one ``.repo`` file's text (paths in it resolved under ``root``)."""
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    try:
        parser.read_string(text, source=source)
    except configparser.Error as e:
        raise UserError(f"cannot read repo file {source}: {e}") from e
    return [
        _repo_from_section(root, parser[section], variables, source)
        for section in parser.sections()
        if section != "main"
    ]


# --------------------------------------------------------------------------- fetching


def ssl_context(repo: RepoConfig) -> ssl.SSLContext:
    """A client context with the repo's CA, client certificate and verification setting."""
    for key, path in (
        ("sslcacert", repo.sslcacert),
        ("sslclientcert", repo.sslclientcert),
        ("sslclientkey", repo.sslclientkey),
    ):
        if path and not Path(path).is_file():
            raise UserError(
                f"repository {repo.id}: {key} {repo.show(path)} does not exist",
                hint=f"copy the file into the build root before the install step "
                f"(the repo file {repo.source} names it)",
            )
    try:
        ctx = ssl.create_default_context(cafile=repo.sslcacert)
        if not repo.sslverify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if repo.sslclientcert:
            ctx.load_cert_chain(repo.sslclientcert, repo.sslclientkey)
        elif repo.sslclientkey:
            raise UserError(f"repository {repo.id}: sslclientkey is set without sslclientcert")
    except ssl.SSLError as e:
        raise UserError(
            f"repository {repo.id}: cannot use its TLS files: {e.reason or e}",
            hint="sslclientcert/sslclientkey must be PEM files of one certificate and its "
            "key, sslcacert a PEM file of CA certificates",
        ) from e
    return ctx


def _ssl_reason(e: BaseException) -> str:
    if isinstance(e, ssl.SSLCertVerificationError):
        return str(e.verify_message or e.reason or e)
    if isinstance(e, ssl.SSLError):
        return str(e.reason or e)
    return str(e)


class Fetcher:
    """Downloads for one repository, with its TLS settings."""

    def __init__(self, repo: RepoConfig) -> None:
        self.repo = repo
        self._ctx: ssl.SSLContext | None = None

    def _context(self) -> ssl.SSLContext:
        if self._ctx is None:
            self._ctx = ssl_context(self.repo)
        return self._ctx

    def _error(self, url: str, e: BaseException) -> UserError:
        repo = self.repo
        what = f"cannot download {url} (repository {repo.id})"
        reason = e.reason if isinstance(e, urllib.error.URLError) else e
        if isinstance(e, urllib.error.HTTPError):
            hint = None
            if e.code in (401, 403):
                hint = (
                    _CLIENT_CERT_HINT
                    if not repo.sslclientcert
                    else f"the server refused the client certificate "
                    f"{repo.show(repo.sslclientcert)}: "
                    "is the entitlement valid for this repository?"
                )
            elif e.code == 404:
                hint = f"check baseurl= of [{repo.id}] in {repo.source or 'the repo file'}"
            return UserError(f"{what}: HTTP {e.code} {e.reason}", hint=hint)
        if isinstance(reason, ssl.SSLCertVerificationError):
            return UserError(
                f"{what}: the server's TLS certificate is not trusted: {_ssl_reason(reason)}",
                hint="name the CA that signed it with sslcacert= in the repo file",
            )
        text = _ssl_reason(reason) if isinstance(reason, BaseException) else str(reason)
        if isinstance(reason, ssl.SSLEOFError):
            text = f"the server ended the connection during the TLS handshake ({text})"
        low = text.lower()
        if isinstance(reason, ssl.SSLError) or any(
            w in low for w in ("certificate", "handshake", "alert", "ssl", "tls")
        ):
            if not repo.sslclientcert:
                hint = _CLIENT_CERT_HINT
            else:
                hint = (
                    f"the server did not accept the client certificate "
                    f"{repo.show(repo.sslclientcert)}: check that it is valid, not expired "
                    "and issued for this repository"
                )
            return UserError(f"{what}: TLS error: {text}", hint=hint)
        if isinstance(e, (ConnectionResetError, http.client.RemoteDisconnected)) and (
            url.startswith("https:") and not repo.sslclientcert
        ):
            # A TLS 1.3 server that wants a client certificate may just close the connection.
            return UserError(
                f"{what}: the server closed the connection ({text})", hint=_CLIENT_CERT_HINT
            )
        return UserError(f"{what}: {text}")

    @contextlib.contextmanager
    def open(self, url: str) -> Iterator[Reader]:
        scheme = urllib.parse.urlparse(url).scheme
        if scheme not in ("http", "https", "file"):
            raise UserError(
                f"repository {self.repo.id}: {url}: unsupported URL scheme {scheme!r}",
                hint="use http://, https:// or file:// URLs",
            )
        logger.debug("GET %s", url)
        try:
            ctx = self._context() if scheme == "https" else None
            resp = urllib.request.urlopen(url, timeout=TIMEOUT, context=ctx)
        except UserError:
            raise
        except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as e:
            raise self._error(url, e) from e
        with resp:
            yield _GuardedReader(resp, lambda e: self._error(url, e))

    def fetch(self, url: str, dest: Path, checksum: tuple[str, str] | None = None) -> Path:
        """Download ``url`` to ``dest`` (atomically), checking ``(type, hex)`` if given."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        h = _hasher(checksum[0]) if checksum else None
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=".part-")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out, self.open(url) as src:
                while chunk := src.read(_CHUNK):
                    out.write(chunk)
                    if h is not None:
                        h.update(chunk)
            if checksum and h is not None and h.hexdigest() != checksum[1].lower():
                raise UserError(
                    f"{url} (repository {self.repo.id}) does not match its checksum "
                    f"{checksum[0]}:{checksum[1]} (got {h.hexdigest()})",
                    hint="the mirror may be updating: try again; else the repository is broken",
                )
            tmp.replace(dest)
        finally:
            tmp.unlink(missing_ok=True)
        return dest


class Reader(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


class _GuardedReader:
    """A response whose read errors become UserErrors (TLS alerts can come late)."""

    def __init__(self, resp: IO[bytes], wrap: Callable[[BaseException], UserError]) -> None:
        self._resp = resp
        self._wrap = wrap

    def read(self, n: int = -1, /) -> bytes:
        try:
            return self._resp.read(n)
        except (OSError, http.client.HTTPException) as e:
            raise self._wrap(e) from e


def _hasher(kind: str) -> hashlib._Hash:
    name = {"sha": "sha1", "sha1": "sha1"}.get(kind.lower(), kind.lower())
    try:
        return hashlib.new(name)
    except ValueError as e:
        raise UserError(f"unknown checksum type {kind!r} in repository metadata") from e


def file_checksum(path: Path, kind: str) -> str:
    h = _hasher(kind)
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _compression(href: str) -> str:
    suffix = Path(href).suffix
    return suffix if suffix in (".gz", ".bz2", ".xz", ".zst") else ""


def _decompressor(raw: IO[bytes], compression: str) -> gzip.GzipFile | bz2.BZ2File | lzma.LZMAFile:
    if compression == ".gz":
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if compression == ".bz2":
        return bz2.BZ2File(raw, "rb")
    if compression == ".xz":
        return lzma.LZMAFile(raw, "rb")
    raise ValueError(f"unknown compression {compression!r}")


def _decompress(src: Path, dest: Path, compression: str) -> None:
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=".part-")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, src.open("rb") as raw:
            if compression == ".zst":
                import zstandard

                dctx = zstandard.ZstdDecompressor()
                with dctx.stream_reader(raw, read_across_frames=True) as z:
                    shutil.copyfileobj(z, out, _CHUNK)
            else:
                with _decompressor(raw, compression) as f:
                    shutil.copyfileobj(f, out, _CHUNK)
        tmp.replace(dest)
    except (OSError, EOFError, lzma.LZMAError) as e:
        raise UserError(f"cannot decompress {src.name}: {e}") from e
    except Exception as e:  # zstandard.ZstdError
        if type(e).__name__ != "ZstdError":
            raise
        raise UserError(f"cannot decompress {src.name}: {e}") from e
    finally:
        tmp.unlink(missing_ok=True)


@dataclass(frozen=True)
class DataFile:
    type: str  # primary, filelists, other, ...
    href: str
    checksum: tuple[str, str]  # (type, hex) of the file as stored


def parse_repomd(data: bytes, where: str) -> dict[str, DataFile]:
    try:
        tree = ET.fromstring(data)
    except ET.ParseError as e:
        raise UserError(f"{where} is not valid XML: {e}") from e
    out = {}
    for d in tree.iter(f"{_REPO_NS}data"):
        kind = d.get("type", "")
        loc = d.find(f"{_REPO_NS}location")
        cs = d.find(f"{_REPO_NS}checksum")
        if loc is None or cs is None or not loc.get("href") or not cs.text:
            continue
        out[kind] = DataFile(kind, loc.get("href", ""), (cs.get("type", "sha256"), cs.text))
    if "primary" not in out:
        raise UserError(f"{where} lists no primary metadata", hint="is it an rpm-md repository?")
    return out


def _join(base: str, href: str) -> str:
    return base.rstrip("/") + "/" + href.lstrip("/")


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)[:80]


@dataclass
class RepoMetadata:
    """A repository whose ``repomd.xml`` has been fetched; data files fetched on demand."""

    config: RepoConfig
    baseurl: str  # the URL that answered
    directory: Path  # its cache directory
    data: dict[str, DataFile]
    fetcher: Fetcher = field(repr=False)

    def data_file(self, kind: str) -> Path | None:
        """The decompressed ``kind`` metadata (primary, filelists), or None if absent."""
        entry = self.data.get(kind)
        if entry is None:
            return None
        ctype, hexsum = entry.checksum
        compression = _compression(entry.href)
        stored = self.directory / f"{_safe(hexsum)}-{_safe(kind)}.xml{compression}"
        plain = self.directory / f"{_safe(hexsum)}-{_safe(kind)}.xml"
        if plain.is_file():
            return plain
        if not (stored.is_file() and file_checksum(stored, ctype) == hexsum.lower()):
            self.fetcher.fetch(_join(self.baseurl, entry.href), stored, entry.checksum)
        if compression:
            _decompress(stored, plain, compression)
            stored.unlink()
        return plain

    def package(
        self, location: str, base: str | None, checksum: tuple[str, str] | None, cache: Path
    ) -> Path:
        """Download a package at ``location`` (relative to ``base`` or the baseurl)."""
        dest_dir = cache / "packages" / _safe(self.config.id)
        name = _safe(Path(location).name)
        if checksum:
            dest = dest_dir / _safe(checksum[1])[:16] / name
            if dest.is_file() and file_checksum(dest, checksum[0]) == checksum[1].lower():
                return dest
        else:
            dest = dest_dir / name
        return self.fetcher.fetch(_join(base or self.baseurl, location), dest, checksum)


def _mirror_urls(fetcher: Fetcher, repo: RepoConfig) -> list[str]:
    out: list[str] = []
    if repo.mirrorlist:
        with fetcher.open(repo.mirrorlist) as f:
            text = f.read().decode("utf-8", "replace")
        if text.lstrip().startswith("<?xml") or "<metalink" in text:
            out += _metalink_urls(text.encode())
        else:
            out += [ln.strip() for ln in text.splitlines() if ln.strip()[:1] not in ("", "#")]
    if repo.metalink:
        with fetcher.open(repo.metalink) as f:
            out += _metalink_urls(f.read())
    return out


def _metalink_urls(data: bytes) -> list[str]:
    try:
        tree = ET.fromstring(data)
    except ET.ParseError:
        return []
    urls = []
    for u in tree.iter(f"{_METALINK_NS}url"):
        text = (u.text or "").strip()
        if text.endswith("/repodata/repomd.xml") and u.get("protocol") in ("https", "http"):
            urls.append(text[: -len("/repodata/repomd.xml")])
    return urls


def _prune(directory: Path, data: dict[str, DataFile]) -> None:
    """Remove metadata files of earlier versions of the repository from its cache."""
    current = tuple(f"{_safe(d.checksum[1])}-" for d in data.values())
    for f in directory.iterdir():
        if f.name != "repomd.xml" and not f.name.startswith(current) and f.is_file():
            f.unlink(missing_ok=True)


def load_repo(repo: RepoConfig, cache: Path) -> RepoMetadata:
    """Fetch ``repomd.xml`` of ``repo`` (trying its URLs in order) into the cache."""
    fetcher = Fetcher(repo)
    candidates = [u for u in (repo.baseurl, *repo.mirrors) if u]
    if not candidates:
        candidates = _mirror_urls(fetcher, repo)
        if not candidates:
            raise UserError(f"repository {repo.id}: its mirror list names no mirror")
    where = repo.baseurl or repo.mirrorlist or repo.metalink or ""
    key = hashlib.sha256(where.encode()).hexdigest()[:12]
    directory = cache / "repodata" / f"{_safe(repo.id)}-{key}"
    directory.mkdir(parents=True, exist_ok=True)
    first_error: UserError | None = None
    for url in candidates:
        try:
            path = fetcher.fetch(_join(url, "repodata/repomd.xml"), directory / "repomd.xml")
        except UserError as e:
            first_error = first_error or e
            continue
        data = parse_repomd(path.read_bytes(), f"{url}/repodata/repomd.xml")
        _prune(directory, data)
        return RepoMetadata(repo, url, directory, data, fetcher)
    assert first_error is not None
    raise first_error
