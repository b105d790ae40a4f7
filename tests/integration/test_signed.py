"""``ostree-image-signed:`` enforces the device's containers-policy.json with real GPG
signatures made at push time."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from integration.conftest import Images
from support.images import ocitree
from support.registry import Registry
from support.signing import sign_and_push, signing

pytestmark = pytest.mark.integration


def _deployments(capsys: pytest.CaptureFixture[str], sysroot: Path) -> list[dict[str, object]]:
    r = ocitree(capsys, "status", "--sysroot", sysroot, "--json")
    assert r.code == 0, r.err
    return list(json.loads(r.out)["deployments"])


def test_signed_image_deploys_and_unsigned_or_foreign_ones_are_refused(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    device: Path,
    images: Images,
    registry: Registry,
) -> None:
    if shutil.which("gpg") is None:
        pytest.skip("gpg (gnupg) not installed")
    host = registry.host
    with (
        signing(tmp_path / "a", host) as a,
        signing(tmp_path / "b", host, name="someone else", sigstore_dir=a.sigstore_dir) as b,
    ):
        sign_and_push(a, images.v1, f"docker://{host}/os:signed", tls_verify=False)
        r = ocitree(capsys, "push", images.v2, registry.ref("os:unsigned"), "--tls-verify=false")
        assert r.code == 0, r.err
        sign_and_push(b, images.v2, f"docker://{host}/other:1", tls_verify=False)
        # The device trusts key A for this registry.
        containers = device / "etc/containers"
        containers.mkdir(parents=True)
        shutil.copy(a.policy, containers / "policy.json")
        shutil.copytree(a.registries_d, containers / "registries.d")
        before = _deployments(capsys, device)

        for name in ("os:unsigned", "other:1"):
            r = ocitree(
                capsys,
                "rebase",
                f"ostree-image-signed:docker://{host}/{name}",
                "--sysroot",
                device,
                "--tls-verify=false",
            )
            assert r.code == 1, r.out
            last = r.err.strip().splitlines()[-1]
            assert last.startswith("ocitree: error: the signature policy refused the image")
            assert _deployments(capsys, device) == before
        assert not list((device / "ostree/repo/tmp").glob("ocitree-verified-*"))

        imgref = f"ostree-image-signed:docker://{host}/os:signed"
        r = ocitree(capsys, "rebase", imgref, "--sysroot", device, "--tls-verify=false")
        assert r.code == 0, r.err
        deps = _deployments(capsys, device)
        assert deps[0]["image_reference"] == imgref and deps[0]["version"] == "1"
        del b
