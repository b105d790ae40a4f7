"""The one wrapper for every external command ocitree runs."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from ocitree.errors import CommandError, UserError
from ocitree.log import logger

Arg = str | os.PathLike[str]


def _env(extra: Mapping[str, str] | None) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
    }
    # Tools find their own configuration (auth files, certs) relative to these.
    for key in ("HOME", "TMPDIR", "XDG_RUNTIME_DIR", "REGISTRY_AUTH_FILE", "SOURCE_DATE_EPOCH"):
        if key in os.environ:
            env[key] = os.environ[key]
    if extra:
        env.update(extra)
    return env


def find_tool(name: str, *, package: str | None = None) -> str:
    """Return the path of ``name`` or raise a UserError that says how to get it."""
    path = shutil.which(name)
    if path is None:
        raise UserError(
            f"{name} is not installed",
            hint=f"install the {package or name} package (make deps does it on Debian)",
        )
    return path


def run(
    argv: Sequence[Arg],
    *,
    check: bool = True,
    input: bytes | None = None,
    capture: bool = True,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    hint: str | None = None,
    timeout: float | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run a command: minimal environment, stdin from /dev/null, logged under --debug.

    On failure raises :class:`CommandError` naming the command and its exit code,
    with the last line of its stderr.
    """
    args = [os.fspath(a) for a in argv]
    find_tool(args[0])
    logger.debug("+ %s", shlex.join(args))
    proc = subprocess.run(
        args,
        input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE if capture else None,
        stderr=subprocess.PIPE if capture else None,
        env=_env(env),
        cwd=cwd,
        check=False,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        stderr = proc.stderr.decode(errors="replace") if proc.stderr else ""
        raise CommandError(args, proc.returncode, stderr, hint=hint)
    return proc


def spawn(
    argv: Sequence[Arg],
    *,
    env: Mapping[str, str] | None = None,
    stdout: int | None = subprocess.DEVNULL,
    stderr: int | None = subprocess.DEVNULL,
    pass_fds: Sequence[int] = (),
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start a long-running command (a server, skopeo's image proxy); the caller stops it."""
    args = [os.fspath(a) for a in argv]
    find_tool(args[0])
    logger.debug("+ %s &", shlex.join(args))
    return subprocess.Popen(
        args,
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=stderr,
        env=_env(env),
        pass_fds=tuple(pass_fds),
        cwd=cwd,
    )
