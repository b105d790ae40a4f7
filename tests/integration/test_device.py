"""A device (a test sysroot on a tmpfs) rebased, upgraded and rolled back from a registry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from integration.conftest import OSNAME, Committed, Images
from ocitree.container.store import IMAGE_PREFIX, LAYER_PREFIX
from ocitree.device.lock import sysroot_lock
from ocitree.device.sysroot import Device
from ocitree.device.update import rebase
from ocitree.errors import UserError
from ocitree.run import run
from support.images import ocitree
from support.registry import Registry

pytestmark = pytest.mark.integration


def _status(capsys: pytest.CaptureFixture[str], sysroot: Path) -> list[dict[str, object]]:
    r = ocitree(capsys, "status", "--sysroot", sysroot, "--json")
    assert r.code == 0, r.err
    return list(json.loads(r.out)["deployments"])


def _push(capsys: pytest.CaptureFixture[str], src: str, reg: Registry, name: str) -> None:
    r = ocitree(capsys, "push", src, reg.ref(name), "--tls-verify=false")
    assert r.code == 0, r.err


def test_rebase_upgrade_rollback_from_a_registry(
    capsys: pytest.CaptureFixture[str],
    device: Path,
    images: Images,
    registry: Registry,
    sample: Committed,
) -> None:
    _push(capsys, images.v1, registry, "os:stable")
    imgref = f"ostree-unverified-registry:{registry.host}/os:stable"
    r = ocitree(capsys, "rebase", imgref, "--sysroot", device, "--tls-verify=false", "--json")
    assert r.code == 0, r.err
    deps = _status(capsys, device)
    assert len(deps) == 2
    new, old = deps
    assert new["default"] and new["image_reference"] == imgref and new["version"] == "1"
    assert old["rollback"] and old["checksum"] == sample.commit and old["image_reference"] is None
    assert new["kernel_args"] == old["kernel_args"] == "console=ttyS0 quiet"
    dev = Device(device)
    origin = dev.origin_path(dev.deployments()[0]).read_text()
    assert origin == f"[origin]\ncontainer-image-reference={imgref}\n"
    refs = run(["ostree", f"--repo={device / 'ostree/repo'}", "refs"]).stdout.decode().split()
    # The refs ostree-ext (rpm-ostree, bootc) would write for this image.
    host = registry.host.replace(".", "_2E_").replace(":", "_3A_")
    assert f"{IMAGE_PREFIX}/docker_3A__2F__2F_{host}/os_3A_stable" in refs
    assert sum(r.startswith(LAYER_PREFIX + "/") for r in refs) == len(
        json.loads(ocitree(capsys, "inspect", "--json", images.v1).out)["layers"]
    )

    # A local edit in /etc of the new deployment survives the upgrade.
    etc = dev.deployment_path(dev.deployments()[0]) / "etc"
    (etc / "local.conf").write_text("mine\n")

    _push(capsys, images.v2, registry, "os:stable")
    r = ocitree(capsys, "upgrade", "--check", "--sysroot", device, "--tls-verify=false", "--json")
    assert r.code == 0, r.err
    check = json.loads(r.out)
    assert not check["up_to_date"] and 0 < check["fetch_bytes"] < check["total_bytes"]
    assert len(_status(capsys, device)) == 2  # --check changed nothing
    since = registry.log_position()
    r = ocitree(capsys, "upgrade", "--sysroot", device, "--tls-verify=false", "--json")
    assert r.code == 0, r.err
    done = json.loads(r.out)
    assert done["fetched_bytes"] == check["fetch_bytes"]
    assert registry.bytes_sent(since, blobs_only=True) <= check["fetch_bytes"] + 100_000
    deps = _status(capsys, device)
    assert deps[0]["version"] == "2" and deps[1]["version"] == "1" and len(deps) == 2
    dev = Device(device)
    assert (dev.deployment_path(dev.deployments()[0]) / "etc/local.conf").read_text() == "mine\n"
    r = ocitree(capsys, "upgrade", "--sysroot", device, "--tls-verify=false")
    assert r.code == 0 and "already deployed" in r.out

    r = ocitree(capsys, "rollback", "--sysroot", device)
    assert r.code == 0, r.err
    deps = _status(capsys, device)
    assert deps[0]["version"] == "1" and deps[1]["version"] == "2"
    run(["ostree", "fsck", f"--repo={device / 'ostree/repo'}"])
    out = run(["ostree", "admin", "status", f"--sysroot={device}"]).stdout.decode()
    assert out.count(OSNAME) == 2


def test_rebase_from_an_oci_directory_and_secure_registry_auth_from_the_device(
    capsys: pytest.CaptureFixture[str],
    device: Path,
    images: Images,
    secure_registry: Registry,
) -> None:
    r = ocitree(capsys, "rebase", f"ostree-unverified-image:{images.v1}", "--sysroot", device)
    assert r.code == 0, r.err
    assert _status(capsys, device)[0]["image_reference"] == f"ostree-unverified-image:{images.v1}"
    reg = secure_registry
    r = ocitree(
        capsys,
        "push",
        images.v2,
        reg.ref("os:2"),
        "--authfile",
        reg.authfile,
        "--cert-dir",
        reg.cert_dir,
    )
    assert r.code == 0, r.err
    imgref = f"ostree-unverified-registry:{reg.host}/os:2"
    r = ocitree(capsys, "rebase", imgref, "--sysroot", device, "--cert-dir", reg.cert_dir)
    assert r.code == 1 and "credentials" in r.err
    assert len(_status(capsys, device)) == 2
    assert reg.authfile is not None
    (device / "etc/ostree").mkdir(parents=True)
    (device / "etc/ostree/auth.json").write_bytes(reg.authfile.read_bytes())
    r = ocitree(capsys, "rebase", imgref, "--sysroot", device, "--cert-dir", reg.cert_dir)
    assert r.code == 0, r.err
    deps = _status(capsys, device)
    assert deps[0]["image_reference"] == imgref and deps[0]["version"] == "2"


def test_bad_references_and_busy_sysroot(
    capsys: pytest.CaptureFixture[str], device: Path, images: Images
) -> None:
    before = _status(capsys, device)
    for bad in (
        "docker://x/y",
        "ostree-unverified-image:ftp://x",
        "ostree-unverified-image:oci:/nope",
    ):
        r = ocitree(capsys, "rebase", bad, "--sysroot", device)
        assert r.code == 1 and r.err.strip().splitlines()[-1].startswith("ocitree: error:")
    r = ocitree(capsys, "upgrade", "--sysroot", device)
    assert r.code == 1 and "not deployed from a container image" in r.err
    assert _status(capsys, device) == before
    holder = Device(device)
    with sysroot_lock(holder), pytest.raises(UserError, match="another operation"):
        rebase(Device(device, lock_timeout=0.2), f"ostree-unverified-image:{images.v1}")
    assert _status(capsys, device) == before
    r = ocitree(capsys, "status", "--sysroot", device.parent / "not-a-sysroot")
    assert r.code == 1 and "init-fs" in r.err
