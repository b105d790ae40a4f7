"""Pushing to a real docker-registry on 127.0.0.1 with TLS and htpasswd authentication."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from integration.conftest import Committed
from ocitree.errors import CommandError
from ocitree.run import run
from support.images import ocitree
from support.registry import Registry

pytestmark = pytest.mark.integration


def _skopeo_inspect(reg: Registry, name: str) -> dict[str, object]:
    out = run(
        [
            "skopeo",
            "inspect",
            "--authfile",
            str(reg.authfile),
            "--cert-dir",
            str(reg.cert_dir),
            reg.ref(name),
        ]
    ).stdout
    return dict(json.loads(out))


def _has_tag(reg: Registry, name: str) -> bool:
    try:
        _skopeo_inspect(reg, name)
    except CommandError as e:
        assert "manifest unknown" in e.stderr or "name unknown" in e.stderr, e.stderr
        return False
    return True


def test_encapsulate_straight_to_a_secure_registry(
    capsys: pytest.CaptureFixture[str], sample: Committed, secure_registry: Registry
) -> None:
    reg = secure_registry
    r = ocitree(
        capsys,
        "encapsulate",
        "--repo",
        sample.repo,
        sample.ref,
        reg.ref("os:1"),
        "--authfile",
        reg.authfile,
        "--cert-dir",
        reg.cert_dir,
    )
    assert r.code == 0, r.err
    labels = _skopeo_inspect(reg, "os:1")["Labels"]
    assert isinstance(labels, dict) and labels["ostree.commit"] == sample.commit
    r = ocitree(
        capsys,
        "inspect",
        "--json",
        reg.ref("os:1"),
        "--authfile",
        reg.authfile,
        "--cert-dir",
        reg.cert_dir,
    )
    assert r.code == 0, r.err
    assert json.loads(r.out)["commit"] == sample.commit


def test_push_keeps_digests(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], sample: Committed, secure_registry: Registry
) -> None:
    reg = secure_registry
    assert (
        ocitree(capsys, "encapsulate", "--repo", sample.repo, sample.ref, f"oci:{tmp_path}:v1").code
        == 0
    )
    r = ocitree(
        capsys,
        "push",
        f"oci:{tmp_path}:v1",
        reg.ref("os:pushed"),
        "--authfile",
        reg.authfile,
        "--cert-dir",
        reg.cert_dir,
    )
    assert r.code == 0, r.err
    local = json.loads(ocitree(capsys, "inspect", "--json", f"oci:{tmp_path}:v1").out)
    remote = _skopeo_inspect(reg, "os:pushed")
    assert remote["Digest"] == local["manifest_digest"]


def test_wrong_password_is_one_line_with_a_hint_and_pushes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], sample: Committed, secure_registry: Registry
) -> None:
    reg = secure_registry
    bad = tmp_path / "auth.json"
    token = base64.b64encode(f"{reg.username}:wrong".encode()).decode()
    bad.write_text(json.dumps({"auths": {reg.host: {"auth": token}}}))
    r = ocitree(
        capsys,
        "encapsulate",
        "--repo",
        sample.repo,
        sample.ref,
        reg.ref("os:1"),
        "--authfile",
        bad,
        "--cert-dir",
        reg.cert_dir,
    )
    assert r.code == 1
    lines = r.err.strip().splitlines()
    assert lines[-1].startswith("ocitree: error: the registry refused the credentials")
    assert "hint:" in lines[-1] and "Traceback" not in r.err
    assert not _has_tag(reg, "os:1")


def test_unknown_ca_is_one_line_with_a_hint(
    capsys: pytest.CaptureFixture[str], sample: Committed, secure_registry: Registry
) -> None:
    reg = secure_registry
    r = ocitree(
        capsys,
        "encapsulate",
        "--repo",
        sample.repo,
        sample.ref,
        reg.ref("os:1"),
        "--authfile",
        reg.authfile,
    )
    assert r.code == 1
    last = r.err.strip().splitlines()[-1]
    assert "TLS certificate is not trusted" in last and "--cert-dir" in last
    assert not _has_tag(reg, "os:1")


def test_plain_http_registry_needs_tls_verify_false(
    capsys: pytest.CaptureFixture[str], sample: Committed, registry: Registry
) -> None:
    r = ocitree(capsys, "encapsulate", "--repo", sample.repo, sample.ref, registry.ref("os:1"))
    assert r.code == 1 and "--tls-verify=false" in r.err
    r = ocitree(
        capsys,
        "encapsulate",
        "--repo",
        sample.repo,
        sample.ref,
        registry.ref("os:1"),
        "--tls-verify=false",
    )
    assert r.code == 0, r.err
