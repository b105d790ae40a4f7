"""Hand-made hostile layers are refused whole: nothing is kept, nothing outside is touched."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from integration.conftest import Committed
from ocitree.container.store import layer_ref, pull
from ocitree.errors import ImageFormatError
from ocitree.oci.layer import write_blob
from ocitree.oci.layout import OciLayout
from ocitree.ostree.repo import Repo, RepoMode
from support.images import FixedSource

pytestmark = pytest.mark.integration

_TAR = "application/vnd.oci.image.layer.v1.tar"
Builder = Callable[[tarfile.TarFile], None]


def _file(tf: tarfile.TarFile, name: str, data: bytes = b"x") -> None:
    t = tarfile.TarInfo(name)
    t.size = len(data)
    tf.addfile(t, io.BytesIO(data))


def _entry(tf: tarfile.TarFile, name: str, kind: bytes, linkname: str = "") -> None:
    t = tarfile.TarInfo(name)
    t.type = kind
    t.linkname = linkname
    tf.addfile(t)


CASES: dict[str, Builder] = {
    "dotdot": lambda tf: _file(tf, "usr/../../outside"),
    "absolute": lambda tf: _file(tf, "/etc/passwd"),
    "symlink-then-through": lambda tf: (
        _entry(tf, "usr/lib/evil", tarfile.SYMTYPE, "/tmp"),
        _file(tf, "usr/lib/evil/planted"),
    ),
    "hardlink-outside": lambda tf: _entry(tf, "usr/bin/x", tarfile.LNKTYPE, "../../etc/shadow"),
    "hardlink-to-base-file": lambda tf: _entry(
        tf, "usr/bin/y", tarfile.LNKTYPE, "usr/lib/os-release"
    ),
    "device-node": lambda tf: _entry(tf, "usr/lib/null", tarfile.CHRTYPE),
    "fifo": lambda tf: _entry(tf, "usr/lib/pipe", tarfile.FIFOTYPE),
    "huge-name": lambda tf: _file(tf, "usr/" + "a/" * 40000 + "f"),
}


def _hostile_image(layout: OciLayout, build: Builder) -> tuple[FixedSource, str]:
    image = layout.read_image("v1")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:", format=tarfile.PAX_FORMAT) as tf:
        build(tf)
    blob = write_blob(layout.blobs, buf.getvalue(), _TAR)
    config = json.loads(json.dumps(image.config))
    config["rootfs"]["diff_ids"].append(blob.digest)
    manifest = dict(image.manifest)
    manifest["layers"] = [
        *manifest["layers"],
        {"mediaType": _TAR, "digest": blob.digest, "size": blob.size},
    ]
    raw = json.dumps(manifest).encode()
    hostile = dataclasses.replace(
        image,
        manifest=manifest,
        manifest_raw=raw,
        config=config,
        config_raw=json.dumps(config).encode(),
        manifest_digest="sha256:" + hashlib.sha256(raw).hexdigest(),
    )
    return FixedSource(layout, hostile), blob.digest


@pytest.fixture(scope="module")
def base_image(tmp_path_factory: pytest.TempPathFactory, sample: Committed) -> OciLayout:
    out = tmp_path_factory.mktemp("hostile") / "img"
    from ocitree.cli.main import main

    assert main(["-q", "encapsulate", "--repo", str(sample.repo), sample.ref, f"oci:{out}:v1"]) == 0
    return OciLayout(out)


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_layer_is_refused(tmp_path: Path, base_image: OciLayout, case: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    repo = Repo.create(tmp_path / "repo", RepoMode.BARE)
    source, bad = _hostile_image(base_image, CASES[case])
    with pytest.raises(ImageFormatError):
        pull(repo, source, "hostile")
    assert layer_ref(bad) not in repo.refs()
    assert not [r for r in repo.refs() if r.startswith("ostree/container/image/")]
    assert list(outside.iterdir()) == []
    # The good layers before it were kept: a retry of a fixed image fetches only new ones.
    assert any(r.startswith("ostree/container/blob/") for r in repo.refs())
