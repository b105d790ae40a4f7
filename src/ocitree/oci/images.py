"""Read an image's manifest and config from any transport without pulling its layers."""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path

from ocitree.errors import ImageFormatError, UserError
from ocitree.oci.layout import INDEX_TYPE, REF_NAME, Image, OciLayout
from ocitree.oci.reference import ImageReference, Transport
from ocitree.oci.skopeo import RegistryOptions, inspect_raw


def read_image(ref: ImageReference, opts: RegistryOptions | None = None) -> Image:
    opts = opts or RegistryOptions()
    if ref.transport is Transport.OCI:
        if not ref.path.exists():
            raise UserError(f"{ref.path} does not exist")
        return OciLayout(ref.path).read_image(ref.tag)
    if ref.transport is Transport.OCI_ARCHIVE:
        return _read_archive(ref.path, ref.tag)
    raw = inspect_raw(ref, opts)
    manifest = _loads(raw, str(ref))
    if manifest.get("mediaType") == INDEX_TYPE or "manifests" in manifest:
        raise UserError(f"{ref} is a multi-platform index", hint="name the platform's digest")
    cfg_raw = inspect_raw(ref, opts, config=True)
    return Image(
        "sha256:" + hashlib.sha256(raw).hexdigest(),
        manifest,
        raw,
        _loads(cfg_raw, str(ref)),
        cfg_raw,
    )


def _loads(raw: bytes, what: str) -> dict[str, object]:
    try:
        doc = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ImageFormatError(f"{what}: not a JSON document: {e}") from e
    if not isinstance(doc, dict):
        raise ImageFormatError(f"{what}: not a JSON object")
    return doc


def _read_archive(path: Path, tag: str | None) -> Image:
    try:
        tf = tarfile.open(path, "r:")  # noqa: SIM115 (closed by the with below)
    except FileNotFoundError as e:
        raise UserError(f"{path} does not exist") from e
    except tarfile.TarError as e:
        raise ImageFormatError(f"{path} is not an oci-archive (a tar of an OCI layout): {e}") from e
    with tf:
        members = {m.name.removeprefix("./"): m for m in tf.getmembers()}

        def read(name: str) -> bytes:
            m = members.get(name)
            f = tf.extractfile(m) if m else None
            if f is None:
                raise ImageFormatError(f"{path}: missing {name}")
            return f.read()

        index = _loads(read("index.json"), f"{path}:index.json")
        entries = index.get("manifests")
        if not isinstance(entries, list) or not entries:
            raise UserError(f"{path} holds no image")
        if tag is not None:
            entries = [e for e in entries if e.get("annotations", {}).get(REF_NAME) == tag]
            if not entries:
                raise UserError(f"no image tagged {tag!r} in {path}")
        elif len(entries) > 1:
            raise UserError(f"{path} holds {len(entries)} images", hint="name one with :TAG")
        digest = entries[0]["digest"]

        def read_blob(d: str) -> bytes:
            data = read("blobs/sha256/" + d.removeprefix("sha256:"))
            if "sha256:" + hashlib.sha256(data).hexdigest() != d:
                raise ImageFormatError(f"{path}: blob {d} does not match its digest")
            return data

        raw = read_blob(digest)
        manifest = _loads(raw, f"{path}:{digest}")
        config = manifest.get("config")
        if not isinstance(config, dict):
            raise ImageFormatError(f"{path}: manifest has no config")
        cfg_raw = read_blob(str(config["digest"]))
        return Image(digest, manifest, raw, _loads(cfg_raw, f"{path}:config"), cfg_raw)
