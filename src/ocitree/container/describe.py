"""A summary of an image as ostree sees it: commit, version, layers and their components."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

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


def describe(image: Image) -> ImageSummary:
    labels = dict((image.config.get("config") or {}).get("Labels") or {})
    diff_ids = list(image.config.get("rootfs", {}).get("diff_ids", []))
    final = labels.get("ostree.final-diffid")
    is_ostree = "ostree.commit" in labels
    n_ostree = diff_ids.index(final) + 1 if final in diff_ids else (1 if is_ostree else 0)
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
