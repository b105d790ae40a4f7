"""Parse a Containerfile (Dockerfile) into the steps ``ocitree build`` runs.

Only a single-stage subset of the Dockerfile language is accepted; everything else is an error
naming its line, and all errors of a file are reported together (:class:`ContainerfileError`).

Accepted instructions: ``FROM`` (once; ``AS name`` is accepted and ignored), ``ARG``, ``ENV``,
``LABEL``, ``COPY``, ``ADD``, ``RUN``, ``WORKDIR``, ``CMD`` and ``ENTRYPOINT``. Instruction names
are case-insensitive. Lines continue with the escape character (``\\``, or a backtick after a
``# escape=`` parser directive at the top of the file); ``#`` comment lines and blank lines are
ignored, also inside continuations. Continued lines are joined without a separator, as Docker
does.

Variables (``$VAR``, ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``, ``${VAR:+alt}``,
``${VAR+alt}``, ``${VAR:?message}``, ``${VAR?message}``) are expanded with Docker's rules in
``FROM``, ``ARG``, ``ENV``, ``LABEL``, ``COPY``/``ADD`` (arguments and flag values),
``WORKDIR`` and in the values of ``RUN --mount``. Single quotes are literal, double quotes
expand, and the escape character escapes (``\\$HOME`` stays ``$HOME``). ``RUN``, ``CMD`` and
``ENTRYPOINT`` text is never expanded by the parser: the shell does that when the step runs,
with the ARG/ENV values of :attr:`Run.env` in its environment.

Scoping follows Docker: an ``ARG`` before ``FROM`` is only visible to ``FROM``, unless it is
declared again (``ARG NAME``, no value) after it; ``build_args`` override ARG defaults; ``ENV``
wins over ``ARG`` of the same name; the values on one ``ENV``/``ARG`` line are expanded with
the values in effect *before* that line. The base image's own environment is not known while
parsing; pass it as ``base_env`` if ``$PATH`` and the like must expand to it (else they expand
to the empty string).

``RUN`` becomes a :class:`Run`:

* exec form ``RUN ["cmd", "arg"]``: ``argv`` is the list, run without a shell;
* shell form ``RUN text``: ``script`` is the text, run as ``/bin/sh -c script``;
* ``RUN <<EOF`` (a here-document and nothing else): ``script`` is the document's body;
  with ``<<-EOF`` leading tabs are removed from it. If the body starts with ``#!``, ``argv`` is
  the interpreter of that line (path and at most one argument, as the kernel splits it) and
  ``stdin`` is the body: the interpreter reads its program from standard input;
* a here-document used by a command (``RUN python3 <<EOF``, ``RUN cat <<'EOF' >/etc/x``,
  several documents on one line, ``3<<EOF``): ``script`` is the command line with the
  documents put back after it, exactly as a shell script would have them
  (``"python3 <<EOF\\nprint(1)\\nEOF"``), so ``/bin/sh`` connects each document to its command
  and expands it unless the delimiter is quoted. This is what BuildKit does too.

``stdin`` is therefore only set with ``argv``; a step with ``script`` runs with no input.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from ocitree.errors import FileErrors

__all__ = [
    "BindMount",
    "Cmd",
    "Containerfile",
    "ContainerfileError",
    "Copy",
    "Env",
    "From",
    "Label",
    "Run",
    "SecretMount",
    "Step",
    "Workdir",
    "parse",
]


@dataclass(frozen=True)
class SecretMount:
    """``RUN --mount=type=secret``: the secret ``id`` is visible at ``target`` for the step."""

    id: str
    target: str
    required: bool = False
    mode: int = 0o400
    uid: int = 0
    gid: int = 0


@dataclass(frozen=True)
class BindMount:
    """``RUN --mount=type=bind``: ``source`` (relative to the build context) at ``target``."""

    source: str
    target: str
    readonly: bool = True


@dataclass(frozen=True)
class From:
    """The base image reference, as written (after ARG expansion)."""

    line: int
    image: str


@dataclass(frozen=True)
class Env:
    """``ENV``: variables for later steps and for the image config, in order."""

    line: int
    values: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Label:
    """``LABEL``: image config labels, in order."""

    line: int
    values: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Copy:
    """``COPY``/``ADD`` of build-context ``sources`` to ``dest`` (relative: to the WORKDIR).

    ``add`` is true for ``ADD``: the builder unpacks a local tar archive source.
    ``chown`` is ``USER[:GROUP]`` as written; ``chmod`` the mode as a number.
    """

    line: int
    sources: tuple[str, ...]
    dest: str
    chown: str | None = None
    chmod: int | None = None
    add: bool = False


@dataclass(frozen=True)
class Run:
    """A ``RUN`` step: either ``argv`` (exec, maybe with ``stdin``) or ``script`` (``sh -c``).

    ``env`` is the environment the step gets from the Containerfile: the ARG values in effect,
    overridden by ``base_env`` and ENV values; predefined proxy build args
    (``HTTP_PROXY``...) are included when given. See the module docstring for heredocs.
    """

    line: int
    argv: tuple[str, ...] | None = None
    script: str | None = None
    stdin: str | None = None
    secrets: tuple[SecretMount, ...] = ()
    binds: tuple[BindMount, ...] = ()
    network: str | None = None
    env: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Workdir:
    """``WORKDIR`` as written (after expansion); a relative path is relative to the previous."""

    line: int
    path: str


@dataclass(frozen=True)
class Cmd:
    """``CMD`` (or ``ENTRYPOINT`` if ``entrypoint``) for the image config only.

    The shell form becomes ``("/bin/sh", "-c", text)``.
    """

    line: int
    argv: tuple[str, ...]
    entrypoint: bool = False


Step = Env | Label | Copy | Run | Workdir | Cmd


@dataclass(frozen=True)
class Containerfile:
    """A parsed Containerfile.

    ``args`` are the ARG values in effect at the end of the (only) stage;
    ``unused_build_args`` the names of ``build_args`` no ARG declared (Docker warns of them).
    """

    base: From
    steps: tuple[Step, ...]
    args: dict[str, str] = field(default_factory=dict)
    unused_build_args: tuple[str, ...] = ()


class ContainerfileError(FileErrors):
    """Every problem found in a Containerfile; ``errors`` holds ``(line, message)`` pairs.

    Line 0 means the file as a whole (e.g. it has no ``FROM``).
    """


def parse(
    text: str,
    *,
    build_args: Mapping[str, str] = MappingProxyType({}),
    filename: str = "Containerfile",
    base_env: Mapping[str, str] = MappingProxyType({}),
) -> Containerfile:
    """Parse ``text``; raises :class:`ContainerfileError` listing every problem found."""
    return _Parser(text, build_args, filename, base_env).parse()


# --- internals -----------------------------------------------------------------------------


class _LineError(Exception):
    """A problem in the instruction being parsed (reported with its line)."""


_PROXY_ARGS = frozenset(
    name
    for base in ("HTTP_PROXY", "HTTPS_PROXY", "FTP_PROXY", "NO_PROXY", "ALL_PROXY")
    for name in (base, base.lower())
)

_UNSUPPORTED = {
    "user": "steps run as root; set ownership with COPY --chown or chown in RUN",
    "expose": "an OS image has no exposed ports",
    "volume": "an OS image has no volumes",
    "healthcheck": "an OS image has no health check",
    "onbuild": "",
    "shell": "RUN shell-form steps always use /bin/sh",
    "stopsignal": "",
    "maintainer": "use LABEL maintainer=... instead",
}

_DIRECTIVE_RE = re.compile(r"#\s*([A-Za-z][A-Za-z0-9]*)\s*=\s*(.*?)\s*$")
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_HEREDOC_WORD_RE = re.compile(r"(\d*)<<(-?)(.*)$", re.DOTALL)
_DELIMITER_RE = re.compile(r"""(?:'[^']*'|"(?:[^"\\]|\\.)*"|\\.|[^\s;&|<>()'"\\])+""")
_STAGE_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_.-]*$")
_CHOWN_RE = re.compile(r"[^:\s]+(:[^:\s]+)?$")
_URL_RE = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://|git@)")


@dataclass(frozen=True)
class _Heredoc:
    name: str
    chomp: bool
    fd: str
    body: str = ""  # as written, every line ending in "\n"


@dataclass
class _Instruction:
    line: int
    keyword: str  # lower case
    rest: str
    heredocs: list[_Heredoc]


def _word_end(text: str, i: int, escape: str) -> int:
    """Where the word starting at ``i`` ends: at unquoted whitespace (quotes are kept)."""
    n = len(text)
    while i < n and not text[i].isspace():
        ch = text[i]
        if ch == escape:
            i += 2
        elif ch == "'":
            j = text.find("'", i + 1)
            if j < 0:
                raise _LineError("unterminated single quote (')")
            i = j + 1
        elif ch == '"':
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == escape else 1
            if i >= n:
                raise _LineError('unterminated double quote (")')
            i += 1
        else:
            i += 1
    return min(i, n)


def _raw_words(text: str, escape: str) -> list[str]:
    """Split on unquoted whitespace, keeping quotes and escapes in the words."""
    words: list[str] = []
    i, n = 0, len(text)
    while True:
        while i < n and text[i].isspace():
            i += 1
        if i >= n:
            return words
        j = _word_end(text, i, escape)
        words.append(text[i:j])
        i = j


def _split_flags(rest: str, escape: str) -> tuple[list[str], str]:
    """Leading ``--flag[=value]`` words (raw) and the text after them."""
    flags: list[str] = []
    i, n = 0, len(rest)
    while True:
        while i < n and rest[i].isspace():
            i += 1
        if not rest.startswith("--", i):
            break
        j = _word_end(rest, i, escape)
        word = rest[i:j]
        i = j
        if word == "--":
            break
        flags.append(word)
    return flags, rest[i:].strip()


def _json_list(text: str) -> list[str] | None:
    """The exec (JSON array of strings) form, or None for the shell form (Docker's rule)."""
    text = text.strip()
    if not text.startswith("["):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        return None
    return [str(v) for v in value]


def _unquote_delimiter(raw: str) -> str:
    out: list[str] = []
    i, n = 0, len(raw)
    while i < n:
        ch = raw[i]
        if ch == "'":
            j = raw.index("'", i + 1)
            out.append(raw[i + 1 : j])
            i = j + 1
        elif ch == '"':
            i += 1
            while raw[i] != '"':
                if raw[i] == "\\" and raw[i + 1] in '"\\$`':
                    i += 1
                out.append(raw[i])
                i += 1
            i += 1
        elif ch == "\\":
            out.append(raw[i + 1])
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _find_heredocs(rest: str, escape: str) -> list[_Heredoc]:
    """The ``<<WORD`` here-documents a RUN/COPY/ADD line introduces, in order."""
    try:
        _, command = _split_flags(rest, escape)
        if _json_list(command) is not None:
            return []
        words = _raw_words(command, "\\")
    except _LineError:
        return []
    docs: list[_Heredoc] = []
    for word in words:
        m = _HEREDOC_WORD_RE.match(word)
        if not m or m.group(3).startswith("<"):
            continue
        d = _DELIMITER_RE.match(m.group(3))
        if not d:
            continue
        name = _unquote_delimiter(d.group(0))
        if name:
            docs.append(_Heredoc(name=name, chomp=m.group(2) == "-", fd=m.group(1)))
    return docs


class _Expander:
    """Docker's word processing: quote removal, escapes and ``$`` expansion (no splitting)."""

    def __init__(self, env: Mapping[str, str], escape: str, *, quotes: bool = True) -> None:
        self.env = env
        self.escape = escape
        self.quotes = quotes
        self.text = ""
        self.pos = 0

    def __call__(self, text: str) -> str:
        self.text, self.pos = text, 0
        return self._until(None)

    def _until(self, stop: str | None) -> str:
        out: list[str] = []
        t = self.text
        while self.pos < len(t):
            ch = t[self.pos]
            if stop is not None and ch == stop:
                self.pos += 1
                return "".join(out)
            if ch == self.escape:
                if self.pos + 1 < len(t):
                    out.append(t[self.pos + 1])
                self.pos += 2
            elif ch == "'" and self.quotes:
                end = t.find("'", self.pos + 1)
                if end < 0:
                    raise _LineError("unterminated single quote (')")
                out.append(t[self.pos + 1 : end])
                self.pos = end + 1
            elif ch == '"' and self.quotes:
                out.append(self._double())
            elif ch == "$":
                out.append(self._dollar())
            else:
                out.append(ch)
                self.pos += 1
        if stop is not None:
            raise _LineError(f"missing '{stop}' in {t!r}")
        return "".join(out)

    def _double(self) -> str:
        out: list[str] = []
        t = self.text
        self.pos += 1
        while self.pos < len(t):
            ch = t[self.pos]
            if ch == '"':
                self.pos += 1
                return "".join(out)
            if ch == "$":
                out.append(self._dollar())
            elif ch == self.escape and self.pos + 1 < len(t) and t[self.pos + 1] in '"$' + ch:
                out.append(t[self.pos + 1])
                self.pos += 2
            else:
                out.append(ch)
                self.pos += 1
        raise _LineError('unterminated double quote (")')

    def _dollar(self) -> str:
        t = self.text
        self.pos += 1
        if self.pos >= len(t):
            return "$"
        if t[self.pos] == "{":
            return self._braced()
        m = _NAME_RE.match(t, self.pos)
        if m:
            self.pos = m.end()
            return self.env.get(m.group(), "")
        if t[self.pos].isdigit():  # positional parameters are never set
            self.pos += 1
            return ""
        return "$"

    def _braced(self) -> str:
        t = self.text
        self.pos += 1
        m = _NAME_RE.match(t, self.pos)
        if not m:
            raise _LineError(f"bad substitution in {t!r}: expected a variable name after '${{'")
        name = m.group()
        self.pos = m.end()
        op = t[self.pos : self.pos + 1]
        if op == "}":
            self.pos += 1
            return self.env.get(name, "")
        colon = op == ":"
        if colon:
            self.pos += 1
            op = t[self.pos : self.pos + 1]
        if not op:
            raise _LineError(f"missing '}}' in {t!r}")
        if op not in "-+?":
            shown = f"${{{name}{':' if colon else ''}{op}...}}"
            raise _LineError(
                f"unsupported substitution {shown} in {t!r} "
                "(supported: ${VAR}, ${VAR:-default}, ${VAR:+alt}, ${VAR:?message})"
            )
        self.pos += 1
        word = self._until("}")
        value = self.env.get(name)
        is_set = value is not None and (value != "" or not colon)
        if op == "-":
            return value if is_set and value is not None else word
        if op == "+":
            return word if is_set else ""
        if not is_set or value is None:
            raise _LineError(f"{name}: {word or 'parameter not set'}")
        return value


def _parse_bool(key: str, value: str | None) -> bool:
    if value is None:
        return True
    v = value.lower()
    if v in ("1", "t", "true"):
        return True
    if v in ("0", "f", "false"):
        return False
    raise _LineError(f"--mount option {key}={value}: expected true or false")


def _parse_int(key: str, value: str | None, base: int) -> int:
    try:
        if value is None:
            raise ValueError
        number = int(value, base)
        if number < 0:
            raise ValueError
    except ValueError:
        kind = "an octal mode" if base == 8 else "a number"
        raise _LineError(f"--mount option {key}={value or ''}: expected {kind}") from None
    return number


def _parse_mount(spec: str) -> SecretMount | BindMount:
    options: dict[str, str | None] = {}
    for part in spec.split(","):
        if not part.strip():
            continue
        name, eq, text = part.partition("=")
        options[name.strip().lower()] = text.strip() if eq else None
    kind = options.pop("type", None) or "bind"
    target = None
    for alias in ("target", "dst", "destination"):
        if alias in options:
            target = options.pop(alias)
    if target is not None and not target.startswith("/"):
        raise _LineError(f"--mount target {target!r} must be an absolute path")
    if kind == "secret":
        sid = options.pop("id", None)
        if not sid:
            if not target:
                raise _LineError("--mount=type=secret needs id= (or target=)")
            sid = target.rstrip("/").rsplit("/", 1)[-1]
        required, mode, uid, gid = False, 0o400, 0, 0
        for key, value in options.items():
            if key == "required":
                required = _parse_bool(key, value)
            elif key == "mode":
                mode = _parse_int(key, value, 8)
            elif key == "uid":
                uid = _parse_int(key, value, 10)
            elif key == "gid":
                gid = _parse_int(key, value, 10)
            else:
                raise _LineError(f"--mount=type=secret: unsupported option {key!r}")
        return SecretMount(sid, target or f"/run/secrets/{sid}", required, mode, uid, gid)
    if kind == "bind":
        if not target:
            raise _LineError("--mount=type=bind needs target=")
        source = "."
        readonly = True
        for key, value in options.items():
            if key in ("source", "src"):
                source = value or "."
            elif key in ("ro", "readonly"):
                readonly = _parse_bool(key, value)
            elif key in ("rw", "readwrite"):
                readonly = not _parse_bool(key, value)
            elif key == "from":
                raise _LineError("--mount from= is not supported (only the build context)")
            else:
                raise _LineError(f"--mount=type=bind: unsupported option {key!r}")
        return BindMount(source=source, target=target, readonly=readonly)
    raise _LineError(f"--mount=type={kind} is not supported (only type=secret and type=bind)")


class _Parser:
    def __init__(
        self,
        text: str,
        build_args: Mapping[str, str],
        filename: str,
        base_env: Mapping[str, str],
    ) -> None:
        text = text.removeprefix("\ufeff").replace("\r\n", "\n")
        self.lines = text.split("\n")
        self.build_args = dict(build_args)
        self.filename = filename
        self.base_env = dict(base_env)
        self.errors: list[tuple[int, str]] = []
        self.escape = "\\"
        self.meta: dict[str, str] = {}  # ARG values before FROM
        self.args: dict[str, str] = {}  # ARG values in the stage
        self.env: dict[str, str] = {}  # ENV values in the stage
        self.declared: set[str] = set()
        self.base: From | None = None
        self.seen_from = 0  # line of the first FROM
        self.reported_before_from = False
        self.steps: list[Step] = []

    # -- driver ---------------------------------------------------------------------------

    def parse(self) -> Containerfile:
        self._directives()
        for inst in self._instructions():
            try:
                self._dispatch(inst)
            except _LineError as e:
                self.errors.append((inst.line, str(e)))
        if not self.seen_from and not self.reported_before_from:
            self.errors.append((0, "no FROM instruction: a Containerfile starts with FROM image"))
        if self.errors or self.base is None:
            raise ContainerfileError(self.filename, self.errors)
        unused = sorted(
            k for k in self.build_args if k not in self.declared and k not in _PROXY_ARGS
        )
        return Containerfile(
            base=self.base,
            steps=tuple(self.steps),
            args=dict(self.args),
            unused_build_args=tuple(unused),
        )

    def _directives(self) -> None:
        seen: set[str] = set()
        for number, raw in enumerate(self.lines, start=1):
            m = _DIRECTIVE_RE.match(raw.strip())
            if not m:
                return
            key, value = m.group(1).lower(), m.group(2)
            if key not in ("escape", "syntax", "check"):
                return  # an unknown directive is a comment, and ends the directives
            if key in seen:
                self.errors.append((number, f"the {key} parser directive is given twice"))
                continue
            seen.add(key)
            if key == "escape":
                if value not in ("\\", "`"):
                    self.errors.append((number, f"invalid escape character {value!r}: use \\ or `"))
                else:
                    self.escape = value

    def _continued(self, line: str) -> tuple[str, bool]:
        stripped = line.rstrip(" \t")
        if stripped.endswith(self.escape):
            return stripped[: -len(self.escape)], True
        return line, False

    def _instructions(self) -> Iterator[_Instruction]:
        lines, n, i = self.lines, len(self.lines), 0
        while i < n:
            first = lines[i].lstrip()
            start = i + 1
            i += 1
            if not first or first.startswith("#"):
                continue
            text, more = self._continued(first)
            while more and i < n:
                nxt = lines[i]
                i += 1
                if not nxt.strip() or nxt.lstrip().startswith("#"):
                    continue
                piece, more = self._continued(nxt)
                text += piece
            text = text.strip()
            if not text:
                continue
            m = re.match(r"(\S+)\s*(.*)$", text, re.DOTALL)
            assert m is not None
            word, rest = m.group(1), m.group(2).strip()
            keyword = word.lower()
            heredocs: list[_Heredoc] = []
            if keyword in ("run", "copy", "add"):
                for doc in _find_heredocs(rest, self.escape):
                    body: list[str] = []
                    terminated = False
                    while i < n:
                        line = lines[i]
                        i += 1
                        if (line.lstrip("\t") if doc.chomp else line) == doc.name:
                            terminated = True
                            break
                        body.append(line + "\n")
                    if not terminated:
                        self.errors.append(
                            (start, f"unterminated here-document: no line with just {doc.name}")
                        )
                        break
                    heredocs.append(_Heredoc(doc.name, doc.chomp, doc.fd, "".join(body)))
                else:
                    yield _Instruction(start, keyword, rest, heredocs)
                continue
            yield _Instruction(start, keyword, rest, heredocs)

    def _dispatch(self, inst: _Instruction) -> None:
        kw = inst.keyword
        name = kw.upper()
        handler = {
            "from": self._from,
            "arg": self._arg,
            "env": self._env,
            "label": self._label,
            "copy": self._copy,
            "add": self._copy,
            "run": self._run,
            "workdir": self._workdir,
            "cmd": self._cmd,
            "entrypoint": self._cmd,
        }.get(kw)
        if handler is None:
            if kw in _UNSUPPORTED:
                why = _UNSUPPORTED[kw]
                raise _LineError(f"{name} is not supported" + (f": {why}" if why else ""))
            raise _LineError(f"unknown instruction {inst.keyword.upper()}")
        if kw not in ("from", "arg") and not self.seen_from:
            if not self.reported_before_from:
                self.reported_before_from = True
                raise _LineError(f"{name} before FROM: only ARG may come before FROM")
            return
        if not inst.rest:
            if kw == "from" and not self.seen_from:
                self.seen_from = inst.line
            raise _LineError(f"{name} requires at least one argument")
        handler(inst)

    # -- helpers --------------------------------------------------------------------------

    def _scope(self) -> dict[str, str]:
        """The variables ``$NAME`` expands to here."""
        if not self.seen_from:
            return dict(self.meta)
        scope = dict(self.args)
        scope.update(self.base_env)
        scope.update(self.env)
        return scope

    def _expander(self, *, quotes: bool = True) -> _Expander:
        return _Expander(self._scope(), self.escape, quotes=quotes)

    def _flags(self, rest: str) -> tuple[list[tuple[str, str | None]], str]:
        raw, remainder = _split_flags(rest, self.escape)
        flags: list[tuple[str, str | None]] = []
        for word in raw:
            key, eq, value = word[2:].partition("=")
            if not key:
                raise _LineError(f"malformed flag {word!r}")
            flags.append((key, value if eq else None))
        return flags, remainder

    def _name_values(self, inst: _Instruction) -> tuple[tuple[str, str], ...]:
        name = inst.keyword.upper()
        expand = self._expander()
        words = _raw_words(inst.rest, self.escape)
        if "=" not in words[0]:  # legacy "ENV key value"
            parts = re.split(r"\s+", inst.rest, maxsplit=1)
            if len(parts) < 2:
                raise _LineError(f"{name} {parts[0]} has no value: use {name} {parts[0]}=value")
            return ((expand(parts[0]), expand(parts[1])),)
        values: list[tuple[str, str]] = []
        problems: list[str] = []
        for word in words:
            key, eq, value = word.partition("=")
            if not eq:
                problems.append(f"{name} expects name=value, got {word!r}")
                continue
            key = expand(key)
            if not key:
                problems.append(f"{name} {word!r} has an empty name")
                continue
            values.append((key, expand(value)))
        if problems:
            raise _LineError("; ".join(problems))
        return tuple(values)

    # -- instructions ---------------------------------------------------------------------

    def _from(self, inst: _Instruction) -> None:
        if self.seen_from:
            raise _LineError(
                f"a second FROM: multi-stage builds are not supported "
                f"(the base image is set on line {self.seen_from})"
            )
        self.seen_from = inst.line
        flags, remainder = self._flags(inst.rest)
        problems: list[str] = []
        for key, _ in flags:
            if key == "platform":
                problems.append("FROM --platform is not supported: images are built for this host")
            else:
                problems.append(f"FROM: unknown flag --{key}")
        words = _raw_words(remainder, self.escape)
        if not words:
            problems.append("FROM requires a base image")
        elif len(words) not in (1, 3) or (len(words) == 3 and words[1].lower() != "as"):
            problems.append("expected FROM image [AS name]")
        elif len(words) == 3 and not _STAGE_NAME_RE.match(words[2]):
            problems.append(f"invalid stage name {words[2]!r}")
        if problems:
            raise _LineError("; ".join(problems))
        image = _Expander(self.meta, self.escape)(words[0])
        if not image or any(c.isspace() for c in image):
            raise _LineError(f"FROM {words[0]} expands to an invalid image name {image!r}")
        self.base = From(inst.line, image)

    def _arg(self, inst: _Instruction) -> None:
        expand = self._expander()
        problems: list[str] = []
        for word in _raw_words(inst.rest, self.escape):
            name, eq, default = word.partition("=")
            if not _NAME_RE.fullmatch(name):
                problems.append(f"invalid ARG name {name!r}")
                continue
            self.declared.add(name)
            value = expand(default) if eq else None
            if name in self.build_args:
                value = self.build_args[name]
            elif value is None and self.seen_from:
                value = self.meta.get(name)
            scope = self.args if self.seen_from else self.meta
            if value is not None:
                scope[name] = value
        if problems:
            raise _LineError("; ".join(problems))

    def _env(self, inst: _Instruction) -> None:
        values = self._name_values(inst)
        self.env.update(values)
        self.steps.append(Env(inst.line, values))

    def _label(self, inst: _Instruction) -> None:
        self.steps.append(Label(inst.line, self._name_values(inst)))

    def _copy(self, inst: _Instruction) -> None:
        add = inst.keyword == "add"
        name = inst.keyword.upper()
        flags, remainder = self._flags(inst.rest)
        expand = self._expander()
        problems: list[str] = []
        chown: str | None = None
        chmod: int | None = None
        for key, value in flags:
            if key in ("chown", "chmod") and not value:
                problems.append(f"{name} --{key} needs a value (--{key}=...)")
            elif key == "chown" and value:
                chown = expand(value)
                if not _CHOWN_RE.match(chown):
                    problems.append(f"{name} --chown={chown}: expected USER or USER:GROUP")
            elif key == "chmod" and value:
                mode = expand(value)
                if re.fullmatch(r"[0-7]+", mode) and int(mode, 8) <= 0o7777:
                    chmod = int(mode, 8)
                else:
                    problems.append(f"{name} --chmod={mode}: expected an octal mode like 644")
            elif key == "from":
                problems.append(
                    f"{name} --from is not supported: there are no other stages or images "
                    "to copy from"
                )
            elif key in ("link", "parents", "exclude", "checksum", "keep-git-dir"):
                problems.append(f"{name} --{key} is not supported")
            else:
                problems.append(f"{name}: unknown flag --{key}")
        if inst.heredocs:
            problems.append(f"{name} <<{inst.heredocs[0].name} (an inline file) is not supported")
            raise _LineError("; ".join(problems))
        items = _json_list(remainder)
        if items is not None:
            expand_item = self._expander(quotes=False)
            words = [expand_item(item) for item in items]
        else:
            words = [expand(word) for word in _raw_words(remainder, self.escape)]
        if len(words) < 2:
            problems.append(f"{name} requires at least one source and a destination")
        else:
            sources, dest = words[:-1], words[-1]
            if not dest:
                problems.append(f"{name}: the destination is empty")
            elif len(sources) > 1 and not dest.endswith("/"):
                problems.append(
                    f"{name} with more than one source needs a directory destination "
                    f"ending in / (got {dest!r})"
                )
            for source in sources:
                if not source:
                    problems.append(f"{name}: a source is empty")
                elif _URL_RE.match(source):
                    if add:
                        problems.append(
                            f"ADD {source}: URLs are not supported; "
                            "download it beforehand and ADD or COPY the file"
                        )
                    else:
                        problems.append(f"COPY {source}: a source can't be a URL")
        if problems:
            raise _LineError("; ".join(problems))
        self.steps.append(Copy(inst.line, tuple(sources), dest, chown, chmod, add))

    def _run(self, inst: _Instruction) -> None:
        flags, command = self._flags(inst.rest)
        problems: list[str] = []
        secrets: list[SecretMount] = []
        binds: list[BindMount] = []
        network: str | None = None
        seen_network = False
        for key, value in flags:
            try:
                if key == "mount":
                    if not value:
                        raise _LineError("RUN --mount needs a value (--mount=type=...)")
                    mount = _parse_mount(self._expander()(value))
                    if isinstance(mount, SecretMount):
                        secrets.append(mount)
                    else:
                        binds.append(mount)
                elif key == "network":
                    if seen_network:
                        raise _LineError("RUN --network is given twice")
                    seen_network = True
                    mode = self._expander()(value or "")
                    if mode not in ("none", "host", "default"):
                        raise _LineError(f"RUN --network={mode}: expected none, host or default")
                    network = None if mode == "default" else mode
                elif key == "security":
                    raise _LineError("RUN --security is not supported")
                else:
                    raise _LineError(f"RUN: unknown flag --{key}")
            except _LineError as e:
                problems.append(str(e))
        argv: tuple[str, ...] | None = None
        script: str | None = None
        stdin: str | None = None
        items = None if inst.heredocs else _json_list(command)
        if items is not None:
            if not items:
                problems.append("RUN [] has no command")
            argv = tuple(items)
        elif not command:
            problems.append("RUN requires a command")
        elif inst.heredocs:
            try:
                argv, script, stdin = _heredoc_run(command, inst.heredocs)
            except _LineError as e:
                problems.append(str(e))
        else:
            script = command
        if problems:
            raise _LineError("; ".join(problems))
        self.steps.append(
            Run(
                line=inst.line,
                argv=argv,
                script=script,
                stdin=stdin,
                secrets=tuple(secrets),
                binds=tuple(binds),
                network=network,
                env=self._run_env(),
            )
        )

    def _run_env(self) -> tuple[tuple[str, str], ...]:
        env = {k: v for k, v in self.build_args.items() if k in _PROXY_ARGS}
        env.update(self.args)
        env.update(self.base_env)
        env.update(self.env)
        return tuple(env.items())

    def _workdir(self, inst: _Instruction) -> None:
        path = self._expander()(inst.rest)
        if not path:
            raise _LineError(f"WORKDIR {inst.rest} expands to an empty path")
        self.steps.append(Workdir(inst.line, path))

    def _cmd(self, inst: _Instruction) -> None:
        items = _json_list(inst.rest)
        argv = tuple(items) if items is not None else ("/bin/sh", "-c", inst.rest)
        self.steps.append(Cmd(inst.line, argv, inst.keyword == "entrypoint"))


def _heredoc_run(
    command: str, docs: list[_Heredoc]
) -> tuple[tuple[str, ...] | None, str | None, str | None]:
    """``(argv, script, stdin)`` for a RUN whose line introduces here-documents."""
    only = docs[0]
    if len(docs) == 1 and not only.fd and _is_one_heredoc_word(command):
        body = re.sub(r"(?m)^\t+", "", only.body) if only.chomp else only.body
        if body.startswith("#!"):
            # as the kernel reads it: the interpreter, then at most one argument
            words = body[2:].split("\n", 1)[0].strip().split(None, 1)
            if not words:
                raise _LineError(f"RUN <<{only.name}: the #! line names no interpreter")
            return tuple(words), None, body
        return None, body, None
    script = command + "".join("\n" + doc.body + doc.name for doc in docs)
    return None, script, None


def _is_one_heredoc_word(command: str) -> bool:
    """Whether ``command`` is nothing but one ``<<[-]WORD`` (``RUN <<EOF``)."""
    words = _raw_words(command, "\\")
    return len(words) == 1 and bool(_HEREDOC_WORD_RE.match(words[0]))
