"""Where an importer reads an image from: its manifest and config, and its blobs as streams.

Two kinds exist: a local OCI layout (read directly) and anything skopeo can reach,
through ``skopeo experimental-image-proxy`` (:mod:`ocitree.oci.proxy`), which streams
blobs from registries without first copying them to disk.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Protocol

from ocitree.oci.layout import Image, OciLayout
from ocitree.ostree.repo import Reader


class ImageSource(Protocol):
    def image(self) -> Image:
        """The manifest (for this machine's platform) and config."""
        ...

    def open_blob(self, digest: str, size: int) -> contextlib.AbstractContextManager[Reader]:
        """The blob's bytes as a stream. Callers verify the digest of what they read."""
        ...


class LayoutSource:
    """An image in a local OCI layout directory."""

    def __init__(self, layout: OciLayout, tag: str | None) -> None:
        self.layout = layout
        self.tag = tag

    def image(self) -> Image:
        return self.layout.read_image(self.tag)

    @contextlib.contextmanager
    def open_blob(self, digest: str, size: int) -> Iterator[Reader]:
        with self.layout.blob_path(digest).open("rb") as f:
            yield f
