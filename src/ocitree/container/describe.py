"""A summary of an image as ostree sees it: commit, version, layers and their components."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ocitree.errors import ImageFormatError
from ocitree.oci.layout import Image

COMPONENTS_ANNOTATION = "ostree.components"


@dataclass(frozen=True)
class LayerSummary:
    digest: str
    size: int
    media_type: str
    kind: str  # "ostree commit", "ostree chunk" or "derived"
    components: tuple[str, ...] | None


@dataclass(frozen=True)
class ImageSummary:
    manifest_digest: str
    commit: str | None
    version: str | None
    bootable: bool
    created: str | None
    architecture: str
    labels: dict[str, str]
    layers: list[LayerSummary]

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for layer in d["layers"]:
            if layer["components"] is not None:
                layer["components"] = list(layer["components"])
        return d


def labels_of(image: Image) -> dict[str, str]:
    return dict((image.config.get("config") or {}).get("Labels") or {})


def ostree_layer_count(image: Image) -> int:
    """How many leading layers are in ostree format (up to ``ostree.final-diffid``).

    0 for an image that is not ostree-based; the rest are derived layers.
    """
    labels = labels_of(image)
    if "ostree.commit" not in labels and "ostree.final-diffid" not in labels:
        return 0
    final = labels.get("ostree.final-diffid")
    if final is None:
        return 1  # the single-layer format of old encapsulations
    diff_ids = list(image.config.get("rootfs", {}).get("diff_ids", []))
    if final not in diff_ids:
        raise ImageFormatError("ostree.final-diffid names no layer of the image")
    return diff_ids.index(final) + 1


def describe(image: Image) -> ImageSummary:
    labels = labels_of(image)
    is_ostree = "ostree.commit" in labels
    n_ostree = ostree_layer_count(image)
    layers = []
    for i, layer in enumerate(image.manifest.get("layers", [])):
        ann = layer.get("annotations") or {}
        comps = ann.get(COMPONENTS_ANNOTATION)
        if i == 0 and is_ostree:
            kind = "ostree commit"
        elif i < n_ostree:
            kind = "ostree chunk"
        else:
            kind = "derived"
        layers.append(
            LayerSummary(
                layer["digest"],
                int(layer["size"]),
                layer.get("mediaType", ""),
                kind,
                tuple(c for c in comps.split(",") if c) if comps is not None else None,
            )
        )
    return ImageSummary(
        manifest_digest=image.manifest_digest,
        commit=labels.get("ostree.commit"),
        version=labels.get("org.opencontainers.image.version") or labels.get("version"),
        bootable=labels.get("ostree.bootable") == "true" or labels.get("containers.bootc") == "1",
        created=image.config.get("created"),
        architecture=str(image.config.get("architecture", "")),
        labels=labels,
        layers=layers,
    )
