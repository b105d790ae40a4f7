"""Reading layer blobs as streams: digest checked as the bytes go by, decompressed on the fly."""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Iterator
from typing import IO, Any, cast

from ocitree.errors import ImageFormatError
from ocitree.ostree.repo import Reader


class DigestReader:
    """Reads a blob while hashing it; :meth:`verify` reads the rest and checks the digest."""

    def __init__(self, f: Reader, digest: str, size: int | None = None) -> None:
        algo, _, hexpart = digest.partition(":")
        if algo != "sha256" or len(hexpart) != 64:
            raise ImageFormatError(f"unsupported digest {digest!r}")
        self._f = f
        self._h = hashlib.sha256()
        self.digest = digest
        self.size = size
        self.count = 0

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        self._h.update(data)
        self.count += len(data)
        if self.size is not None and self.count > self.size:
            raise ImageFormatError(f"blob {self.digest} is longer than its descriptor says")
        return data

    def verify(self) -> None:
        while self.read(1 << 20):
            pass
        if "sha256:" + self._h.hexdigest() != self.digest:
            raise ImageFormatError(
                f"blob {self.digest} does not match its digest",
                hint="the blob is corrupt or was tampered with; nothing of it was kept",
            )


class Decompressor:
    """A stream of the uncompressed tar for a layer media type (gzip, zstd or plain tar)."""

    def __init__(self, src: DigestReader, media_type: str) -> None:
        self._src = src
        if media_type.endswith("gzip") or media_type.endswith(".gzip"):
            self._kind = "gzip"
        elif "zstd" in media_type:
            self._kind = "zstd"
        elif media_type.endswith(".tar") or media_type.endswith("tar"):
            self._kind = "none"
        else:
            raise ImageFormatError(f"unsupported layer media type {media_type!r}")
        self._z: Any = zlib.decompressobj(31) if self._kind == "gzip" else None
        self._zstd: IO[bytes] | None = None
        if self._kind == "zstd":
            import zstandard

            self._zstd = zstandard.ZstdDecompressor().stream_reader(
                cast(IO[bytes], src), read_across_frames=True
            )
        self._buf = b""

    def read(self, n: int = -1) -> bytes:
        if self._zstd is not None:
            return self._zstd.read(n)
        if self._z is None:
            return self._src.read(n)
        while n < 0 or len(self._buf) < n:
            chunk = self._src.read(1 << 20)
            if not chunk:
                break
            out = self._z.decompress(chunk)
            while self._z.eof and self._z.unused_data:
                # Concatenated gzip members.
                rest = self._z.unused_data
                self._z = zlib.decompressobj(31)
                out += self._z.decompress(rest)
            self._buf += out
        if n < 0:
            data, self._buf = self._buf, b""
        else:
            data, self._buf = self._buf[:n], self._buf[n:]
        return data


def chunks(f: IO[bytes], size: int = 1 << 20) -> Iterator[bytes]:
    while chunk := f.read(size):
        yield chunk
