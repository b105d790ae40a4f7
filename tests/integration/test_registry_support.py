"""The test registry is real: skopeo pushes and pulls through it, and it stops by PID."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import tarfile
from pathlib import Path

import pytest

from ocitree.errors import CommandError
from ocitree.run import run
from support.registry import Registry, start_registry

pytestmark = pytest.mark.skipif(
    shutil.which("skopeo") is None or shutil.which("docker-registry") is None,
    reason="skopeo or docker-registry not installed",
)


def _blob(layout: Path, data: bytes) -> dict[str, object]:
    digest = hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256" / digest).write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def tiny_image(layout: Path, tag: str = "t") -> int:
    """Write an OCI layout with one single-file layer; return the bytes of its blobs."""
    (layout / "blobs" / "sha256").mkdir(parents=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        content = b"hello from ocitree\n"
        info = tarfile.TarInfo("hello.txt")
        info.size = len(content)
        tar.addfile(info, io.BytesIO(content))
    layer = _blob(layout, gzip.compress(raw.getvalue(), mtime=0))
    diffid = "sha256:" + hashlib.sha256(raw.getvalue()).hexdigest()
    config = {
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [diffid]},
        "config": {},
    }
    config_desc = _blob(layout, json.dumps(config).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config_desc},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **layer}],
    }
    manifest_desc = _blob(layout, json.dumps(manifest).encode())
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                **manifest_desc,
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }
        ],
    }
    (layout / "index.json").write_text(json.dumps(index))
    sizes = [layer["size"], config_desc["size"]]
    return sum(s for s in sizes if isinstance(s, int))


def push(reg: Registry, layout: Path, dest: str) -> None:
    argv: list[str | os.PathLike[str]] = ["skopeo", "copy"]
    if reg.authfile is not None:
        argv += ["--dest-authfile", reg.authfile]
    argv += ["--dest-cert-dir", reg.cert_dir] if reg.cert_dir else ["--dest-tls-verify=false"]
    run([*argv, f"oci:{layout}:t", reg.ref(dest)])


def test_push_and_inspect_with_its_credentials_and_ca(
    secure_registry: Registry, tmp_path: Path
) -> None:
    reg = secure_registry
    assert reg.authfile is not None and reg.cert_dir is not None
    tiny_image(tmp_path / "img")
    push(reg, tmp_path / "img", "test:1")
    out = run(
        [
            "skopeo",
            "inspect",
            "--authfile",
            reg.authfile,
            "--cert-dir",
            reg.cert_dir,
            reg.ref("test:1"),
        ]
    )
    assert json.loads(out.stdout)["RepoTags"] == ["1"]


def test_wrong_password_is_refused(secure_registry: Registry, tmp_path: Path) -> None:
    reg = secure_registry
    assert reg.cert_dir is not None
    tiny_image(tmp_path / "img")
    push(reg, tmp_path / "img", "test:1")
    creds = f"--creds={reg.username}:wrong"
    argv = ["skopeo", "inspect", creds, f"--cert-dir={reg.cert_dir}", reg.ref("test:1")]
    with pytest.raises(CommandError) as err:
        run(argv)
    assert "unauthorized: authentication required" in err.value.stderr


def test_unknown_certificate_authority_is_refused(secure_registry: Registry) -> None:
    reg = secure_registry
    assert reg.authfile is not None
    with pytest.raises(CommandError) as err:
        run(["skopeo", "inspect", "--authfile", reg.authfile, reg.ref("test:1")])
    assert "x509: certificate signed by unknown authority" in err.value.stderr


def test_access_log_counts_the_blob_bytes_a_pull_fetches(
    registry: Registry, tmp_path: Path
) -> None:
    blob_bytes = tiny_image(tmp_path / "img")
    push(registry, tmp_path / "img", "test:1")
    mark = registry.log_position()
    run(
        [
            "skopeo",
            "copy",
            "--src-tls-verify=false",
            registry.ref("test:1"),
            f"dir:{tmp_path / 'd'}",
        ]
    )
    assert registry.bytes_sent(mark, blobs_only=True) == blob_bytes
    assert registry.bytes_sent(mark) > blob_bytes  # the manifest too


def test_registry_process_is_gone_after_the_context(tmp_path: Path) -> None:
    with start_registry(tmp_path / "ok") as reg:
        os.kill(reg.pid, 0)
    with pytest.raises(ProcessLookupError):
        os.kill(reg.pid, 0)

    with pytest.raises(RuntimeError, match="boom"), start_registry(tmp_path / "err") as reg:
        pid = reg.pid
        raise RuntimeError("boom")
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
