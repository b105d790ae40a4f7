"""The OCI image layout (``oci-layout``, ``index.json``, ``blobs/sha256``), read and written
natively. Writes are atomic: blobs land under their digest when complete and
``index.json`` is replaced in one rename, so readers never see a half-written image."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ocitree.errors import ImageFormatError, UserError
from ocitree.fsutil import atomic_write
from ocitree.oci.layer import Blob, write_blob

MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
INDEX_TYPE = "application/vnd.oci.image.index.v1+json"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
DOCKER_MANIFEST_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
REF_NAME = "org.opencontainers.image.ref.name"


def canonical_json(obj: Any) -> bytes:
    """Deterministic JSON for configs and manifests: sorted keys, no whitespace."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def descriptor(blob: Blob, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    d: dict[str, Any] = {"mediaType": blob.media_type, "digest": blob.digest, "size": blob.size}
    if annotations:
        d["annotations"] = dict(annotations)
    return d


@dataclass(frozen=True)
class Image:
    """A manifest and config read from a layout."""

    manifest_digest: str
    manifest: dict[str, Any]
    manifest_raw: bytes
    config: dict[str, Any]
    config_raw: bytes


class OciLayout:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.blobs = self.path / "blobs" / "sha256"

    @classmethod
    def create(cls, path: Path) -> OciLayout:
        """Open the layout at ``path``, creating an empty one when there is none."""
        layout = cls(path)
        try:
            path.mkdir(parents=True, exist_ok=True)
            if not (path / "oci-layout").exists():
                if any(p.name not in ("blobs",) for p in path.iterdir()):
                    raise UserError(
                        f"{path} exists and is not an OCI image layout",
                        hint="choose an empty or new directory for oci:",
                    )
                layout.blobs.mkdir(parents=True, exist_ok=True)
                atomic_write(path / "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
                atomic_write(path / "index.json", canonical_json(_empty_index()))
        except OSError as e:
            raise UserError(f"cannot write to {path}: {e.strerror or e}") from e
        return layout

    def exists(self) -> bool:
        return (self.path / "oci-layout").is_file() and (self.path / "index.json").is_file()

    def index(self) -> dict[str, Any]:
        try:
            data = json.loads((self.path / "index.json").read_bytes())
        except FileNotFoundError as e:
            raise UserError(f"{self.path} is not an OCI image layout (no index.json)") from e
        except json.JSONDecodeError as e:
            raise ImageFormatError(f"{self.path}/index.json is not valid JSON: {e}") from e
        if not isinstance(data, dict) or not isinstance(data.get("manifests", []), list):
            raise ImageFormatError(f"{self.path}/index.json is not an OCI index")
        return data

    def blob_path(self, digest: str) -> Path:
        algo, _, hexpart = digest.partition(":")
        if (
            algo != "sha256"
            or len(hexpart) != 64
            or not all(c in "0123456789abcdef" for c in hexpart)
        ):
            raise ImageFormatError(f"unsupported or malformed digest {digest!r}")
        return self.blobs / hexpart

    def read_blob(self, digest: str) -> bytes:
        import hashlib

        try:
            data = self.blob_path(digest).read_bytes()
        except FileNotFoundError as e:
            raise ImageFormatError(f"blob {digest} is missing from {self.path}") from e
        if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
            raise ImageFormatError(f"blob {digest} in {self.path} does not match its digest")
        return data

    def write_json_blob(self, obj: Any, media_type: str) -> Blob:
        return write_blob(self.blobs, canonical_json(obj), media_type)

    def find_manifest(self, tag: str | None) -> dict[str, Any]:
        manifests = self.index().get("manifests", [])
        if tag is None:
            if len(manifests) == 1:
                return dict(manifests[0])
            if not manifests:
                raise UserError(f"{self.path} holds no image")
            raise UserError(
                f"{self.path} holds {len(manifests)} images",
                hint="name one with oci:DIR:TAG",
            )
        for m in manifests:
            if m.get("annotations", {}).get(REF_NAME) == tag:
                return dict(m)
        tags = [m.get("annotations", {}).get(REF_NAME, "?") for m in manifests]
        raise UserError(f"no image tagged {tag!r} in {self.path}", hint=f"tags: {', '.join(tags)}")

    def read_image(self, tag: str | None = None) -> Image:
        desc = self.find_manifest(tag)
        raw = self.read_blob(desc["digest"])
        manifest = json.loads(raw)
        if manifest.get("mediaType") == INDEX_TYPE or "manifests" in manifest:
            # A multi-arch index: take the entry for this machine's architecture.
            desc = _pick_platform(manifest.get("manifests", []))
            raw = self.read_blob(desc["digest"])
            manifest = json.loads(raw)
        cfg_raw = self.read_blob(manifest["config"]["digest"])
        return Image(desc["digest"], manifest, raw, json.loads(cfg_raw), cfg_raw)

    def add_manifest(self, blob: Blob, tag: str | None, platform: dict[str, str]) -> None:
        """Point ``tag`` (or the layout's single untagged entry) at the manifest blob."""
        index = self.index()
        entry = descriptor(blob)
        entry["platform"] = platform
        kept = []
        for m in index.get("manifests", []):
            name = m.get("annotations", {}).get(REF_NAME)
            if name == tag:
                continue
            kept.append(m)
        if tag:
            entry["annotations"] = {REF_NAME: tag}
        kept.append(entry)
        index["manifests"] = kept
        atomic_write(self.path / "index.json", canonical_json(index))


def _empty_index() -> dict[str, Any]:
    return {"schemaVersion": 2, "mediaType": INDEX_TYPE, "manifests": []}


def _pick_platform(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """The index entry for this machine's architecture (or the only one)."""
    import platform

    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    if not entries:
        raise ImageFormatError("image index lists no manifests")
    for e in entries:
        if (e.get("platform") or {}).get("architecture") == arch:
            return e
    if len(entries) == 1:
        return entries[0]
    raise UserError(f"the image index has no manifest for {arch}")
