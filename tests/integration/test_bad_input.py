"""Bad input gives one clear line, a non-zero exit, and nothing half-written."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from integration.conftest import Committed
from ocitree.errors import CommandError
from ocitree.run import run
from support.images import ocitree

pytestmark = pytest.mark.integration


def _one_line_error(err: str, *words: str) -> None:
    lines = err.strip().splitlines()
    assert lines and lines[-1].startswith("ocitree: error:"), err
    assert "Traceback" not in err
    for w in words:
        assert w in lines[-1], lines[-1]


def test_unknown_ref(tmp_path: Path, capsys: pytest.CaptureFixture[str], sample: Committed) -> None:
    r = ocitree(
        capsys, "encapsulate", "--repo", sample.repo, "no/such/ref", f"oci:{tmp_path / 'o'}"
    )
    assert r.code == 1
    _one_line_error(r.err, "not found", sample.ref)
    assert not (tmp_path / "o").exists()


def test_missing_repo(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    r = ocitree(capsys, "encapsulate", "--repo", tmp_path / "nope", "x", f"oci:{tmp_path / 'o'}")
    assert r.code == 1
    _one_line_error(r.err, "not an ostree repository")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("dest", ["ftp://host/x", "quay.io/os:1", "docker://Bad/Name"])
def test_bad_transport(dest: str, capsys: pytest.CaptureFixture[str], sample: Committed) -> None:
    r = ocitree(capsys, "encapsulate", "--repo", sample.repo, sample.ref, dest)
    assert r.code == 1
    _one_line_error(r.err)


def test_unwritable_destination(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], sample: Committed
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    r = ocitree(capsys, "encapsulate", "--repo", sample.repo, sample.ref, f"oci:{blocker}/img")
    assert r.code == 1
    _one_line_error(r.err, "cannot write")
    r = ocitree(
        capsys,
        "encapsulate",
        "--repo",
        sample.repo,
        sample.ref,
        f"oci-archive:{tmp_path}/missing/dir/x.tar",
    )
    assert r.code == 1
    _one_line_error(r.err, "does not exist")


def test_existing_non_image_directory_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], sample: Committed
) -> None:
    (tmp_path / "mine.txt").write_text("keep me")
    r = ocitree(capsys, "encapsulate", "--repo", sample.repo, sample.ref, f"oci:{tmp_path}")
    assert r.code == 1
    _one_line_error(r.err, "not an OCI image layout")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt"]


@contextlib.contextmanager
def _small_tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir()
    try:
        run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path])
    except CommandError as e:
        pytest.skip(f"cannot mount a tmpfs here: {e}")
    try:
        yield path
    finally:
        run(["umount", path])


@pytest.mark.skipif(shutil.which("mount") is None, reason="mount not installed")
@pytest.mark.parametrize("transport", ["oci", "oci-archive"])
def test_disk_full_leaves_no_partial_image(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], sample: Committed, transport: str
) -> None:
    with _small_tmpfs(tmp_path / "small", "1m") as small:
        dest = f"oci:{small / 'img'}:v1" if transport == "oci" else f"oci-archive:{small / 'x.tar'}"
        r = ocitree(capsys, "encapsulate", "--repo", sample.repo, sample.ref, dest)
        assert r.code == 1
        _one_line_error(r.err, "No space left on device")
        assert list(small.iterdir()) == []


def test_disk_full_in_existing_layout_keeps_the_old_image(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], sample: Committed
) -> None:
    with _small_tmpfs(tmp_path / "small", "8m") as small:
        r = ocitree(
            capsys,
            "encapsulate",
            "--repo",
            sample.repo,
            sample.ref,
            f"oci:{small}/img:v1",
            "--compression-level",
            "9",
        )
        if r.code != 0:
            pytest.skip("the sample image does not fit in the test tmpfs")
        before = sorted(p.name for p in (small / "img/blobs/sha256").iterdir())
        index = (small / "img/index.json").read_bytes()
        filler = small / "filler"
        with filler.open("wb") as f, contextlib.suppress(OSError):
            f.write(b"\0" * (8 << 20))
        r = ocitree(
            capsys,
            "encapsulate",
            "--repo",
            sample.repo,
            sample.ref,
            f"oci:{small}/img:v2",
            "--compression-level",
            "1",
        )
        assert r.code == 1
        _one_line_error(r.err, "No space left on device")
        assert sorted(p.name for p in (small / "img/blobs/sha256").iterdir()) == before
        assert (small / "img/index.json").read_bytes() == index


def test_label_cannot_replace_ostree_labels(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], sample: Committed
) -> None:
    r = ocitree(
        capsys,
        "encapsulate",
        "--repo",
        sample.repo,
        sample.ref,
        f"oci:{tmp_path / 'o'}",
        "--label",
        "ostree.commit=0000",
    )
    assert r.code == 1
    _one_line_error(r.err, "ostree.commit")
    assert not (tmp_path / "o").exists()
