"""The tar writer's output is read back by Python's tarfile exactly as intended."""

from __future__ import annotations

import io
import tarfile

from ocitree.container.tarwriter import TarWriter


def _roundtrip(build: object) -> tuple[dict[str, tarfile.TarInfo], dict[str, bytes]]:
    buf = io.BytesIO()
    tar = TarWriter(buf)
    build(tar)  # type: ignore[operator]
    tar.finish()
    buf.seek(0)
    with tarfile.open(fileobj=buf, mode="r:") as tf:
        members = {m.name: m for m in tf.getmembers()}
        data = {}
        for m in members.values():
            f = tf.extractfile(m) if m.isreg() else None
            if f is not None:
                data[m.name] = f.read()
    return members, data


def test_long_names_links_and_xattrs_survive() -> None:
    long_name = "sysroot/ostree/repo/objects/ab/" + "c" * 62 + ".file-xattrs-link"
    long_target = "d/" * 80 + "target"

    def build(tar: TarWriter) -> None:
        tar.add_dir("usr", 0o755)
        tar.add_data(long_name, b"xattrs", mode=0o600, uid=12, gid=34)
        tar.add_file(
            "usr/f",
            5,
            io.BytesIO(b"hello"),
            0o4755,
            0,
            0,
            xattrs=((b"user.a", b"\x00\xffbin"), (b"security.capability", b"cap")),
        )
        tar.add_symlink("usr/l", long_target)
        tar.add_hardlink("usr/h", "usr/f", 0o755, 0, 0)

    members, data = _roundtrip(build)
    assert members["usr"].isdir()
    assert data[long_name] == b"xattrs"
    assert (members[long_name].uid, members[long_name].gid, members[long_name].mode) == (
        12,
        34,
        0o600,
    )
    f = members["usr/f"]
    assert f.mode == 0o4755 and data["usr/f"] == b"hello"
    assert f.pax_headers["SCHILY.xattr.user.a"].encode("utf-8", "surrogateescape") == b"\x00\xffbin"
    assert members["usr/l"].issym() and members["usr/l"].linkname == long_target
    assert members["usr/h"].islnk() and members["usr/h"].linkname == "usr/f"
    assert all(m.mtime == 0 for m in members.values())


def test_short_file_is_an_error() -> None:
    tar = TarWriter(io.BytesIO())
    try:
        tar.add_file("f", 10, io.BytesIO(b"abc"), 0o644, 0, 0)
    except OSError as e:
        assert "early" in str(e)
    else:
        raise AssertionError("a short file must not be written")


def test_same_input_same_bytes() -> None:
    outs = []
    for _ in range(2):
        buf = io.BytesIO()
        tar = TarWriter(buf)
        tar.add_data("a", b"x" * 1000)
        tar.add_dir("b")
        tar.finish()
        outs.append(buf.getvalue())
    assert outs[0] == outs[1]
    assert len(outs[0]) % 512 == 0
