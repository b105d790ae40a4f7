"""Layer blobs: valid gzip/zstd, correct digests, identical bytes whatever the threading."""

from __future__ import annotations

import gzip
import hashlib
import random
from pathlib import Path

import pytest

from ocitree.errors import UserError
from ocitree.oci import layer
from ocitree.oci.layer import Compression, LayerWriter


def _data(n: int, seed: int = 1) -> bytes:
    rng = random.Random(seed)
    text = b"".join(b"line %d of some compressible text\n" % i for i in range(n // 64))
    return (text + rng.randbytes(n // 2))[:n]


def _write(tmp: Path, data: bytes, comp: Compression, pieces: int = 7) -> layer.Blob:
    w = LayerWriter(tmp, comp, comp.default_level)
    step = max(1, len(data) // pieces)
    for i in range(0, len(data), step):
        w.write(data[i : i + step])
    return w.finish()


@pytest.mark.parametrize("size", [0, 1, layer.BLOCK_SIZE, 3 * layer.BLOCK_SIZE + 17])
def test_gzip_layer_decompresses_and_digests_match(tmp_path: Path, size: int) -> None:
    data = _data(size)
    blob = _write(tmp_path, data, Compression.GZIP)
    raw = (tmp_path / blob.digest.removeprefix("sha256:")).read_bytes()
    assert gzip.decompress(raw) == data
    assert blob.digest == "sha256:" + hashlib.sha256(raw).hexdigest()
    assert blob.diff_id == "sha256:" + hashlib.sha256(data).hexdigest()
    assert blob.size == len(raw) and blob.uncompressed_size == len(data)
    assert not list(tmp_path.glob(".tmp-*"))


def test_zstd_layer_decompresses(tmp_path: Path) -> None:
    import zstandard

    data = _data(2 * layer.BLOCK_SIZE + 5)
    blob = _write(tmp_path, data, Compression.ZSTD)
    raw = (tmp_path / blob.digest.removeprefix("sha256:")).read_bytes()
    out = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True).read()
    assert out == data


def test_output_does_not_depend_on_write_sizes(tmp_path: Path) -> None:
    data = _data(2 * layer.BLOCK_SIZE + 1000)
    a = _write(tmp_path / "a", data, Compression.GZIP, pieces=3)
    b = _write(tmp_path / "b", data, Compression.GZIP, pieces=101)
    assert a.digest == b.digest


def test_aborted_layer_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), LayerWriter(tmp_path, Compression.GZIP, 6) as w:
        w.write(_data(layer.BLOCK_SIZE * 2))
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_bad_level_is_a_user_error() -> None:
    with pytest.raises(UserError, match="out of range"):
        Compression.GZIP.check_level(12)
