"""Helpers for tests that look inside images: run the CLI in-process, read layouts and layers."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ocitree.cli.main import main
from ocitree.container.store import PulledImage, pull
from ocitree.oci.layout import Image, OciLayout
from ocitree.oci.source import LayoutSource
from ocitree.ostree.repo import Reader, Repo
from ocitree.run import run


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


def ocitree(capsys: pytest.CaptureFixture[str], *args: str) -> Result:
    """Run the ``ocitree`` command line in this process and capture what it prints."""
    capsys.readouterr()
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return Result(code, captured.out, captured.err)


def manifest(layout: Path, tag: str | None = None) -> dict[str, Any]:
    index = json.loads((layout / "index.json").read_bytes())
    entries = index["manifests"]
    if tag is not None:
        entries = [
            m
            for m in entries
            if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag
        ]
    assert len(entries) == 1
    return dict(json.loads(blob(layout, entries[0]["digest"])))


def config(layout: Path, tag: str | None = None) -> dict[str, Any]:
    return dict(json.loads(blob(layout, manifest(layout, tag)["config"]["digest"])))


def blob(layout: Path, digest: str) -> bytes:
    data = (layout / "blobs" / "sha256" / digest.removeprefix("sha256:")).read_bytes()
    assert hashlib.sha256(data).hexdigest() == digest.removeprefix("sha256:")
    return data


def layer_members(layout: Path, digest: str) -> list[tarfile.TarInfo]:
    data = gzip.decompress(blob(layout, digest))
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tf:
        return tf.getmembers()


def content_objects(members: list[tarfile.TarInfo]) -> list[str]:
    """Checksums of the ``.file`` objects in a layer."""
    out = []
    for m in members:
        if m.name.startswith("sysroot/ostree/repo/objects/") and m.name.endswith(".file"):
            part = m.name.removeprefix("sysroot/ostree/repo/objects/").removesuffix(".file")
            out.append(part.replace("/", ""))
    return out


class FixedSource:
    """An ImageSource over a layout that serves a given (possibly altered) Image."""

    def __init__(self, layout: OciLayout, image: Image) -> None:
        self._source = LayoutSource(layout, None)
        self._image = image

    def image(self) -> Image:
        return self._image

    def open_blob(self, digest: str, size: int) -> contextlib.AbstractContextManager[Reader]:
        return self._source.open_blob(digest, size)


def pull_layout(layout_dir: Path, tag: str, repo: Repo, imgref: str = "test") -> PulledImage:
    """Import an image from an OCI layout into ``repo`` with the device-side store."""
    return pull(repo, LayoutSource(OciLayout(layout_dir), tag), imgref)


def buildah_build(workdir: Path, ctx: Path, dest: str, *, driver: str = "vfs") -> None:
    """``buildah build`` of ``ctx/Containerfile`` as ``localhost/derived:1`` (storage in
    ``workdir/storage`` and ``workdir/run``), then ``buildah push`` to ``dest``."""
    storage = [
        f"--root={workdir / 'storage'}",
        f"--runroot={workdir / 'run'}",
        f"--storage-driver={driver}",
    ]
    run(
        [
            "buildah",
            *storage,
            "build",
            "--isolation=chroot",
            "-t",
            "localhost/derived:1",
            "-f",
            ctx / "Containerfile",
            ctx,
        ]
    )
    run(["buildah", *storage, "push", "localhost/derived:1", dest])
