"""The importer reads what other writers produce: older xattrs layouts, uncompressed layers."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from integration.conftest import Committed
from ocitree.container.store import layer_ref, pull
from ocitree.errors import ImageFormatError
from ocitree.oci.layer import write_blob
from ocitree.oci.layout import OciLayout
from ocitree.ostree.repo import Repo, RepoMode
from ocitree.run import run
from support.images import FixedSource, ocitree

pytestmark = pytest.mark.integration

_OBJ = "sysroot/ostree/repo/objects/"
_TAR = "application/vnd.oci.image.layer.v1.tar"


def _rewrite_layer(data: bytes, style: str) -> bytes:
    """Re-tar a layer with its xattrs links in an older form (uncompressed output)."""
    out = io.BytesIO()
    with (
        tarfile.open(fileobj=io.BytesIO(data), mode="r:") as src,
        tarfile.open(fileobj=out, mode="w:", format=tarfile.PAX_FORMAT) as dst,
    ):
        written: set[str] = set()
        for m in src:
            f = src.extractfile(m) if m.isreg() else None
            body = f.read() if f is not None else None
            if m.name.endswith(".file-xattrs-link") and body is not None:
                sha = hashlib.sha256(body).hexdigest()
                if style == "v1-hardlink":
                    target = f"{_OBJ}{sha[:2]}/{sha[2:]}.file-xattrs"
                    name = m.name
                else:  # v0: repo/xattrs/<sha> and "<file>.xattrs" links
                    target = f"sysroot/ostree/repo/xattrs/{sha}"
                    name = m.name.removesuffix("-xattrs-link").removesuffix(".file") + ".xattrs"
                if target not in written:
                    written.add(target)
                    t = tarfile.TarInfo(target)
                    t.size = len(body)
                    dst.addfile(t, io.BytesIO(body))
                link = tarfile.TarInfo(name)
                link.type = tarfile.LNKTYPE
                link.linkname = target
                dst.addfile(link)
                continue
            dst.addfile(m, io.BytesIO(body) if body is not None else None)
    return out.getvalue()


@pytest.mark.parametrize("style", ["v1-hardlink", "v0"])
def test_older_xattrs_layouts_import_to_the_same_commit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], sample: Committed, style: str
) -> None:
    r = ocitree(capsys, "encapsulate", "--repo", sample.repo, sample.ref, f"oci:{tmp_path}:v1")
    assert r.code == 0, r.err
    layout = OciLayout(tmp_path)
    image = layout.read_image("v1")
    layers, diff_ids = [], []
    for layer in image.manifest["layers"]:
        raw = _rewrite_layer(gzip.decompress(layout.read_blob(layer["digest"])), style)
        blob = write_blob(layout.blobs, raw, _TAR)
        layers.append({"mediaType": _TAR, "digest": blob.digest, "size": blob.size})
        diff_ids.append(blob.digest)
    config = json.loads(json.dumps(image.config))
    config["rootfs"]["diff_ids"] = diff_ids
    config["config"]["Labels"]["ostree.final-diffid"] = diff_ids[-1]
    manifest = dict(image.manifest, layers=layers)
    old = dataclasses.replace(image, manifest=manifest, config=config)
    repo = Repo.create(tmp_path / "repo", RepoMode.BARE)
    assert pull(repo, FixedSource(layout, old), "x").base_commit == sample.commit
    run(["ostree", "fsck", f"--repo={tmp_path / 'repo'}"])


def test_corrupt_blob_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], sample: Committed
) -> None:
    r = ocitree(capsys, "encapsulate", "--repo", sample.repo, sample.ref, f"oci:{tmp_path}:v1")
    assert r.code == 0, r.err
    layout = OciLayout(tmp_path)
    image = layout.read_image("v1")
    victim = layout.blob_path(image.manifest["layers"][1]["digest"])
    data = bytearray(victim.read_bytes())
    data[-12] ^= 0xFF  # inside the gzip trailer's CRC: the tar still parses
    victim.write_bytes(bytes(data))
    repo = Repo.create(tmp_path / "repo", RepoMode.BARE)
    with pytest.raises(ImageFormatError):
        pull(repo, FixedSource(layout, image), "x")
    # The layer was not kept: no ref names it, and no image ref exists.
    bad = image.manifest["layers"][1]["digest"]
    assert layer_ref(bad) not in repo.refs()
    assert not [r for r in repo.refs() if r.startswith("ostree/container/image/")]
