"""Image references parse into transports, and bad ones are clear errors."""

from __future__ import annotations

import pytest

from ocitree.errors import UserError
from ocitree.oci.reference import ImageReference, OstreeImageReference, SignatureMode, Transport


@pytest.mark.parametrize(
    ("text", "transport", "name", "tag"),
    [
        ("oci:/tmp/x", Transport.OCI, "/tmp/x", None),
        ("oci:/tmp/x:v1", Transport.OCI, "/tmp/x", "v1"),
        ("oci-archive:a.tar:latest", Transport.OCI_ARCHIVE, "a.tar", "latest"),
        (
            "docker://127.0.0.1:5000/os/base:8.7",
            Transport.REGISTRY,
            "127.0.0.1:5000/os/base:8.7",
            None,
        ),
        ("registry:quay.io/os:1", Transport.REGISTRY, "quay.io/os:1", None),
        ("containers-storage:localhost/os:1", Transport.CONTAINERS_STORAGE, "localhost/os:1", None),
    ],
)
def test_parse(text: str, transport: Transport, name: str, tag: str | None) -> None:
    ref = ImageReference.parse(text)
    assert (ref.transport, ref.name, ref.tag) == (transport, name, tag)


def test_registry_spelled_either_way_is_the_same() -> None:
    assert str(ImageReference.parse("registry:h:1/a:b")) == str(
        ImageReference.parse("docker://h:1/a:b")
    )


@pytest.mark.parametrize(
    "text", ["ftp://x", "quay.io/os:1", "docker://UPPER/Case", "oci:", "docker://a/b:t@x"]
)
def test_bad_references(text: str) -> None:
    with pytest.raises(UserError):
        ImageReference.parse(text)


def test_ostree_references() -> None:
    r = OstreeImageReference.parse("ostree-unverified-registry:quay.io/os:1")
    assert r.signature is SignatureMode.UNVERIFIED and r.image.transport is Transport.REGISTRY
    r = OstreeImageReference.parse("ostree-image-signed:docker://quay.io/os:1")
    assert r.signature is SignatureMode.SIGNED
    r = OstreeImageReference.parse("ostree-unverified-image:oci:/srv/os")
    assert r.image.transport is Transport.OCI
    r = OstreeImageReference.parse("ostree-remote-image:fedora:docker://quay.io/os:1")
    assert r.remote == "fedora"
    with pytest.raises(UserError):
        OstreeImageReference.parse("docker://quay.io/os:1")
