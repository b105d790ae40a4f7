"""An HTTPS server for rpm-md repositories that demands a client certificate.

This is the entitlement setup of Red Hat's CDN in small: :func:`make_pki` makes (with
``openssl``) a throwaway CA, a server certificate for ``127.0.0.1`` and a client
certificate with its key, both signed by the CA, plus a second client certificate from
another CA that the server must refuse. :func:`serve` serves a directory over HTTPS on
127.0.0.1 (stdlib ``http.server`` + ``ssl``) from a thread, requiring a client
certificate signed by the CA, records the paths it was asked for and stops on the way out.
"""

from __future__ import annotations

import contextlib
import http.server
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ocitree.run import run

DAYS = "2"


@dataclass(frozen=True)
class Pki:
    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path  # signed by ca_cert: the "entitlement certificate"
    client_key: Path
    foreign_cert: Path  # signed by another CA: the server refuses it
    foreign_key: Path


def _openssl(*args: str | Path) -> None:
    run(["openssl", *args], hint="install the openssl package")


def _ca(workdir: Path, name: str) -> tuple[Path, Path]:
    cert, key = workdir / f"{name}.pem", workdir / f"{name}-key.pem"
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN=ocitree test {name}",
        "-days", DAYS, "-keyout", key, "-out", cert,
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    return cert, key


def _leaf(
    workdir: Path, name: str, subject: str, ext: str, ca: tuple[Path, Path]
) -> tuple[Path, Path]:
    cert, key, csr = (workdir / f"{name}{s}" for s in (".pem", "-key.pem", ".csr"))
    extfile = workdir / f"{name}.ext"
    extfile.write_text(ext + "\n")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", subject, "-keyout", key, "-out", csr)
    _openssl(
        "x509", "-req", "-in", csr, "-CA", ca[0], "-CAkey", ca[1], "-CAcreateserial",
        "-days", DAYS, "-out", cert, "-extfile", extfile,
    )  # fmt: skip
    return cert, key


def make_pki(workdir: Path) -> Pki:
    """A CA, a server certificate for 127.0.0.1, a client certificate, a foreign one."""
    workdir.mkdir(parents=True, exist_ok=True)
    ca = _ca(workdir, "ca")
    other = _ca(workdir, "other-ca")
    server = _leaf(
        workdir, "server", "/CN=127.0.0.1",
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE",
        ca,
    )  # fmt: skip
    client_ext = "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE"
    client = _leaf(workdir, "client", "/CN=ocitree-entitlement", client_ext, ca)
    foreign = _leaf(workdir, "foreign", "/CN=someone-else", client_ext, other)
    return Pki(ca[0], server[0], server[1], client[0], client[1], foreign[0], foreign[1])


@dataclass
class RepoServer:
    url: str  # https://127.0.0.1:PORT
    directory: Path
    requests: list[str] = field(default_factory=list)  # paths served (status 200)
    refused: list[str] = field(default_factory=list)  # TLS failures, as text


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    ssl_context: ssl.SSLContext
    state: RepoServer

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, addr = self.socket.accept()
        # The handshake happens on the handler's thread, so a client that fails it (no
        # certificate) cannot stall the accepting loop.
        tls = self.ssl_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return tls, addr

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        self.state.refused.append(repr(sys.exc_info()[1]))


def _handler(state: RepoServer) -> type[http.server.SimpleHTTPRequestHandler]:
    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(state.directory), **kwargs)

        def setup(self) -> None:
            super().setup()
            conn = self.request
            assert isinstance(conn, ssl.SSLSocket)
            conn.settimeout(10)
            conn.do_handshake()

        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            if str(code) == "200":
                state.requests.append(self.path)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@contextlib.contextmanager
def serve(directory: Path, pki: Pki) -> Iterator[RepoServer]:
    """Serve ``directory`` over HTTPS on 127.0.0.1, client certificates required."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki.server_cert, pki.server_key)
    ctx.load_verify_locations(pki.ca_cert)
    ctx.verify_mode = ssl.CERT_REQUIRED
    state = RepoServer(url="", directory=directory)
    server = _Server(("127.0.0.1", 0), _handler(state))
    server.ssl_context = ctx
    server.state = state
    state.url = f"https://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, name="rpmrepo-server", daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
