"""Files written the safe way: under a temporary name, made readable, renamed when whole."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO


def create_temp(directory: Path, prefix: str) -> tuple[BinaryIO, Path]:
    """A new temporary file in ``directory`` with mode 0644 (blobs are public data)."""
    fd, name = tempfile.mkstemp(prefix=prefix, dir=directory)
    os.fchmod(fd, 0o644)
    return os.fdopen(fd, "wb"), Path(name)


def atomic_write(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` in one rename, after an fsync; the data is never
    readable with a wider ``mode`` (0600 for secrets)."""
    f, tmp = create_temp(path.parent, f".tmp-{path.name}-")
    try:
        with f:
            os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
