"""The signing test support makes real signatures that skopeo's policy enforcement checks.

An image pushed with ``skopeo copy --sign-by`` (a GPG key generated in the test, the
signature in a local lookaside directory) passes a policed ``skopeo copy``; an unsigned
image and one signed by another key are refused with skopeo's signature errors.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ocitree.run import run
from support.registry import Registry
from support.signing import SigningSetup, sign_and_push, signing

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        any(shutil.which(t) is None for t in ("gpg", "gpgconf", "skopeo", "docker-registry")),
        reason="gpg (gnupg), skopeo or docker-registry not installed",
    ),
]

UNSIGNED = "Source image rejected: A signature was required, but no signature exists"
WRONG_KEY = "Source image rejected: Invalid GPG signature"


def _blob(layout: Path, data: bytes) -> dict[str, object]:
    digest = hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256" / digest).write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def tiny_image(layout: Path, text: str, tag: str = "t") -> str:
    """An OCI layout with one single-file layer holding ``text``; returns the manifest digest.

    Different texts give different digests, so their signatures do not mix: the lookaside
    keeps signatures per repository and manifest digest, not per tag.
    """
    (layout / "blobs" / "sha256").mkdir(parents=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        content = text.encode()
        info = tarfile.TarInfo("hello.txt")
        info.size = len(content)
        tar.addfile(info, io.BytesIO(content))
    layer = _blob(layout, gzip.compress(raw.getvalue(), mtime=0))
    config = {
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {
            "type": "layers",
            "diff_ids": ["sha256:" + hashlib.sha256(raw.getvalue()).hexdigest()],
        },
        "config": {},
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            **_blob(layout, json.dumps(config).encode()),
        },
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
    return str(manifest_desc["digest"])


def policed_copy(
    setup: SigningSetup,
    reg: Registry,
    name: str,
    out: Path,
    *,
    flags: bool = True,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """``skopeo --policy … --registries.d … copy docker://HOST/name oci:out`` (no check).

    ``--remove-signatures``: the oci transport cannot store signatures, and skopeo checks
    the policy on the source all the same.
    """
    argv: list[str | os.PathLike[str]] = ["skopeo"]
    if flags:
        argv += setup.skopeo_args()
    argv += ["copy", "--quiet", "--remove-signatures"]
    if reg.authfile is not None:
        argv += ["--src-authfile", reg.authfile]
    argv += ["--src-cert-dir", reg.cert_dir] if reg.cert_dir else ["--src-tls-verify=false"]
    return run([*argv, reg.ref(name), f"oci:{out}:t"], check=False, env=env)


def push_unsigned(reg: Registry, layout: Path, name: str) -> None:
    run(
        [
            "skopeo",
            "--insecure-policy",
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
            f"oci:{layout}:t",
            reg.ref(name),
        ]
    )


def _stderr(proc: subprocess.CompletedProcess[bytes]) -> str:
    return proc.stderr.decode(errors="replace")


@pytest.fixture
def key_a(registry: Registry, tmp_path: Path) -> Iterator[SigningSetup]:
    with signing(tmp_path / "a", registry.host) as setup:
        yield setup


@pytest.fixture
def key_b(registry: Registry, tmp_path: Path, key_a: SigningSetup) -> Iterator[SigningSetup]:
    """Another key, signing into the same lookaside that ``key_a``'s policy reads."""
    with signing(
        tmp_path / "b", registry.host, name="someone else", sigstore_dir=key_a.sigstore_dir
    ) as setup:
        yield setup


def test_setup_is_private_and_complete(key_a: SigningSetup, tmp_path: Path) -> None:
    assert key_a.gnupg_home == key_a.home / ".gnupg"
    assert key_a.env == {"GNUPGHOME": str(key_a.gnupg_home)}
    assert len(key_a.fingerprint) == 40
    assert key_a.pubkey.read_text().startswith("-----BEGIN PGP PUBLIC KEY BLOCK-----")
    policy = json.loads(key_a.policy.read_text())
    assert policy["default"] == [{"type": "reject"}]
    assert policy["transports"]["docker"] == {
        key_a.registry_host: [
            {"type": "signedBy", "keyType": "GPGKeys", "keyPath": str(key_a.pubkey)}
        ]
    }
    yaml = (key_a.registries_d / "ocitree-test.yaml").read_text()
    assert f"lookaside: {json.dumps(key_a.sigstore_dir.as_uri())}" in yaml
    # The key is in the private keyring only.
    listed = run(
        ["gpg", "--batch", "--with-colons", "--list-secret-keys"], env=key_a.env
    ).stdout.decode()
    assert key_a.fingerprint in listed


def test_signed_image_is_accepted(registry: Registry, key_a: SigningSetup, tmp_path: Path) -> None:
    digest = tiny_image(tmp_path / "img", "signed\n")
    sign_and_push(key_a, f"oci:{tmp_path / 'img'}:t", registry.ref("x:signed"), tls_verify=False)

    signature = key_a.sigstore_dir / f"x@{digest.replace(':', '=')}" / "signature-1"
    assert signature.stat().st_size > 0

    proc = policed_copy(key_a, registry, "x:signed", tmp_path / "out")
    assert proc.returncode == 0, _stderr(proc)
    index = json.loads((tmp_path / "out" / "index.json").read_text())
    assert index["manifests"][0]["digest"] == digest


def test_unsigned_image_is_refused(registry: Registry, key_a: SigningSetup, tmp_path: Path) -> None:
    tiny_image(tmp_path / "img", "unsigned\n")
    push_unsigned(registry, tmp_path / "img", "x:unsigned")

    proc = policed_copy(key_a, registry, "x:unsigned", tmp_path / "out")
    assert proc.returncode != 0
    assert UNSIGNED in _stderr(proc)
    assert not (tmp_path / "out" / "index.json").exists()


def test_image_signed_by_another_key_is_refused(
    registry: Registry, key_a: SigningSetup, key_b: SigningSetup, tmp_path: Path
) -> None:
    tiny_image(tmp_path / "img", "other\n")
    sign_and_push(key_b, f"oci:{tmp_path / 'img'}:t", registry.ref("x:other"), tls_verify=False)

    proc = policed_copy(key_a, registry, "x:other", tmp_path / "out-a")
    assert proc.returncode != 0
    assert WRONG_KEY in _stderr(proc)
    assert key_b.fingerprint in _stderr(proc)

    # The signature itself is good: B's policy accepts it.
    proc = policed_copy(key_b, registry, "x:other", tmp_path / "out-b")
    assert proc.returncode == 0, _stderr(proc)


def test_home_holds_the_default_configuration(
    registry: Registry, key_a: SigningSetup, tmp_path: Path
) -> None:
    """With HOME set to ``setup.home`` skopeo finds policy and lookaside without flags."""
    tiny_image(tmp_path / "signed", "signed\n")
    tiny_image(tmp_path / "unsigned", "unsigned\n")
    sign_and_push(key_a, f"oci:{tmp_path / 'signed'}:t", registry.ref("x:signed"), tls_verify=False)
    push_unsigned(registry, tmp_path / "unsigned", "x:unsigned")
    env = {"HOME": str(key_a.home)}

    proc = policed_copy(key_a, registry, "x:signed", tmp_path / "o1", flags=False, env=env)
    assert proc.returncode == 0, _stderr(proc)
    proc = policed_copy(key_a, registry, "x:unsigned", tmp_path / "o2", flags=False, env=env)
    assert UNSIGNED in _stderr(proc)


def test_signing_through_tls_and_auth(secure_registry: Registry, tmp_path: Path) -> None:
    reg = secure_registry
    with signing(tmp_path / "key", reg.host) as setup:
        tiny_image(tmp_path / "img", "secure\n")
        sign_and_push(
            setup,
            f"oci:{tmp_path / 'img'}:t",
            reg.ref("x:signed"),
            authfile=reg.authfile,
            cert_dir=reg.cert_dir,
        )
        proc = policed_copy(setup, reg, "x:signed", tmp_path / "out")
        assert proc.returncode == 0, _stderr(proc)


def test_long_work_directory_gets_a_short_home(registry: Registry, tmp_path: Path) -> None:
    """gpg-agent's socket must fit in 108 bytes: a long work dir links to a short home."""
    workdir = tmp_path / ("d" * 90)
    with signing(workdir, registry.host) as setup:
        assert (workdir / "home").is_symlink()
        assert len(str(setup.gnupg_home)) < 70
        tiny_image(tmp_path / "img", "long\n")
        sign_and_push(setup, f"oci:{tmp_path / 'img'}:t", registry.ref("x:long"), tls_verify=False)
        proc = policed_copy(setup, registry, "x:long", tmp_path / "out")
        assert proc.returncode == 0, _stderr(proc)
    # stop_agent() removed the short home.
    assert not setup.home.exists()
