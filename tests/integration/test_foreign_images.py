"""Images that are not ostree-based at all: refused, unless they carry a kernel."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from ocitree.container.store import pull
from ocitree.errors import UserError
from ocitree.oci.layer import write_blob
from ocitree.oci.layout import CONFIG_TYPE, MANIFEST_TYPE, OciLayout, descriptor
from ocitree.oci.source import LayoutSource
from ocitree.ostree.repo import Repo, RepoMode
from ocitree.run import run

pytestmark = pytest.mark.integration
_TAR = "application/vnd.oci.image.layer.v1.tar"


def _plain_image(path: Path, files: dict[str, bytes]) -> OciLayout:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:", format=tarfile.PAX_FORMAT) as tf:
        for d in sorted({str(Path(n).parent) for n in files} - {"."}):
            for i in range(1, d.count("/") + 2):
                parent = "/".join(d.split("/")[:i])
                if parent not in tf.getnames():
                    t = tarfile.TarInfo(parent)
                    t.type, t.mode = tarfile.DIRTYPE, 0o755
                    tf.addfile(t)
        for name, data in files.items():
            t = tarfile.TarInfo(name)
            t.size = len(data)
            tf.addfile(t, io.BytesIO(data))
    layout = OciLayout.create(path)
    layer = write_blob(layout.blobs, buf.getvalue(), _TAR)
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "2024-01-01T00:00:00Z",
        "rootfs": {"type": "layers", "diff_ids": [layer.digest]},
        "config": {},
    }
    cfg = layout.write_json_blob(config, CONFIG_TYPE)
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": descriptor(cfg),
        "layers": [descriptor(layer)],
    }
    layout.add_manifest(
        layout.write_json_blob(manifest, MANIFEST_TYPE),
        "v1",
        {"architecture": "amd64", "os": "linux"},
    )
    return layout


def test_plain_image_without_kernel_is_refused(tmp_path: Path) -> None:
    layout = _plain_image(tmp_path / "img", {"usr/bin/app": b"app", "etc/app.conf": b"x"})
    repo = Repo.create(tmp_path / "repo", RepoMode.BARE)
    with pytest.raises(UserError, match="not an ostree container image and carries no kernel"):
        pull(repo, LayoutSource(layout, "v1"), "plain")
    assert not [r for r in repo.refs() if r.startswith("ostree/container/image/")]


def test_plain_image_with_kernel_is_committed_whole(tmp_path: Path) -> None:
    layout = _plain_image(
        tmp_path / "img",
        {
            "usr/lib/modules/6.1.0/vmlinuz": b"kernel",
            "usr/lib/modules/6.1.0/initramfs.img": b"initramfs",
            "usr/lib/os-release": b"ID=plain\n",
            "etc/app.conf": b"conf\n",
        },
    )
    repo = Repo.create(tmp_path / "repo", RepoMode.BARE)
    pulled = pull(repo, LayoutSource(layout, "v1"), "plain")
    assert pulled.base_commit is None
    out = run(["ostree", f"--repo={tmp_path / 'repo'}", "ls", "-R", pulled.commit]).stdout.decode()
    assert "/usr/lib/modules/6.1.0/vmlinuz" in out and "/usr/etc/app.conf" in out
    assert "/etc/app.conf" not in out.replace("/usr/etc/app.conf", "")
    manifest = json.loads(repo.commit(pulled.commit).metadata["ostree.manifest"])
    assert manifest["layers"][0]["mediaType"] == _TAR
