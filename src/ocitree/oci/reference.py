"""Image references: containers/image transports and the ostree-container prefixes."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from pathlib import Path

from ocitree.errors import UserError


class Transport(enum.StrEnum):
    REGISTRY = "docker"
    OCI = "oci"
    OCI_ARCHIVE = "oci-archive"
    CONTAINERS_STORAGE = "containers-storage"
    DIR = "dir"
    DOCKER_ARCHIVE = "docker-archive"


_PREFIXES = {
    "docker://": Transport.REGISTRY,
    "registry:": Transport.REGISTRY,
    "oci:": Transport.OCI,
    "oci-archive:": Transport.OCI_ARCHIVE,
    "containers-storage:": Transport.CONTAINERS_STORAGE,
    "dir:": Transport.DIR,
    "docker-archive:": Transport.DOCKER_ARCHIVE,
}

_NAME_RE = re.compile(
    r"^(?P<host>[A-Za-z0-9.-]+(?::[0-9]+)?/)?"
    r"(?P<path>[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?"
    r"(?:@(?P<digest>sha256:[0-9a-f]{64}))?$"
)


@dataclass(frozen=True)
class ImageReference:
    """A transport plus its reference, e.g. ``docker://127.0.0.1:5000/os:1``."""

    transport: Transport
    name: str  # registry: host/path[:tag][@digest]; oci/oci-archive/dir: the path

    tag: str | None = None  # oci / oci-archive only

    @classmethod
    def parse(cls, text: str) -> ImageReference:
        for prefix, candidate in _PREFIXES.items():
            if text.startswith(prefix):
                rest, transport = text[len(prefix) :], candidate
                break
        else:
            raise UserError(
                f"image reference {text!r} has no known transport",
                hint="prefix it with docker://, registry:, oci:, oci-archive:, "
                "containers-storage: or dir:",
            )
        if not rest:
            raise UserError(f"image reference {text!r} names nothing after the transport")
        if transport is Transport.REGISTRY:
            if rest.startswith("//"):
                rest = rest[2:]
            if not _NAME_RE.match(rest):
                raise UserError(
                    f"{rest!r} is not a valid registry image name",
                    hint="write HOST[:PORT]/NAME[:TAG], lowercase name, e.g. "
                    "docker://127.0.0.1:5000/os:1",
                )
            return cls(transport, rest)
        if transport in (Transport.OCI, Transport.OCI_ARCHIVE):
            path, sep, tag = rest.partition(":")
            if sep and not re.fullmatch(r"[A-Za-z0-9_.@-][A-Za-z0-9_.:@/-]*", tag):
                raise UserError(f"invalid tag {tag!r} in {text!r}")
            return cls(transport, path, tag or None)
        return cls(transport, rest)

    @property
    def path(self) -> Path:
        if self.transport not in (Transport.OCI, Transport.OCI_ARCHIVE, Transport.DIR):
            raise UserError(f"{self} is not a local path reference")
        return Path(self.name)

    def __str__(self) -> str:
        if self.transport is Transport.REGISTRY:
            return f"docker://{self.name}"
        if self.tag:
            return f"{self.transport.value}:{self.name}:{self.tag}"
        return f"{self.transport.value}:{self.name}"

    @property
    def registry_host(self) -> str | None:
        if self.transport is not Transport.REGISTRY:
            return None
        first = self.name.split("/", 1)[0]
        return first if ("." in first or ":" in first or first == "localhost") else "docker.io"


class SignatureMode(enum.StrEnum):
    UNVERIFIED = "ostree-unverified-image"
    SIGNED = "ostree-image-signed"
    REMOTE = "ostree-remote-image"


@dataclass(frozen=True)
class OstreeImageReference:
    """The device-side syntax of rpm-ostree and bootc, e.g.
    ``ostree-unverified-registry:quay.io/os:1`` or ``ostree-image-signed:oci:/dir``."""

    signature: SignatureMode
    image: ImageReference
    remote: str | None = None

    @classmethod
    def parse(cls, text: str) -> OstreeImageReference:
        if text.startswith("ostree-unverified-registry:"):
            rest = text.removeprefix("ostree-unverified-registry:")
            return cls(SignatureMode.UNVERIFIED, ImageReference.parse("docker://" + rest))
        if text.startswith("ostree-remote-registry:"):
            remote, _, rest = text.removeprefix("ostree-remote-registry:").partition(":")
            return cls(SignatureMode.REMOTE, ImageReference.parse("docker://" + rest), remote)
        for mode in SignatureMode:
            prefix = mode.value + ":"
            if text.startswith(prefix):
                rest = text.removeprefix(prefix)
                if mode is SignatureMode.REMOTE:
                    name, _, rest = rest.partition(":")
                    return cls(mode, ImageReference.parse(rest), name)
                return cls(mode, ImageReference.parse(rest))
        raise UserError(
            f"{text!r} is not an ostree image reference",
            hint="use e.g. ostree-unverified-registry:HOST/NAME:TAG or "
            "ostree-unverified-image:oci:DIR",
        )

    def __str__(self) -> str:
        """The canonical spelling, as rpm-ostree and bootc write it into origin files."""
        if self.signature is SignatureMode.REMOTE:
            return f"{self.signature.value}:{self.remote}:{self.image}"
        if (
            self.signature is SignatureMode.UNVERIFIED
            and self.image.transport is Transport.REGISTRY
        ):
            return f"ostree-unverified-registry:{self.image.name}"
        return f"{self.signature.value}:{self.image}"
