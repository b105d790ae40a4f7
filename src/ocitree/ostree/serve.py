"""Serve an archive-mode ostree repository over HTTP, for ``ostree pull`` and installers.

A static file server with the standard library's :class:`ThreadingHTTPServer`: GET and
HEAD of the regular files inside the repository, nothing else. Paths with a ``..``
segment, and symlinks that lead out of the repository, are refused (403); directories
and missing files are 404 (no listings). Each request is logged as one line, ``METHOD
PATH STATUS BYTES``, through the ``ocitree`` logger.

Only archive-mode repositories can be pulled over HTTP (the objects of the other modes
are not the files a client fetches), so others are refused.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import stat
import sys
import threading
import urllib.parse
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any

from ocitree.errors import UserError
from ocitree.log import logger
from ocitree.ostree.repo import Repo, RepoMode

_CHUNK = 1 << 20


def _printable(text: str) -> str:
    """``text`` for a log line: control characters and spaces percent-escaped."""
    return "".join(c if c.isprintable() and c != " " else f"%{ord(c):02X}" for c in text)


class _Refused(Exception):
    def __init__(self, status: HTTPStatus) -> None:
        super().__init__(status.phrase)
        self.status = status


class RepoRequestHandler(BaseHTTPRequestHandler):
    """GET and HEAD of the regular files under ``server.root``."""

    server: RepoHTTPServer
    protocol_version = "HTTP/1.1"  # keep-alive: a pull fetches many small objects
    server_version = "ocitree-serve"
    timeout = 120  # seconds an idle keep-alive connection is kept

    def do_GET(self) -> None:
        self._send_file(body=True)

    def do_HEAD(self) -> None:
        self._send_file(body=False)

    # -- resolving --------------------------------------------------------------------

    def _open(self) -> tuple[int, os.stat_result]:
        """Open the file the request names; refuse anything outside the repository."""
        raw = urllib.parse.urlsplit(self.path).path
        rel = urllib.parse.unquote(raw, errors="strict")
        parts = [p for p in rel.split("/") if p not in ("", ".")]
        if "\0" in rel or ".." in parts:
            raise _Refused(HTTPStatus.FORBIDDEN)
        if not parts:
            raise _Refused(HTTPStatus.NOT_FOUND)
        root = self.server.root
        try:
            target = root.joinpath(*parts).resolve(strict=True)
        except (FileNotFoundError, NotADirectoryError):
            raise _Refused(HTTPStatus.NOT_FOUND) from None
        except (OSError, RuntimeError):  # a symlink loop, a permission error
            raise _Refused(HTTPStatus.FORBIDDEN) from None
        if not target.is_relative_to(root):
            raise _Refused(HTTPStatus.FORBIDDEN)
        try:
            # The resolved path has no symlinks left; one swapped in since is refused.
            fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError as e:
            missing = e.errno in (errno.ENOENT, errno.ENOTDIR)
            raise _Refused(HTTPStatus.NOT_FOUND if missing else HTTPStatus.FORBIDDEN) from None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise _Refused(HTTPStatus.NOT_FOUND)
        return fd, st

    # -- responding -------------------------------------------------------------------

    def _send_file(self, *, body: bool) -> None:
        try:
            fd, st = self._open()
        except (_Refused, UnicodeDecodeError) as e:
            status = e.status if isinstance(e, _Refused) else HTTPStatus.BAD_REQUEST
            self._send_status(status, body=body)
            return
        sent = 0
        with os.fdopen(fd, "rb") as f:
            self.send_response_only(HTTPStatus.OK)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(st.st_size))
            self.send_header("Last-Modified", self.date_time_string(int(st.st_mtime)))
            self.send_header("Date", self.date_time_string())
            self.end_headers()
            if body:
                try:
                    # No more than Content-Length said, even if the file grew since.
                    while sent < st.st_size and (chunk := f.read(min(_CHUNK, st.st_size - sent))):
                        self.wfile.write(chunk)
                        sent += len(chunk)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                if sent < st.st_size:  # the file shrank or the client left: end it here
                    self.close_connection = True
        self._log(HTTPStatus.OK, sent)

    def _send_status(self, status: HTTPStatus, *, body: bool) -> None:
        content = f"{status.value} {status.phrase}\n".encode()
        self.send_response_only(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(content)))
        self.send_header("Date", self.date_time_string())
        self.end_headers()
        if body:
            self.wfile.write(content)
        self._log(status, len(content) if body else 0)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # Malformed requests and other methods, answered by BaseHTTPRequestHandler.
        super().send_error(code, message, explain)
        self._log(code, None)

    def _log(self, status: int, size: int | None) -> None:
        logger.info(
            "%s %s %d %s",
            _printable(self.command or "-"),
            _printable(self.path or "-"),
            status,
            "-" if size is None else size,
        )

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass  # each request is logged once, by _log

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("serve: %s", _printable(format % args))


class RepoHTTPServer(ThreadingHTTPServer):
    """Serves the files of ``root``; :attr:`url` is where, with the actual port."""

    daemon_threads = True  # open keep-alive connections do not hold up a stop

    def __init__(self, root: Path, bind: str, port: int) -> None:
        self.root = root
        self.address_family = socket.AF_INET6 if ":" in bind else socket.AF_INET
        super().__init__((bind, port), RepoRequestHandler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # a client that went away mid-response: one line, not socketserver's traceback
        logger.info("%s: connection failed: %s", client_address[0], sys.exc_info()[1])

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        assert isinstance(host, str)
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{port}/"


def open_archive_repo(path: Path) -> Repo:
    """The repository at ``path``; a UserError unless it is in archive mode."""
    repo = Repo(path)
    if repo.mode is not RepoMode.ARCHIVE:
        raise UserError(
            f"{path} is a {repo.mode.value}-mode repository; "
            "clients can only pull an archive-mode repository over HTTP",
            hint=f"make an archive copy: ostree --repo=NEW init --mode=archive && "
            f"ostree --repo=NEW pull-local {path} REF, then serve NEW",
        )
    return repo


def make_server(path: Path, *, bind: str = "127.0.0.1", port: int = 8000) -> RepoHTTPServer:
    """A server for the archive-mode repository at ``path``, bound but not yet serving.

    ``port`` 0 picks a free port (see :attr:`RepoHTTPServer.url`).
    """
    repo = open_archive_repo(path)
    try:
        return RepoHTTPServer(repo.path.resolve(), bind, port)
    except OSError as e:
        hint = (
            "pick another --port, or --port 0 for a free one"
            if e.errno == errno.EADDRINUSE
            else "check --bind: it must be an address of this machine"
        )
        raise UserError(f"cannot listen on {bind} port {port}: {e.strerror or e}", hint=hint) from e


def serve_until_stopped(server: RepoHTTPServer, *, ready: Callable[[], None] | None = None) -> None:
    """Serve until SIGTERM or SIGINT (Ctrl-C), then stop cleanly and return.

    ``ready()`` is called once the handlers are in place and the server runs (the CLI
    prints the URL then: a caller that stops the server on seeing it gets a clean stop).
    The signal handlers are installed only when called from the main thread; from
    another thread, call ``server.shutdown()`` to stop.
    """
    stop = threading.Event()

    def loop() -> None:
        try:
            server.serve_forever()
        finally:
            stop.set()  # also when another thread called server.shutdown()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        logger.info("%s: stopping", signal.Signals(signum).name)
        stop.set()

    previous: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, on_signal)
    try:
        threading.Thread(target=loop, name="ocitree-serve", daemon=True).start()
        if ready is not None:
            ready()
        stop.wait()
    finally:
        server.shutdown()  # returns once serve_forever has
        server.server_close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    logger.info("stopped")
