"""A small, deterministic tar writer: GNU headers, GNU long names, PAX xattr records.

Written for speed and byte-for-byte reproducibility rather than generality: every entry
has mtime 0, no user/group names, and the same input always gives the same bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol


class Writable(Protocol):
    def write(self, data: bytes, /) -> object: ...


class Readable(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


BLOCK = 512
REGTYPE = b"0"
LNKTYPE = b"1"
SYMTYPE = b"2"
DIRTYPE = b"5"
GNU_LONGNAME = b"L"
GNU_LONGLINK = b"K"
PAX_HEADER = b"x"

_GNU_MAGIC = b"ustar  \0"
_ZEROS = bytes(BLOCK)


def _octal(value: int, width: int) -> bytes:
    """An octal field of ``width`` bytes, NUL-terminated; base-256 when it does not fit."""
    digits = width - 1
    if value < 8**digits:
        return b"%0*o\0" % (digits, value)
    # GNU base-256: high bit set in the first byte, big-endian value in the rest.
    return bytes([0x80]) + value.to_bytes(width - 1, "big")


def _header(
    name: bytes, mode: int, uid: int, gid: int, size: int, typeflag: bytes, linkname: bytes
) -> bytes:
    fields = b"".join(
        (
            name.ljust(100, b"\0"),
            _octal(mode, 8),
            _octal(uid, 8),
            _octal(gid, 8),
            _octal(size, 12),
            _octal(0, 12),  # mtime
            b" " * 8,  # checksum placeholder
            typeflag,
            linkname.ljust(100, b"\0"),
            _GNU_MAGIC,
        )
    ).ljust(BLOCK, b"\0")
    checksum = b"%06o\0 " % sum(fields)
    return fields[:148] + checksum + fields[156:]


def _pad(size: int) -> bytes:
    return _ZEROS[: (-size) % BLOCK]


def _pax_record(key: bytes, value: bytes) -> bytes:
    body = b" " + key + b"=" + value + b"\n"
    n = len(body) + 1
    while len(str(n).encode()) + len(body) != n:
        n += 1
    return str(n).encode() + body


class TarWriter:
    """Writes tar entries to ``out`` (anything with ``write(bytes)``)."""

    def __init__(self, out: Writable) -> None:
        self._write: Callable[[bytes], object] = out.write

    def _entry_header(
        self,
        name: str,
        mode: int,
        uid: int,
        gid: int,
        size: int,
        typeflag: bytes,
        linkname: str = "",
        xattrs: tuple[tuple[bytes, bytes], ...] = (),
    ) -> None:
        bname = name.encode("utf-8", "surrogateescape")
        blink = linkname.encode("utf-8", "surrogateescape")
        parts: list[bytes] = []
        if xattrs:
            records = b"".join(_pax_record(b"SCHILY.xattr." + k, v) for k, v in xattrs)
            parts += [
                _header(b"././@PaxHeader", 0o644, 0, 0, len(records), PAX_HEADER, b""),
                records,
                _pad(len(records)),
            ]
        if len(blink) > 100:
            data = blink + b"\0"
            parts += [
                _header(b"././@LongLink", 0o644, 0, 0, len(data), GNU_LONGLINK, b""),
                data,
                _pad(len(data)),
            ]
            blink = blink[:100]
        if len(bname) > 100:
            data = bname + b"\0"
            parts += [
                _header(b"././@LongLink", 0o644, 0, 0, len(data), GNU_LONGNAME, b""),
                data,
                _pad(len(data)),
            ]
            bname = bname[:100]
        parts.append(_header(bname, mode & 0o7777, uid, gid, size, typeflag, blink))
        self._write(b"".join(parts))

    def add_dir(
        self,
        name: str,
        mode: int = 0o755,
        uid: int = 0,
        gid: int = 0,
        xattrs: tuple[tuple[bytes, bytes], ...] = (),
    ) -> None:
        self._entry_header(name, mode, uid, gid, 0, DIRTYPE, xattrs=xattrs)

    def add_data(
        self, name: str, data: bytes, mode: int = 0o644, uid: int = 0, gid: int = 0
    ) -> None:
        self._entry_header(name, mode, uid, gid, len(data), REGTYPE)
        self._write(data + _pad(len(data)))

    def add_file(
        self,
        name: str,
        size: int,
        reader: Readable,
        mode: int,
        uid: int,
        gid: int,
        xattrs: tuple[tuple[bytes, bytes], ...] = (),
    ) -> None:
        """A regular file of ``size`` bytes read from ``reader``; fails if it is short."""
        self._entry_header(name, mode, uid, gid, size, REGTYPE, xattrs=xattrs)
        remaining = size
        while remaining:
            chunk = reader.read(min(remaining, 1 << 20))
            if not chunk:
                raise OSError(f"{name}: file ended {remaining} bytes early")
            if len(chunk) > remaining:
                raise OSError(f"{name}: file is longer than its recorded size")
            self._write(chunk)
            remaining -= len(chunk)
        self._write(_pad(size))

    def add_symlink(
        self,
        name: str,
        target: str,
        uid: int = 0,
        gid: int = 0,
        mode: int = 0o777,
        xattrs: tuple[tuple[bytes, bytes], ...] = (),
    ) -> None:
        self._entry_header(name, mode, uid, gid, 0, SYMTYPE, target, xattrs)

    def add_hardlink(self, name: str, target: str, mode: int, uid: int, gid: int) -> None:
        self._entry_header(name, mode, uid, gid, 0, LNKTYPE, target)

    def add_raw(self, entries: bytes) -> None:
        """Entries written earlier by another TarWriter (without its end marker)."""
        self._write(entries)

    def finish(self) -> None:
        self._write(_ZEROS * 2)
