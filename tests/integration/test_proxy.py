"""Streaming images through the real ``skopeo experimental-image-proxy``: from a TLS registry
with authentication and from ``oci:`` layouts, errors as one line with a hint, and skopeo
never outliving the proxy."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import platform
import shutil
import signal
from pathlib import Path

import pytest

from integration.conftest import Committed
from ocitree.cli.main import main
from ocitree.errors import ImageFormatError, UserError
from ocitree.oci.layout import INDEX_TYPE, MANIFEST_TYPE, Image, OciLayout, canonical_json
from ocitree.oci.proxy import ImageProxy, ProxySource
from ocitree.oci.reference import ImageReference
from ocitree.oci.skopeo import RegistryOptions
from ocitree.oci.source import ImageSource
from support.images import ocitree
from support.registry import Registry, free_port

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo not installed"),
]

TAG = "v1"


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory, sample: Committed) -> Path:
    """``sample`` encapsulated into an OCI layout, tagged ``v1`` (read-only for tests)."""
    path = tmp_path_factory.mktemp("proxy") / "img"
    code = main(["encapsulate", "--repo", str(sample.repo), sample.ref, f"oci:{path}:{TAG}"])
    assert code == 0
    return path


def _push(capsys: pytest.CaptureFixture[str], layout: Path, reg: Registry, name: str) -> None:
    r = ocitree(
        capsys,
        "push",
        f"oci:{layout}:{TAG}",
        reg.ref(name),
        "--authfile",
        str(reg.authfile),
        "--cert-dir",
        str(reg.cert_dir),
    )
    assert r.code == 0, r.err


def _opts(reg: Registry) -> RegistryOptions:
    return RegistryOptions(authfile=reg.authfile, cert_dir=reg.cert_dir)


def _sha256(source: ImageSource, digest: str, size: int) -> tuple[str, int]:
    h = hashlib.sha256()
    n = 0
    with source.open_blob(digest, size) as f:
        while chunk := f.read(1 << 16):
            h.update(chunk)
            n += len(chunk)
    return "sha256:" + h.hexdigest(), n


def _check_image(source: ProxySource, local: Image, commit: str) -> None:
    img = source.image()
    assert img.manifest_digest == local.manifest_digest
    assert img.manifest_raw == local.manifest_raw
    assert img.config_raw == local.config_raw
    assert img.config["config"]["Labels"]["ostree.commit"] == commit
    layers = img.manifest["layers"]
    assert layers
    for layer in layers:
        assert _sha256(source, layer["digest"], layer["size"]) == (layer["digest"], layer["size"])


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_streams_an_image_from_a_secure_registry(
    capsys: pytest.CaptureFixture[str],
    sample: Committed,
    layout: Path,
    secure_registry: Registry,
) -> None:
    reg = secure_registry
    _push(capsys, layout, reg, "os:1")
    local = OciLayout(layout).read_image(TAG)
    since = reg.log_position()
    with ImageProxy(_opts(reg)) as proxy:
        assert proxy.protocol_version is not None
        assert proxy.protocol_version.startswith("0.2.")
        pid = proxy.pid
        assert pid is not None and not _gone(pid)
        with proxy.open(ImageReference.parse(reg.ref("os:1"))) as source:
            _check_image(source, local, sample.commit)
    assert pid is not None and _gone(pid)
    # Every layer came from the registry (once), none from a local copy.
    layer_bytes = sum(layer["size"] for layer in local.manifest["layers"])
    assert reg.bytes_sent(since, blobs_only=True) >= layer_bytes


def test_streams_an_oci_layout(sample: Committed, layout: Path) -> None:
    local = OciLayout(layout).read_image(TAG)
    with (
        ImageProxy(RegistryOptions()) as proxy,
        proxy.open(ImageReference.parse(f"oci:{layout}:{TAG}")) as source,
    ):
        _check_image(source, local, sample.commit)
        # A second look costs nothing and gives the same image.
        assert source.image() is source.image()


def _goarch() -> str:
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def test_an_index_resolves_to_this_machines_manifest(tmp_path: Path, layout: Path) -> None:
    copy = tmp_path / "img"
    shutil.copytree(layout, copy)
    oci = OciLayout(copy)
    local = oci.read_image(TAG)
    # Another platform's manifest: the same image with a different annotation.
    other_manifest = dict(local.manifest, annotations={"other": "platform"})
    other = oci.write_json_blob(other_manifest, MANIFEST_TYPE)
    other_arch = "s390x" if _goarch() != "s390x" else "ppc64le"
    index = {
        "schemaVersion": 2,
        "mediaType": INDEX_TYPE,
        "manifests": [
            {
                "mediaType": MANIFEST_TYPE,
                "digest": other.digest,
                "size": other.size,
                "platform": {"architecture": other_arch, "os": "linux"},
            },
            {
                "mediaType": MANIFEST_TYPE,
                "digest": local.manifest_digest,
                "size": len(local.manifest_raw),
                "platform": {"architecture": _goarch(), "os": "linux"},
            },
        ],
    }
    blob = oci.write_json_blob(index, INDEX_TYPE)
    entries = json.loads((copy / "index.json").read_bytes())
    entries["manifests"].append(
        {
            "mediaType": INDEX_TYPE,
            "digest": blob.digest,
            "size": blob.size,
            "annotations": {"org.opencontainers.image.ref.name": "multi"},
        }
    )
    (copy / "index.json").write_bytes(canonical_json(entries))
    with (
        ImageProxy(RegistryOptions()) as proxy,
        proxy.open(ImageReference.parse(f"oci:{copy}:multi")) as source,
    ):
        img = source.image()
    assert img.manifest_digest == local.manifest_digest
    assert img.manifest_raw == local.manifest_raw


def test_a_stream_left_early_keeps_the_protocol_in_step(layout: Path) -> None:
    local = OciLayout(layout).read_image(TAG)
    layer = max(local.manifest["layers"], key=lambda x: x["size"])
    with ImageProxy(RegistryOptions()) as proxy:
        pid = proxy.pid
        with proxy.open(ImageReference.parse(f"oci:{layout}:{TAG}")) as source:
            with source.open_blob(layer["digest"], layer["size"]) as f:
                assert len(f.read(100)) <= 100
            with pytest.raises(KeyError), source.open_blob(layer["digest"], layer["size"]) as f:
                f.read(10)
                raise KeyError("the caller failed")
            assert _sha256(source, layer["digest"], layer["size"]) == (
                layer["digest"],
                layer["size"],
            )
    assert pid is not None and _gone(pid)


def test_a_damaged_blob_is_an_image_format_error(tmp_path: Path, layout: Path) -> None:
    copy = tmp_path / "img"
    shutil.copytree(layout, copy)
    local = OciLayout(copy).read_image(TAG)
    layer = local.manifest["layers"][0]
    path = OciLayout(copy).blob_path(layer["digest"])
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with (
        ImageProxy(RegistryOptions()) as proxy,
        proxy.open(ImageReference.parse(f"oci:{copy}:{TAG}")) as source,
    ):
        with pytest.raises(ImageFormatError, match="damaged"):
            _sha256(source, layer["digest"], layer["size"])
        # A wrong size is caught by skopeo too.
        with pytest.raises(ImageFormatError, match="bytes"):
            _sha256(source, local.manifest["config"]["digest"], 3)
        # And the proxy still answers.
        assert source.image().manifest_digest == local.manifest_digest


def test_wrong_password_is_a_credentials_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], layout: Path, secure_registry: Registry
) -> None:
    reg = secure_registry
    _push(capsys, layout, reg, "os:1")
    bad = tmp_path / "auth.json"
    token = base64.b64encode(f"{reg.username}:wrong".encode()).decode()
    bad.write_text(json.dumps({"auths": {reg.host: {"auth": token}}}))
    with (
        ImageProxy(RegistryOptions(authfile=bad, cert_dir=reg.cert_dir)) as proxy,
        pytest.raises(UserError) as info,
    ):
        proxy.open(ImageReference.parse(reg.ref("os:1")))
    assert "credentials" in info.value.message
    assert info.value.hint and "auth file" in info.value.hint


def test_unknown_ca_is_a_tls_error(
    capsys: pytest.CaptureFixture[str], layout: Path, secure_registry: Registry
) -> None:
    reg = secure_registry
    _push(capsys, layout, reg, "os:1")
    with (
        ImageProxy(RegistryOptions(authfile=reg.authfile)) as proxy,
        pytest.raises(UserError) as info,
    ):
        proxy.open(ImageReference.parse(reg.ref("os:1")))
    assert "not trusted" in info.value.message
    assert info.value.hint and "--cert-dir" in info.value.hint


def test_missing_tag_is_not_found(
    capsys: pytest.CaptureFixture[str], layout: Path, secure_registry: Registry
) -> None:
    reg = secure_registry
    _push(capsys, layout, reg, "os:1")
    with ImageProxy(_opts(reg)) as proxy:
        with pytest.raises(UserError) as info:
            proxy.open(ImageReference.parse(reg.ref("os:nope")))
        assert "not found" in info.value.message and info.value.hint
        with pytest.raises(UserError) as info:
            proxy.open(ImageReference.parse(f"oci:{layout}:nope"))
        assert "not found" in info.value.message and info.value.hint
        # The failures left the proxy usable.
        with proxy.open(ImageReference.parse(reg.ref("os:1"))) as source:
            assert source.image().config["config"]["Labels"]["ostree.commit"]


def test_refused_connection_says_so() -> None:
    with ImageProxy(RegistryOptions()) as proxy, pytest.raises(UserError) as info:
        proxy.open(ImageReference.parse(f"docker://127.0.0.1:{free_port()}/os:1"))
    assert "cannot reach" in info.value.message and info.value.hint


def test_signature_verification_is_refused_or_enforced(tmp_path: Path, layout: Path) -> None:
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"default": [{"type": "reject"}]}))
    # skopeo < 1.15 (proxy protocol < 0.2.6) ignores the policy: starting refuses;
    # a newer one rejects the image when it is opened.
    with (
        pytest.raises(UserError) as info,
        ImageProxy(RegistryOptions(), policy=policy, verify_signatures=True) as proxy,
    ):
        proxy.open(ImageReference.parse(f"oci:{layout}:{TAG}"))
    assert "signature" in info.value.message and info.value.hint


def test_skopeo_dying_is_reported_and_reaped(layout: Path) -> None:
    with ImageProxy(RegistryOptions()) as proxy:
        pid = proxy.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(UserError) as info:
            proxy.open(ImageReference.parse(f"oci:{layout}:{TAG}"))
        assert "skopeo" in str(info.value)
    assert _gone(pid)


def test_a_missing_auth_file_fails_before_skopeo_starts(tmp_path: Path) -> None:
    with (
        pytest.raises(UserError, match="does not exist"),
        ImageProxy(RegistryOptions(authfile=tmp_path / "none.json")),
    ):
        pass
