"""Layer blobs: compressed on all cores, digested once, written atomically.

The uncompressed tar stream is cut at fixed 1 MiB boundaries. Each block is compressed
on its own thread (zlib and zstd release the GIL): gzip blocks are raw deflate primed
with the previous block's last 32 KiB as dictionary and ended with a sync flush, the
way pigz does it; zstd blocks are independent frames. The output therefore depends only
on the input bytes and the level, never on the number of threads, so layers are
byte-identical on any machine.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import os
import struct
import threading
import zlib
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from ocitree.errors import UserError
from ocitree.fsutil import atomic_write, create_temp

BLOCK_SIZE = 1 << 20
_DICT_SIZE = 32 * 1024


class Compression(enum.StrEnum):
    GZIP = "gzip"
    ZSTD = "zstd"
    NONE = "none"

    @property
    def media_type(self) -> str:
        base = "application/vnd.oci.image.layer.v1.tar"
        return {"gzip": base + "+gzip", "zstd": base + "+zstd", "none": base}[self.value]

    @property
    def default_level(self) -> int:
        return {"gzip": 6, "zstd": 3, "none": 0}[self.value]

    def check_level(self, level: int) -> None:
        lo, hi = {"gzip": (1, 9), "zstd": (1, 19), "none": (0, 0)}[self.value]
        if not lo <= level <= hi:
            raise UserError(
                f"compression level {level} is out of range for {self.value}",
                hint=f"use a level from {lo} to {hi}",
            )


@dataclass(frozen=True)
class Blob:
    """A blob written to a layout: its digest and size, and for layers the diffid."""

    digest: str
    size: int
    media_type: str
    diff_id: str = ""
    uncompressed_size: int = 0


_pool_lock = threading.Lock()
_pool: list[ThreadPoolExecutor] = []


def _workers() -> int:
    return max(1, len(os.sched_getaffinity(0)))


def _executor() -> ThreadPoolExecutor:
    """The compression threads, one per core, shared by all layers."""
    with _pool_lock:
        if not _pool:
            _pool.append(ThreadPoolExecutor(_workers(), thread_name_prefix="ocitree-z"))
            _pool.append(ThreadPoolExecutor(1, thread_name_prefix="ocitree-finish"))
        return _pool[0]


def _finisher() -> ThreadPoolExecutor:
    """One thread that completes layers in order while the next one is produced."""
    _executor()
    return _pool[1]


def _gzip_block(level: int, block: bytes, zdict: bytes, last: bool) -> bytes:
    if zdict:
        c = zlib.compressobj(level, zlib.DEFLATED, -15, 8, zlib.Z_DEFAULT_STRATEGY, zdict)
    else:
        c = zlib.compressobj(level, zlib.DEFLATED, -15, 8, zlib.Z_DEFAULT_STRATEGY)
    return c.compress(block) + c.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)


def _zstd_block(level: int, block: bytes, zdict: bytes, last: bool) -> bytes:
    import zstandard

    return zstandard.ZstdCompressor(level=level, write_content_size=True).compress(block)


def _plain_block(level: int, block: bytes, zdict: bytes, last: bool) -> bytes:
    return block


_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03"


class LayerWriter:
    """A file-like sink for a layer's tar stream; ``finish()`` returns the :class:`Blob`.

    The compressed bytes go to a temporary file in ``blobs_dir`` that is renamed to its
    digest only when complete, so an interrupted write leaves no blob behind.
    ``finish_async()`` hands the tail of the work to a background thread so that the
    caller can start producing the next layer while this one's last blocks compress.
    """

    def __init__(self, blobs_dir: Path, compression: Compression, level: int) -> None:
        if compression is Compression.ZSTD:
            try:
                import zstandard  # noqa: F401
            except ImportError as e:
                raise UserError(
                    "zstd compression needs the zstandard module",
                    hint="pip install zstandard into the ocitree environment",
                ) from e
        self.compression = compression
        self.level = level
        self._blobs_dir = blobs_dir
        blobs_dir.mkdir(parents=True, exist_ok=True)
        self._out, self._tmp = create_temp(blobs_dir, ".tmp-layer-")
        self._buf = bytearray()
        self._prev_tail = b""
        self._usha = hashlib.sha256()
        self._csha = hashlib.sha256()
        self._crc = 0
        self._usize = 0
        self._csize = 0
        self._pending: deque[Future[bytes]] = deque()
        self._max_pending = 2 * _workers() + 2
        self._fn: Callable[[int, bytes, bytes, bool], bytes] = {
            Compression.GZIP: _gzip_block,
            Compression.ZSTD: _zstd_block,
            Compression.NONE: _plain_block,
        }[compression]
        self._state = "open"  # open → finishing → done | aborted
        if compression is Compression.GZIP:
            self._emit(_GZIP_HEADER)

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self._buf += data
        while len(self._buf) >= BLOCK_SIZE + 1:
            # Keep at least one byte back so the final block is never empty.
            self._submit(bytes(self._buf[:BLOCK_SIZE]), last=False)
            del self._buf[:BLOCK_SIZE]
        return len(data)

    def _submit(self, block: bytes, *, last: bool) -> None:
        self._usha.update(block)
        self._usize += len(block)
        if self.compression is Compression.GZIP:
            self._crc = zlib.crc32(block, self._crc)
        zdict = self._prev_tail
        self._prev_tail = block[-_DICT_SIZE:]
        self._pending.append(_executor().submit(self._fn, self.level, block, zdict, last))
        while len(self._pending) > self._max_pending:
            self._emit(self._pending.popleft().result())

    def _emit(self, data: bytes) -> None:
        self._csha.update(data)
        self._csize += len(data)
        self._out.write(data)

    def finish(self) -> Blob:
        """Compress the rest, fsync, and move the blob to its digest name."""
        return self.finish_async().result()

    def finish_async(self) -> Future[Blob]:
        """Like :meth:`finish`, done on a background thread; the future gives the Blob."""
        try:
            self._submit(bytes(self._buf), last=True)
        except BaseException:
            self.abort()
            raise
        self._buf.clear()
        self._state = "finishing"
        return _finisher().submit(self._complete)

    def _complete(self) -> Blob:
        try:
            while self._pending:
                self._emit(self._pending.popleft().result())
            if self.compression is Compression.GZIP:
                self._emit(struct.pack("<II", self._crc & 0xFFFFFFFF, self._usize & 0xFFFFFFFF))
            self._out.flush()
            os.fsync(self._out.fileno())
            self._out.close()
            digest = self._csha.hexdigest()
            self._tmp.replace(self._blobs_dir / digest)
        except BaseException:
            self._discard()
            raise
        self._state = "done"
        return Blob(
            digest="sha256:" + digest,
            size=self._csize,
            media_type=self.compression.media_type,
            diff_id="sha256:" + self._usha.hexdigest(),
            uncompressed_size=self._usize,
        )

    def abort(self) -> None:
        """Drop the layer: nothing of it stays on disk. No-op once finishing or done."""
        if self._state == "open":
            self._discard()

    def _discard(self) -> None:
        self._state = "aborted"
        for f in self._pending:
            f.cancel()
        self._pending.clear()
        # Closing flushes the buffer, which fails when the disk is full; the file goes anyway.
        with contextlib.suppress(OSError):
            self._out.close()
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> LayerWriter:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if t is not None:
            self.abort()


def write_blob(blobs_dir: Path, data: bytes, media_type: str) -> Blob:
    """Write a small blob (config, manifest) by content address, atomically."""
    digest = hashlib.sha256(data).hexdigest()
    final = blobs_dir / digest
    if not final.exists():
        blobs_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(final, data)
    return Blob("sha256:" + digest, len(data), media_type)
