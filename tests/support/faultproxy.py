"""A fault-injecting HTTP reverse proxy in front of a registry, for failure tests.

``start_fault_proxy(upstream)`` listens on 127.0.0.1 and forwards every request to the
plain-HTTP registry at ``upstream`` (``"127.0.0.1:PORT"``), streaming the answers back.
Blob downloads (``GET /v2/<name>/blobs/<digest>``) can be damaged on the way, as set by
:class:`Faults` (see :meth:`FaultProxy.set_faults`):

- answer ``500`` to the first N of them (or to all of them);
- flip one byte in the middle of the body (same length, so only the digest notices);
- close the connection after K bytes of the body (the ``Content-Length`` still promises
  all of it).

``Faults.digests`` limits the faults to some blobs (say, the layers an upgrade fetches),
so that the manifest and config still come through. :attr:`FaultProxy.requests` records
what happened to every request.
"""

from __future__ import annotations

import contextlib
import http.client
import re
import socket
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

ALWAYS = sys.maxsize  # a count for Faults meaning "every time"
UPSTREAM_TIMEOUT = 30.0
SETTLE_TIMEOUT = 10.0
_CHUNK = 64 * 1024
_BLOB = re.compile(r"^/v2/(?P<name>.+)/blobs/(?P<digest>[a-z0-9]+:[a-f0-9]+)$")
# Hop-by-hop headers (RFC 9110 7.6.1) are not forwarded; Content-Length is set anew.
_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
    }
)
_ERROR_BODY = b'{"errors":[{"code":"UNKNOWN","message":"fault injected by the test proxy"}]}'


@dataclass(frozen=True)
class Faults:
    """What to do to blob GETs whose digest is in ``digests`` (every blob GET if None).

    The first ``fail`` matching GETs get ``500``. Of the others, the first ``corrupt`` get
    their body with the byte at ``corrupt_at`` flipped (the middle one if None; negative:
    from the end), and the first ``cut`` (when ``cut_after`` is set) lose their connection
    after ``cut_after`` bytes of the body. ``ALWAYS`` as a count means every matching GET.
    """

    digests: frozenset[str] | None = None
    fail: int = 0
    corrupt: int = 0
    corrupt_at: int | None = None
    cut: int = ALWAYS
    cut_after: int | None = None


@dataclass(frozen=True)
class Request:
    """One request the proxy handled: what was asked and what the proxy did to it."""

    method: str
    path: str
    status: int  # as sent to the client (502: the upstream did not answer)
    fault: str | None  # "fail", "corrupt", "cut" or None
    body_bytes: int  # body bytes sent to the client

    @property
    def digest(self) -> str | None:
        m = _BLOB.match(urlsplit(self.path).path)
        return m["digest"] if m else None


@dataclass
class _Used:
    fail: int = 0
    corrupt: int = 0
    cut: int = 0


@dataclass
class FaultProxy:
    """A running proxy: clients use :attr:`host` instead of the registry's."""

    host: str
    upstream: str
    requests: list[Request] = field(default_factory=list)
    _faults: Faults = field(default_factory=Faults)
    _used: _Used = field(default_factory=_Used)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _inflight: int = 0
    _idle: threading.Condition = field(init=False)

    def __post_init__(self) -> None:
        self._idle = threading.Condition(self._lock)

    def ref(self, name: str) -> str:
        return f"docker://{self.host}/{name}"

    def set_faults(self, faults: Faults | None = None) -> None:
        """Use ``faults`` from now on (None: pass everything through); the counts and
        :attr:`requests` start afresh once the requests being answered are done."""
        with self._idle:
            self._settle()
            self._faults = faults or Faults()
            self._used = _Used()
            self.requests = []

    def blob_gets(self, digest: str | None = None) -> list[Request]:
        """The blob GETs handled so far (of ``digest`` only, if given)."""
        with self._idle:
            self._settle()
            return [
                r
                for r in self.requests
                if r.method == "GET" and r.digest is not None and digest in (None, r.digest)
            ]

    def _settle(self) -> None:
        # A client may have its whole answer before the handler has recorded it.
        if not self._idle.wait_for(lambda: self._inflight == 0, timeout=SETTLE_TIMEOUT):
            raise TimeoutError(f"requests still being answered after {SETTLE_TIMEOUT}s")

    def _begin(self) -> None:
        with self._idle:
            self._inflight += 1

    def _end(self) -> None:
        with self._idle:
            self._inflight -= 1
            self._idle.notify_all()

    def _decide(self, digest: str | None) -> tuple[bool, Faults | None, int | None]:
        """(answer 500, the Faults if the body is to be corrupted, cut after this many
        bytes) for a request."""
        with self._lock:
            f = self._faults
            if digest is None or (f.digests is not None and digest not in f.digests):
                return False, None, None
            if self._used.fail < f.fail:
                self._used.fail += 1
                return True, None, None
            corrupt = self._used.corrupt < f.corrupt
            if corrupt:
                self._used.corrupt += 1
            cut_after = None
            if f.cut_after is not None and self._used.cut < f.cut:
                self._used.cut += 1
                cut_after = f.cut_after
            return False, f if corrupt else None, cut_after

    def _record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    proxy: FaultProxy

    def handle_error(self, request: object, client_address: object) -> None:
        # A client that hangs up mid-answer (skopeo giving up on a blob) is no error of
        # ours; anything else still gets socketserver's report on stderr.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        pass  # FaultProxy.requests is the log

    def do_GET(self) -> None:
        self.server.proxy._begin()
        try:
            self._forward()
        finally:
            self.server.proxy._end()

    do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = do_GET

    def _forward(self) -> None:
        proxy = self.server.proxy
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        m = _BLOB.match(urlsplit(self.path).path) if self.command == "GET" else None
        digest = m["digest"] if m else None
        fail, corrupt, cut_after = proxy._decide(digest)
        if fail:
            self._send_error(500, "Internal Server Error")
            proxy._record(Request(self.command, self.path, 500, "fail", len(_ERROR_BODY)))
            return
        # A header sent several times (Go sends one Accept per media type) becomes one
        # comma-separated header, which means the same (RFC 9110 5.3).
        headers: dict[str, str] = {}
        for key in self.headers.keys():  # noqa: SIM118 (a Message: keys repeat)
            if key.lower() not in _HOP and key.lower() not in (k.lower() for k in headers):
                headers[key] = ", ".join(self.headers.get_all(key) or [])
        conn = http.client.HTTPConnection(proxy.upstream, timeout=UPSTREAM_TIMEOUT)
        try:
            try:
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
            except OSError:
                self._send_error(502, "Bad Gateway")
                proxy._record(Request(self.command, self.path, 502, None, len(_ERROR_BODY)))
                return
            self._relay(resp, corrupt, cut_after)
        finally:
            conn.close()

    def _send_error(self, status: int, reason: str) -> None:
        self.send_response(status, reason)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(_ERROR_BODY)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(_ERROR_BODY)

    def _relay(
        self, resp: http.client.HTTPResponse, corrupt: Faults | None, cut_after: int | None
    ) -> None:
        proxy = self.server.proxy
        self.send_response(resp.status, resp.reason)
        for key, value in resp.getheaders():
            if key.lower() not in _HOP:
                self.send_header(key, value)
        declared = resp.getheader("Content-Length")
        if self.command == "HEAD" or resp.status in (204, 304) or 100 <= resp.status < 200:
            if declared is not None:
                self.send_header("Content-Length", declared)
            self.end_headers()
            proxy._record(Request(self.command, self.path, resp.status, None, 0))
            return
        pending: bytes | None = None
        if declared is None:  # chunked upstream: buffer it to send a length
            pending = resp.read()
            declared = str(len(pending))
        total = int(declared)
        self.send_header("Content-Length", declared)
        self.end_headers()
        flip_at = None
        if corrupt is not None and total > 0:
            at = corrupt.corrupt_at
            flip_at = total // 2 if at is None else at % total
        fault = "corrupt" if flip_at is not None else None
        chunks = iter([pending]) if pending is not None else iter(lambda: resp.read(_CHUNK), b"")
        sent = 0
        for chunk in chunks:
            if flip_at is not None and sent <= flip_at < sent + len(chunk):
                damaged = bytearray(chunk)
                damaged[flip_at - sent] ^= 0xFF
                chunk = bytes(damaged)
            if cut_after is not None and sent + len(chunk) >= cut_after:
                self.wfile.write(chunk[: cut_after - sent])
                sent = cut_after
                self._cut()
                proxy._record(Request(self.command, self.path, resp.status, "cut", sent))
                return
            self.wfile.write(chunk)
            sent += len(chunk)
        proxy._record(Request(self.command, self.path, resp.status, fault, sent))

    def _cut(self) -> None:
        """Drop the connection now: the client sees its body end early."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)


@contextlib.contextmanager
def start_fault_proxy(upstream: str) -> Iterator[FaultProxy]:
    """Run a proxy for the plain-HTTP registry at ``upstream`` until the block ends."""
    server = _Server(("127.0.0.1", 0), _Handler)
    port = server.server_address[1]
    proxy = FaultProxy(host=f"127.0.0.1:{port}", upstream=upstream)
    server.proxy = proxy
    thread = threading.Thread(target=server.serve_forever, name="fault-proxy", daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
