"""A real local ``docker-registry`` (distribution 2.8) on 127.0.0.1 for tests and benchmarks.

``start_registry()`` writes a config under a work directory, optionally with a
self-signed TLS certificate and htpasswd authentication, starts the registry, waits until
``/v2/`` answers and stops it by PID on the way out. Its log holds the access log in the
combined format, from which :meth:`Registry.bytes_sent` counts what clients fetched.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import secrets
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ocitree.run import run, spawn

START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
USERNAME = "ocitree"

# 127.0.0.1 - - [25/Nov/2024:18:20:01 +0000] "GET /v2/x/blobs/sha256:… HTTP/1.1" 200 1234 …
_ACCESS = re.compile(
    r'"(?P<method>[A-Z]+) (?P<path>\S+) HTTP/[0-9.]+" (?P<status>\d{3}) (?P<size>\d+|-)'
)


@dataclass(frozen=True)
class AccessLogEntry:
    method: str
    path: str
    status: int
    size: int


@dataclass(frozen=True)
class Registry:
    """A running registry: where it is and what a client needs to talk to it."""

    host: str  # "127.0.0.1:PORT"
    ca_cert: Path | None  # the self-signed certificate (its own CA) when TLS
    cert_dir: Path | None  # holds only ca.crt: for skopeo --cert-dir / certs.d
    authfile: Path | None  # containers auth.json with the credentials when auth
    username: str | None
    password: str | None
    log: Path  # registry output, access log lines included
    pid: int

    @property
    def url(self) -> str:
        return f"{'https' if self.ca_cert else 'http'}://{self.host}"

    def ref(self, name: str) -> str:
        """``docker://HOST/name`` for skopeo and ocitree."""
        return f"docker://{self.host}/{name}"

    def log_position(self) -> int:
        """Where the log ends now; pass it to :meth:`access_log` to see only later requests."""
        return self.log.stat().st_size

    def access_log(self, since: int = 0) -> list[AccessLogEntry]:
        """Requests logged after byte offset ``since`` of the log."""
        with self.log.open("rb") as f:
            f.seek(since)
            text = f.read().decode(errors="replace")
        entries = []
        for m in _ACCESS.finditer(text):
            size = m["size"]
            entries.append(
                AccessLogEntry(
                    m["method"], m["path"], int(m["status"]), 0 if size == "-" else int(size)
                )
            )
        return entries

    def bytes_sent(self, since: int = 0, *, blobs_only: bool = False) -> int:
        """Response body bytes of successful GETs logged after ``since``."""
        return sum(
            e.size
            for e in self.access_log(since)
            if e.method == "GET"
            and 200 <= e.status < 300
            and (not blobs_only or "/blobs/" in e.path)
        )


def free_port() -> int:
    """A port nobody listens on right now (another process may still take it first)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def make_certificate(workdir: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (also its own CA) and its key."""
    cert, key = workdir / "registry.crt", workdir / "registry.key"
    run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-days",
            "2",
            "-keyout",
            key,
            "-out",
            cert,
        ]
    )
    return cert, key


def _q(value: object) -> str:
    # A JSON string is a valid YAML scalar; paths with odd characters stay intact.
    return json.dumps(str(value))


def _config(workdir: Path, port: int, tls: tuple[Path, Path] | None, htpasswd: Path | None) -> str:
    # Given a secret, the registry does not warn that it made one up.
    secret = secrets.token_hex(16)
    lines = [
        "version: 0.1",
        "log:",
        "  level: info",
        "  formatter: text",
        "  accesslog:",
        "    disabled: false",
        "storage:",
        "  filesystem:",
        f"    rootdirectory: {_q(workdir / 'storage')}",
        "  delete:",
        "    enabled: true",
        "  maintenance:",
        "    uploadpurging:",
        "      enabled: false",
        "http:",
        f"  addr: {_q(f'127.0.0.1:{port}')}",
        f"  secret: {_q(secret)}",
    ]
    if tls is not None:
        lines += ["  tls:", f"    certificate: {_q(tls[0])}", f"    key: {_q(tls[1])}"]
    if htpasswd is not None:
        lines += [
            "auth:",
            "  htpasswd:",
            "    realm: ocitree-test",
            f"    path: {_q(htpasswd)}",
        ]
    return "\n".join(lines) + "\n"


def _answers(url: str, context: ssl.SSLContext | None) -> bool:
    # No proxy from the environment: the registry is on loopback.
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
    )
    try:
        with opener.open(f"{url}/v2/", timeout=1):
            return True
    except urllib.error.HTTPError as e:
        return e.code == 401
    except OSError:
        return False


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()


@contextlib.contextmanager
def start_registry(workdir: Path, *, tls: bool = False, auth: bool = False) -> Iterator[Registry]:
    """Run a registry with its storage, config and log under ``workdir`` until exit."""
    workdir.mkdir(parents=True, exist_ok=True)
    certs = make_certificate(workdir) if tls else None
    cert_dir: Path | None = None
    context: ssl.SSLContext | None = None
    if certs is not None:
        cert_dir = workdir / "certs.d"
        cert_dir.mkdir(exist_ok=True)
        (cert_dir / "ca.crt").write_bytes(certs[0].read_bytes())
        context = ssl.create_default_context(cafile=certs[0])
    password = secrets.token_urlsafe(12) if auth else None
    htpasswd: Path | None = None
    if password is not None:
        htpasswd = workdir / "htpasswd"
        run(["htpasswd", "-Bbc", htpasswd, USERNAME, password])

    for attempt in range(5):
        port = free_port()
        config = workdir / "config.yml"
        config.write_text(_config(workdir, port, certs, htpasswd))
        log = workdir / f"registry-{port}.log"
        with log.open("wb") as out:
            proc = spawn(
                ["docker-registry", "serve", config], stdout=out.fileno(), stderr=subprocess.STDOUT
            )
        try:
            if not _wait_until_up(proc, port, log, context, last_attempt=attempt == 4):
                continue  # lost the race for the port: try another
            host = f"127.0.0.1:{port}"
            authfile: Path | None = None
            if password is not None:
                authfile = workdir / "auth.json"
                token = base64.b64encode(f"{USERNAME}:{password}".encode()).decode()
                authfile.write_text(json.dumps({"auths": {host: {"auth": token}}}))
            yield Registry(
                host=host,
                ca_cert=certs[0] if certs else None,
                cert_dir=cert_dir,
                authfile=authfile,
                username=USERNAME if auth else None,
                password=password,
                log=log,
                pid=proc.pid,
            )
            return
        finally:
            _stop(proc)
    raise AssertionError("unreachable: the last attempt raises")


def _wait_until_up(
    proc: subprocess.Popen[bytes],
    port: int,
    log: Path,
    context: ssl.SSLContext | None,
    *,
    last_attempt: bool,
) -> bool:
    """Wait for ``/v2/`` to answer; False if the port was taken, else raise with the log."""
    url = f"{'https' if context else 'http'}://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if _answers(url, context):
            return True
        if proc.poll() is not None:
            text = log.read_text(errors="replace")
            if "address already in use" in text and not last_attempt:
                return False
            raise RuntimeError(f"docker-registry exited with {proc.returncode}:\n{text}")
        time.sleep(0.05)
    raise RuntimeError(
        f"docker-registry did not answer on {url} in {START_TIMEOUT:.0f}s:\n"
        + log.read_text(errors="replace")
    )
