"""Device operations over a sysroot: rebase onto an image, upgrade, roll back.

Each one holds the sysroot lock for its whole run. The image is pulled into the
sysroot's repo (only layers the device lacks are fetched), then a new default
deployment is written; until that last step nothing the device boots has changed, so
an interrupted run leaves the deployments exactly as they were and a rerun completes.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from ocitree.container import store
from ocitree.device.lock import sysroot_lock
from ocitree.device.sysroot import DeploymentInfo, Device
from ocitree.errors import UserError
from ocitree.log import step
from ocitree.oci import skopeo
from ocitree.oci.layout import OciLayout
from ocitree.oci.proxy import ImageProxy
from ocitree.oci.reference import ImageReference, OstreeImageReference, SignatureMode, Transport
from ocitree.oci.skopeo import RegistryOptions
from ocitree.oci.source import ImageSource, LayoutSource
from ocitree.ostree.repo import Repo

# Where a device keeps registry credentials, relative to its root, in lookup order.
AUTH_FILES = ("etc/ostree/auth.json", "run/ostree/auth.json", "usr/lib/ostree/auth.json")
POLICY_FILE = "etc/containers/policy.json"
REGISTRIES_D = "etc/containers/registries.d"
_NO_OPTIONS = RegistryOptions()


@dataclass(frozen=True)
class UpdateResult:
    plan: store.PullPlan
    pulled: store.PulledImage | None  # None with --check or when already up to date
    deployment: DeploymentInfo | None  # the new default deployment, if one was written


def _roots(device: Device) -> list[Path]:
    """The device's root: the sysroot itself, and its default deployment's tree."""
    roots = [device.path]
    deps = device.deployments()
    if deps:
        roots.append(device.deployment_path(deps[0]))
    return roots


def device_registry_options(device: Device, opts: RegistryOptions) -> RegistryOptions:
    """``--authfile`` if given, else the first of the device's auth.json files."""
    if opts.authfile is not None:
        return opts
    for root in _roots(device):
        for rel in AUTH_FILES:
            candidate = root / rel
            if candidate.is_file():
                return replace(opts, authfile=candidate)
    return opts


def _device_file(device: Device, rel: str) -> Path | None:
    for root in _roots(device):
        if (root / rel).exists():
            return root / rel
    return None


@contextlib.contextmanager
def open_source(
    ref: OstreeImageReference, opts: RegistryOptions, device: Device | None = None
) -> Iterator[ImageSource]:
    """Local ``oci:`` layouts are read directly; everything else through skopeo's proxy."""
    if ref.signature is SignatureMode.REMOTE:
        raise UserError(
            f"{ref.signature.value}: references (ostree commit signatures) are not supported",
            hint="use ostree-image-signed: (containers-policy.json) or ostree-unverified-*",
        )
    if ref.signature is SignatureMode.SIGNED:
        with _verified_copy(ref, opts, device) as source:
            yield source
        return
    if ref.image.transport is Transport.OCI:
        if not ref.image.path.is_dir():
            raise UserError(f"{ref.image.path} does not exist or is not an OCI layout")
        yield LayoutSource(OciLayout(ref.image.path), ref.image.tag)
        return
    with ImageProxy(opts) as proxy, proxy.open(ref.image) as source:
        yield source


@contextlib.contextmanager
def _verified_copy(
    ref: OstreeImageReference, opts: RegistryOptions, device: Device | None
) -> Iterator[ImageSource]:
    """The image as ``skopeo copy`` delivers it after enforcing containers-policy.json.

    skopeo checks the policy (signatures included) before it copies any layer. Its
    image proxy only does so from protocol 0.2.6 (skopeo 1.14); until then a signed
    image is staged whole in the repo's tmp/ and imported from there.
    """
    global_args: list[str] = []
    policy = _device_file(device, POLICY_FILE) if device else None
    registries_d = _device_file(device, REGISTRIES_D) if device else None
    if policy is not None:
        global_args += ["--policy", str(policy)]
    if registries_d is not None:
        global_args += ["--registries.d", str(registries_d)]
    tmp_parent = device.repo_path / "tmp" if device else None
    with tempfile.TemporaryDirectory(prefix="ocitree-verified-", dir=tmp_parent) as tmp:
        staged = ImageReference(Transport.OCI, str(Path(tmp) / "image"), "image")
        with step(f"Verifying {ref.image} against the signature policy"):
            # Signatures cannot be stored in an oci: layout; the policy is checked anyway.
            skopeo.copy(
                ref.image, staged, opts, global_args=global_args, extra=["--remove-signatures"]
            )
        yield LayoutSource(OciLayout(staged.path), "image")


def rebase(
    device: Device,
    imgref: str,
    opts: RegistryOptions = _NO_OPTIONS,
    *,
    check: bool = False,
    progress: store.Progress | None = None,
) -> UpdateResult:
    """Pull ``imgref`` into the device's repo and make it the new default deployment."""
    ref = OstreeImageReference.parse(imgref)
    with sysroot_lock(device, timeout=device.lock_timeout):
        repo = Repo(device.repo_path)
        opts = device_registry_options(device, opts)
        with open_source(ref, opts, device) as source:
            plan = store.plan_pull(repo, source, str(ref.image))
            if check:
                return UpdateResult(plan, None, None)
            default = device.deployments()[0] if device.deployments() else None
            if (
                default is not None
                and default.manifest_digest == plan.manifest_digest
                and default.image_reference == str(ref)
            ):
                # Already deployed; an earlier run may have been stopped before its
                # cleanup, so finish that.
                device.cleanup()
                return UpdateResult(plan, None, None)
            with step(
                f"Pulling {ref.image} ({plan.fetch_bytes} of {plan.total_bytes} bytes to fetch)"
            ):
                pulled = store.pull(repo, source, str(ref.image), plan=plan, progress=progress)
        with step("Deploying"):
            deployment = device.deploy(pulled.commit, image_reference=str(ref))
        store.prune_layers(repo)
        return UpdateResult(plan, pulled, deployment)


def upgrade(
    device: Device,
    opts: RegistryOptions = _NO_OPTIONS,
    *,
    check: bool = False,
    progress: store.Progress | None = None,
) -> UpdateResult:
    """Rebase onto the image the default deployment came from (its newest digest)."""
    deps = device.deployments()
    if not deps:
        raise UserError(
            f"{device.path} has no deployment to upgrade", hint="use 'ocitree rebase IMGREF' first"
        )
    imgref = deps[0].image_reference
    if not imgref:
        raise UserError(
            "the default deployment was not deployed from a container image",
            hint="use 'ocitree rebase IMGREF' to switch it to one",
        )
    return rebase(device, imgref, opts, check=check, progress=progress)
