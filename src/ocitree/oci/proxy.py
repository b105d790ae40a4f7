"""Images streamed through ``skopeo experimental-image-proxy``: manifests, configs and blobs
from anything skopeo can reach, without first copying the image to disk.

The protocol (the one ostree-ext speaks): the client makes a ``SOCK_SEQPACKET`` socket pair
and hands one end to skopeo (``--sockfd``). Every request is one packet of JSON,
``{"method": ..., "args": [...]}``, answered by one packet
``{"success": ..., "value": ..., "pipeid": ..., "error": ...}``. Payloads (manifests,
blobs) arrive on the read end of a pipe passed with the reply (``SCM_RIGHTS``); skopeo
closes the write end only when the client calls ``FinishPipe(pipeid)``, whose reply says
whether the transfer succeeded (GetBlob checks the size and digest of what it sent).
skopeo answers one request at a time and holds its lock while ``FinishPipe`` waits for the
data to be written, so this client sends ``FinishPipe`` right after a pipe's reply, reads
the pipe to its end and only then collects that reply: one stream at a time.

Facts checked on skopeo 1.9.3 (protocol 0.2.3): the methods are Initialize, OpenImage,
CloseImage, GetManifest, GetConfig, GetFullConfig, GetBlob, FinishPipe and Shutdown
(which gets no reply). GetManifest resolves a manifest list or index to this machine's
platform and returns the OCI form of the manifest with the digest of the original.
OpenImage does not consult the signature policy (protocol 0.2.6 added that), so
``verify_signatures`` needs a newer skopeo and is refused on older ones.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from ocitree.errors import CommandError, ImageFormatError, UserError
from ocitree.log import logger
from ocitree.oci.layout import INDEX_TYPE, Image
from ocitree.oci.reference import ImageReference
from ocitree.oci.skopeo import RegistryOptions, explain
from ocitree.ostree.repo import Reader
from ocitree.run import spawn

# Replies are small JSON (the payloads travel over pipes); skopeo itself reads 32 KiB packets.
_MAX_REPLY = 1 << 20
# How long skopeo may take to exit after Shutdown before it is killed.
_STOP_TIMEOUT = 5.0
# Bytes a stream may carry beyond its declared size before reading stops with an error.
_MAX_EXCESS = 1 << 20
# Manifests and configs are read whole into memory; refuse absurd ones.
_MAX_METADATA = 16 << 20
# The first protocol whose OpenImage enforces the signature policy.
_POLICY_PROTOCOL = (0, 2, 6)


def _version(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in text.split("."))
    except ValueError:
        return ()


class ProxyCallError(UserError):
    """A request skopeo answered with an error; ``error`` is skopeo's own message."""

    def __init__(self, method: str, error: str, message: str, *, hint: str | None) -> None:
        super().__init__(message, hint=hint)
        self.method = method
        self.error = error


def _proxy_error(method: str, message: str, ref: ImageReference | None) -> ProxyCallError:
    """A skopeo error message as a UserError with a hint (see :func:`skopeo.explain`)."""
    err = CommandError(["skopeo", "experimental-image-proxy", method], 1, message)
    lower = message.lower()
    where = f" for {ref}" if ref else ""
    out: UserError
    # explain() knows "signature ... rejected"; c/image also says "Source image rejected:
    # Running image ... is rejected by policy".
    if "rejected by policy" in lower or "source image rejected" in lower:
        out = UserError(
            f"the signature policy rejected the image{where}: {message}",
            hint="check containers-policy.json (--policy) and the signing key",
        )
    # The oci: transport: a missing tag, or a directory that is no layout.
    elif "no descriptor found for reference" in lower:
        out = UserError(f"image not found{where}", hint="check the name and tag")
    elif "index.json: no such file or directory" in lower:
        out = UserError(f"no OCI image layout{where}", hint="check the path of the oci: directory")
    else:
        out = explain(err, ref)
    result = ProxyCallError(method, message, out.message, hint=out.hint)
    result.__cause__ = err
    return result


class _Stream:
    """The read end of one proxy pipe (a :class:`~ocitree.ostree.repo.Reader`).

    Reading to the end collects the ``FinishPipe`` reply and raises if skopeo reports the
    transfer failed; :meth:`close` finishes a stream read only in part (the caller gave up
    on it) by closing the pipe, which makes skopeo stop writing, and ignores the outcome.
    """

    def __init__(
        self,
        proxy: ImageProxy,
        fd: int,
        pipeid: int,
        what: str,
        size: int | None,
        ref: ImageReference | None,
    ) -> None:
        self._proxy = proxy
        self._file: IO[bytes] | None = os.fdopen(fd, "rb", buffering=0)
        self._pipeid = pipeid
        self._what = what
        self._size = size
        self._ref = ref
        self._read = 0
        self._done = False

    def read(self, n: int = -1, /) -> bytes:
        if self._done or self._file is None:
            return b""
        if n == 0:
            return b""
        try:
            data = self._file.read() if n < 0 else self._file.read(n)
        except BaseException:
            self._abort()
            raise
        data = data or b""
        self._read += len(data)
        if self._size is not None and self._read > self._size + _MAX_EXCESS:
            self._abort()
            raise ImageFormatError(
                f"{self._what} is longer than its declared {self._size} bytes{self._where}"
            )
        if n < 0 or not data:
            self._finish()
        return data

    @property
    def _where(self) -> str:
        return f" in {self._ref}" if self._ref else ""

    def _finish(self) -> None:
        """At the end of the pipe: collect FinishPipe's verdict."""
        if self._done:
            return
        self._done = True
        self._close_file()
        try:
            self._proxy._finish_pipe(self._pipeid, self._ref, check=True)
        except ProxyCallError as e:
            # GetBlob checks what it sent: "expected N bytes in blob, got M",
            # "corrupted blob, expecting sha256:…".
            if "bytes in blob" in e.error or "corrupted blob" in e.error:
                raise ImageFormatError(
                    f"{self._what}{self._where} is damaged: {e.error}",
                    hint="the image's source holds a corrupt blob; push the image again",
                ) from e
            raise
        if self._size is not None and self._read != self._size:
            raise ImageFormatError(
                f"{self._what} has {self._read} bytes, the manifest says {self._size}{self._where}"
            )

    def _abort(self) -> None:
        """Stop early: close our end so skopeo's writer fails, then reap the pipe."""
        if self._done:
            return
        self._done = True
        self._close_file()
        self._proxy._finish_pipe(self._pipeid, self._ref, check=False)

    def _close_file(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def finish(self) -> None:
        """Read what is left (if the caller took exactly the declared size) and check the
        transfer; a stream abandoned before its declared size is aborted instead."""
        if self._done:
            return
        if self._size is not None and self._read >= self._size:
            while self.read(1 << 16):
                pass
        else:
            self._abort()

    def close(self) -> None:
        self._abort()

    def __enter__(self) -> _Stream:
        return self

    def __exit__(
        self,
        t: type[BaseException] | None,
        e: BaseException | None,
        tb: TracebackType | None,
        /,
    ) -> None:
        self.close()


class ImageProxy:
    """A running ``skopeo experimental-image-proxy``; use as a context manager.

    ``verify_signatures=False`` runs skopeo with ``--insecure-policy`` (the
    ``ostree-unverified-*`` case); ``True`` enforces ``policy`` (or skopeo's default
    ``/etc/containers/policy.json``) when images are opened, which needs a skopeo whose
    proxy checks signatures (protocol 0.2.6); with an older one :meth:`start` refuses.
    ``registries_d`` tells skopeo where signatures are stored (``--registries.d``).

    One request, and one open blob stream, at a time; not for use from several threads.
    """

    def __init__(
        self,
        opts: RegistryOptions,
        *,
        policy: Path | None = None,
        verify_signatures: bool = False,
        registries_d: Path | None = None,
    ) -> None:
        self.opts = opts
        self.policy = policy
        self.verify_signatures = verify_signatures
        self.registries_d = registries_d
        self.protocol_version: str | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._stderr: IO[bytes] | None = None
        self._argv: list[str] = []
        self._pipe_open = False

    @property
    def pid(self) -> int | None:
        """The skopeo process's id while it runs (and after, until reused)."""
        return self._proc.pid if self._proc is not None else None

    def __enter__(self) -> ImageProxy:
        self.start()
        return self

    def __exit__(
        self,
        t: type[BaseException] | None,
        e: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        if self._proc is not None:
            raise RuntimeError("the image proxy is already running")
        argv = ["skopeo"]
        if not self.verify_signatures:
            argv.append("--insecure-policy")
        elif self.policy is not None:
            if not self.policy.is_file():
                raise UserError(f"signature policy {self.policy} does not exist")
            argv += ["--policy", str(self.policy)]
        if self.registries_d is not None:
            argv += ["--registries.d", str(self.registries_d)]
        registry_args = self.opts.args()  # checks the auth file exists
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        # Kept open while skopeo runs: its stderr, for when it dies.
        stderr = tempfile.TemporaryFile(prefix="ocitree-skopeo-proxy-")  # noqa: SIM115
        try:
            # pass_fds keeps the fd's number in the child: no need to move it to 3.
            self._argv = [
                *argv,
                "experimental-image-proxy",
                "--sockfd",
                str(theirs.fileno()),
                *registry_args,
            ]
            self._proc = spawn(self._argv, stderr=stderr.fileno(), pass_fds=[theirs.fileno()])
        except BaseException:
            ours.close()
            stderr.close()
            raise
        finally:
            # Only skopeo holds its end: when it dies, our reads end instead of hanging.
            theirs.close()
        self._sock, self._stderr = ours, stderr
        try:
            version = self._call("Initialize")[0]
            if not isinstance(version, str) or _version(version)[:2] != (0, 2):
                raise UserError(
                    f"skopeo's image proxy speaks protocol {version!r}, ocitree knows 0.2",
                    hint="install a skopeo whose experimental-image-proxy speaks 0.2.x",
                )
            self.protocol_version = version
            if self.verify_signatures and _version(version) < _POLICY_PROTOCOL:
                raise UserError(
                    f"this skopeo's image proxy (protocol {version}) cannot verify "
                    "signatures: it ignores the signature policy",
                    hint="install a newer skopeo (proxy protocol 0.2.6 or later), or copy "
                    "the image with 'skopeo copy' (which enforces the policy) to an oci: "
                    "directory and use that",
                )
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Shut skopeo down, kill it if it lingers, and always reap it."""
        proc, sock = self._proc, self._sock
        if sock is not None:
            with contextlib.suppress(OSError):
                if proc is not None and proc.poll() is None and not self._pipe_open:
                    sock.send(_request("Shutdown", ()))
            sock.close()  # skopeo ends at EOF on the socket too
            self._sock = None
        if proc is not None:
            try:
                proc.wait(timeout=_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                logger.debug("skopeo image proxy (pid %d) did not exit; killing it", proc.pid)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
            if proc.returncode not in (0, None):
                logger.debug(
                    "skopeo image proxy exited with %s: %s", proc.returncode, self._stderr_text()
                )
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
        self._pipe_open = False

    def open(self, ref: ImageReference) -> ProxySource:
        """Open an image (OpenImage); close the returned source when done with it."""
        value = self._call("OpenImage", str(ref), ref=ref)[0]
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise self._protocol_error("OpenImage", f"returned image id {value!r}")
        return ProxySource(self, value, ref)

    # -- the protocol --------------------------------------------------------------------

    def _call(
        self, method: str, *args: Any, ref: ImageReference | None = None
    ) -> tuple[Any, int | None, int]:
        """Send one request and return its (value, fd, pipeid); raise a UserError on failure."""
        if self._pipe_open:
            raise RuntimeError(f"{method}: finish reading the open proxy stream first")
        self._send(method, args, ref)
        return self._receive(method, ref)

    def _send(self, method: str, args: tuple[Any, ...], ref: ImageReference | None) -> None:
        if self._sock is None:
            raise RuntimeError("the image proxy is not running")
        data = _request(method, args)
        try:
            sent = self._sock.send(data)
        except OSError as e:
            raise self._died(method, ref) from e
        if sent != len(data):
            raise self._protocol_error(method, f"sent {sent} of {len(data)} bytes")

    def _receive(self, method: str, ref: ImageReference | None) -> tuple[Any, int | None, int]:
        assert self._sock is not None
        try:
            msg, fds, flags, _ = socket.recv_fds(self._sock, _MAX_REPLY, 1)
        except OSError as e:
            raise self._died(method, ref) from e
        fd = fds[0] if fds else None
        for extra in fds[1:]:
            os.close(extra)
        try:
            if not msg:
                raise self._died(method, ref)
            if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
                raise self._protocol_error(method, "sent a reply larger than expected")
            try:
                reply = json.loads(msg)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise self._protocol_error(method, f"sent a reply that is not JSON: {e}") from e
            if not isinstance(reply, dict) or not isinstance(reply.get("success"), bool):
                raise self._protocol_error(method, f"sent an unexpected reply {msg[:200]!r}")
            if not reply["success"]:
                error = str(reply.get("error") or "failed without a message")
                logger.debug("skopeo image proxy %s: %s", method, error)
                raise _proxy_error(method, error, ref)
            pipeid = reply.get("pipeid") or 0
            if not isinstance(pipeid, int):
                raise self._protocol_error(method, f"sent pipe id {pipeid!r}")
            return reply.get("value"), fd, pipeid
        except BaseException:
            if fd is not None:
                os.close(fd)
            raise

    def _call_pipe(
        self,
        method: str,
        *args: Any,
        what: str,
        size: int | None = None,
        ref: ImageReference | None = None,
    ) -> tuple[Any, _Stream]:
        """A request whose reply carries a pipe: returns its value and the stream."""
        value, fd, pipeid = self._call(method, *args, ref=ref)
        if fd is None or not pipeid:
            if fd is not None:
                os.close(fd)
            raise self._protocol_error(method, "sent no pipe with its reply")
        stream = _Stream(self, fd, pipeid, what, size, ref)
        self._pipe_open = True
        try:
            # skopeo closes the pipe only in FinishPipe, which waits for the writer: ask
            # now, read the data, then collect the reply (see _Stream._finish).
            self._send("FinishPipe", (pipeid,), ref)
        except BaseException:
            stream._done = True
            stream._close_file()
            self._pipe_open = False
            raise
        return value, stream

    def _finish_pipe(self, pipeid: int, ref: ImageReference | None, *, check: bool) -> None:
        """Collect the reply to the FinishPipe sent in :meth:`_call_pipe`."""
        self._pipe_open = False
        if self._sock is None:
            return  # stopped meanwhile: nothing left to collect
        try:
            self._receive("FinishPipe", ref)
        except UserError:
            if check:
                raise

    def _stderr_text(self) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")

    def _died(self, method: str, ref: ImageReference | None) -> UserError:
        """skopeo closed the socket: wait for it briefly and report its stderr."""
        proc = self._proc
        code = -1
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=_STOP_TIMEOUT)
            code = proc.returncode if proc.returncode is not None else -1
        stderr = self._stderr_text().strip()
        if not stderr:
            how = f"was killed by signal {-code}" if code < -1 else f"exited with code {code}"
            where = f" for {ref}" if ref else ""
            return UserError(
                f"skopeo's image proxy {how} during {method}{where}",
                hint="run with --debug to see the skopeo command line",
            )
        err = CommandError(self._argv or ["skopeo"], code, stderr)
        out = explain(err, ref)
        out.__cause__ = err
        return out

    def _protocol_error(self, method: str, problem: str) -> UserError:
        return UserError(
            f"skopeo's image proxy {problem} to {method}",
            hint=f"ocitree knows protocol 0.2.x; skopeo speaks {self.protocol_version}",
        )


def _request(method: str, args: tuple[Any, ...]) -> bytes:
    return json.dumps({"method": method, "args": list(args)}).encode()


class ProxySource:
    """An image opened through the proxy; implements :class:`ocitree.oci.source.ImageSource`."""

    def __init__(self, proxy: ImageProxy, image_id: int, ref: ImageReference) -> None:
        self.proxy = proxy
        self.image_id = image_id
        self.ref = ref
        self._image: Image | None = None
        self._closed = False

    def image(self) -> Image:
        """The manifest for this machine's platform (skopeo resolves lists and indexes and
        converts Docker manifests to OCI; ``manifest_digest`` is that of the original) and
        the config, read as a blob so that ``config_raw`` matches its digest."""
        if self._image is not None:
            return self._image
        digest, stream = self.proxy._call_pipe(
            "GetManifest", self.image_id, what="the manifest", ref=self.ref
        )
        raw = _read_all(stream, "the manifest", self.ref)
        if not isinstance(digest, str) or not digest.startswith("sha256:"):
            raise ImageFormatError(f"skopeo reported manifest digest {digest!r} for {self.ref}")
        try:
            manifest = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ImageFormatError(f"the manifest of {self.ref} is not valid JSON: {e}") from e
        if not isinstance(manifest, dict):
            raise ImageFormatError(f"the manifest of {self.ref} is not a JSON object")
        if manifest.get("mediaType") == INDEX_TYPE or "manifests" in manifest:
            raise ImageFormatError(f"skopeo returned an image index for {self.ref}")
        config_desc = manifest.get("config")
        if (
            not isinstance(config_desc, dict)
            or not isinstance(config_desc.get("digest"), str)
            or not isinstance(config_desc.get("size"), int)
            or not isinstance(manifest.get("layers"), list)
        ):
            raise ImageFormatError(f"the manifest of {self.ref} has no config or layers")
        cfg_digest: str = config_desc["digest"]
        cfg_size: int = config_desc["size"]
        if cfg_size > _MAX_METADATA:
            raise ImageFormatError(f"the config of {self.ref} is {cfg_size} bytes")
        with self.open_blob(cfg_digest, cfg_size) as f:
            cfg_raw = _read_all(f, "the config", self.ref)
        algo, _, hexpart = cfg_digest.partition(":")
        if algo != "sha256" or hashlib.sha256(cfg_raw).hexdigest() != hexpart:
            raise ImageFormatError(f"the config of {self.ref} does not match its digest")
        try:
            config = json.loads(cfg_raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ImageFormatError(f"the config of {self.ref} is not valid JSON: {e}") from e
        if not isinstance(config, dict):
            raise ImageFormatError(f"the config of {self.ref} is not a JSON object")
        self._image = Image(digest, manifest, raw, config, cfg_raw)
        return self._image

    @contextlib.contextmanager
    def open_blob(self, digest: str, size: int) -> Iterator[Reader]:
        """Stream a blob (GetBlob). Reading to its end, or leaving the block after reading
        ``size`` bytes, checks the transfer; a failure raises a UserError."""
        if self._closed:
            raise RuntimeError(f"{self.ref} is closed")
        if size < 0:
            raise ImageFormatError(f"blob {digest} of {self.ref} has negative size {size}")
        _, stream = self.proxy._call_pipe(
            "GetBlob", self.image_id, digest, size, what=f"blob {digest}", size=size, ref=self.ref
        )
        try:
            yield stream
        except BaseException:
            stream.close()
            raise
        stream.finish()

    def close(self) -> None:
        """Release the image in skopeo (CloseImage); a stopped proxy has released it."""
        if self._closed:
            return
        self._closed = True
        if self.proxy._sock is not None and not self.proxy._pipe_open:
            self.proxy._call("CloseImage", self.image_id, ref=self.ref)

    def __enter__(self) -> ProxySource:
        return self

    def __exit__(
        self,
        t: type[BaseException] | None,
        e: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if t is None:
            self.close()
        else:
            with contextlib.suppress(UserError):
                self.close()


def _read_all(stream: Reader, what: str, ref: ImageReference) -> bytes:
    chunks: list[bytes] = []
    total = 0
    with stream:
        while chunk := stream.read(1 << 16):
            total += len(chunk)
            if total > _MAX_METADATA:
                raise ImageFormatError(f"{what} of {ref} is larger than {_MAX_METADATA} bytes")
            chunks.append(chunk)
    return b"".join(chunks)
