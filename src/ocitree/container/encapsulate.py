"""ostree commit → OCI image in the ostree native container format (tar format v1).

Layer 0 holds the commit, all dirtree/dirmeta objects and every directory of the tree;
layers 1..n hold the content objects of one chunk of components each (see
:mod:`ocitree.container.chunking`), the last one of them named by the
``ostree.final-diffid`` label. Everything is deterministic: the same commit and options
give the same bytes, so the same digests, on any machine.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ocitree.container import ostree_tar
from ocitree.container.chunking import Chunk, plan_chunks
from ocitree.container.components import Ownership, assign, load_frequencies
from ocitree.container.describe import ostree_layer_count
from ocitree.container.tarwriter import TarWriter
from ocitree.errors import UserError
from ocitree.log import logger, step
from ocitree.oci.layer import Blob, Compression, LayerWriter
from ocitree.oci.layout import CONFIG_TYPE, MANIFEST_TYPE, Image, OciLayout, descriptor
from ocitree.ostree.repo import Commit, ContentObject, ObjectType, Repo

COMPONENTS_ANNOTATION = "ostree.components"
COMMIT_LABEL = "ostree.commit"
DIFFID_LABEL = "ostree.final-diffid"
BOOTABLE_LABEL = "ostree.bootable"
BOOTC_LABEL = "containers.bootc"
LINUX_LABEL = "ostree.linux"
VERSION_LABEL = "org.opencontainers.image.version"

_ARCHES = {
    "x86_64": "amd64",
    "aarch64": "arm64",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
    "riscv64": "riscv64",
    "amd64": "amd64",
    "arm64": "arm64",
}


@dataclass(frozen=True)
class EncapsulateOptions:
    max_layers: int = 64
    compression: Compression = Compression.GZIP
    level: int | None = None
    contentmeta: Path | None = None
    previous: Sequence[Sequence[str]] | None = None
    labels: dict[str, str] = field(default_factory=dict)
    arch: str | None = None
    cmd: Sequence[str] | None = None
    # Layers of an earlier image that may be used as they are (see ReusableLayer).
    reuse: Sequence[ReusableLayer] = ()
    fetch_blob: Callable[[Blob, Path], None] | None = None


@dataclass(frozen=True)
class ReusableLayer:
    """A chunk layer of the base image: when a new chunk has the same components, the same
    content objects and the same paths for them, this blob is that chunk (whoever wrote
    it), so it is used as is: same digest, nothing to write, push or pull."""

    components: tuple[str, ...]
    blob: Blob
    objects: frozenset[str]
    paths: dict[str, tuple[str, ...]]


@dataclass(frozen=True)
class CommitContent:
    """What encapsulation needs to know about a commit, read once."""

    commit: Commit
    dirs: list[tuple[str, str, str]]  # (path, dirtree, dirmeta), in walk order
    files: dict[str, str]  # path -> content checksum
    objects: dict[str, ContentObject]
    ownership: Ownership


@dataclass(frozen=True)
class LayerInfo:
    blob: Blob
    components: tuple[str, ...] | None  # None for the commit layer
    created_by: str


@dataclass(frozen=True)
class EncapsulateResult:
    commit: str
    manifest: Blob
    config: Blob
    layers: list[LayerInfo]


def read_commit_content(repo: Repo, rev: str, *, contentmeta: Path | None = None) -> CommitContent:
    """Walk the commit's tree, load each content object's header, assign components."""
    checksum = repo.resolve(rev)
    commit = repo.commit(checksum)
    dirs: list[tuple[str, str, str]] = []
    files: dict[str, str] = {}
    for entry in repo.iter_tree(commit):
        if entry.kind == "dir":
            dirs.append((entry.path, entry.checksum, entry.meta))
        else:
            files[entry.path] = entry.checksum
    objects = {csum: repo.content(csum) for csum in sorted(set(files.values()))}
    root_links = {
        p: objects[c].symlink_target or ""
        for p, c in files.items()
        if "/" not in p and objects[c].symlink_target is not None
    }
    freqs = load_frequencies(contentmeta) if contentmeta else None
    ownership = assign(
        repo,
        files,
        objects,
        root_links=root_links,
        commit_time=commit.timestamp,
        frequencies=freqs,
    )
    return CommitContent(commit, dirs, files, objects, ownership)


def plan(content: CommitContent, opts: EncapsulateOptions) -> list[Chunk]:
    comps = sorted(content.ownership.components.values(), key=lambda c: c.name)
    return plan_chunks(comps, max_layers=opts.max_layers, previous=opts.previous)


def chunk_title(components: Sequence[str]) -> str:
    if not components:
        return "Reserved for new packages"
    if len(components) <= 5:
        return " and ".join(components)
    return f"{len(components)} components"


def _created(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def detect_arch(content: CommitContent, explicit: str | None) -> str:
    if explicit:
        return _ARCHES.get(explicit, explicit)
    kver = content.commit.metadata.get(LINUX_LABEL)
    candidates = [kver] if isinstance(kver, str) else []
    candidates += [
        p.split("/")[3]
        for p, _, _ in content.dirs
        if p.count("/") == 3 and p.startswith("usr/lib/modules/")
    ]
    for k in candidates:
        suffix = k.rsplit(".", 1)[-1]
        if suffix in _ARCHES:
            return _ARCHES[suffix]
    machine = platform.machine()
    return _ARCHES.get(machine, machine)


Progress = Callable[[int, int], None]


def encapsulate(
    repo: Repo,
    rev: str,
    layout: OciLayout,
    tag: str | None,
    opts: EncapsulateOptions,
    progress: Progress | None = None,
) -> EncapsulateResult:
    """Write the commit ``rev`` of ``repo`` as an image into ``layout`` under ``tag``.

    ``progress(done, total)`` is called with content bytes written so far, if given.
    """
    level = opts.level if opts.level is not None else opts.compression.default_level
    opts.compression.check_level(level)
    with step(f"Reading commit {rev}"):
        content = read_commit_content(repo, rev, contentmeta=opts.contentmeta)
    chunks = plan(content, opts)
    by_component: dict[str, list[str]] = {}
    for csum, name in content.ownership.owner.items():
        by_component.setdefault(name, []).append(csum)
    paths_of: dict[str, list[str]] = {}
    for path in sorted(content.files):
        paths_of.setdefault(content.files[path], []).append(path)

    existing = {p.name for p in layout.blobs.iterdir()} if layout.blobs.is_dir() else set()
    # Layers complete in the background; at most _IN_FLIGHT of them are unfinished.
    futures: list[Future[Blob]] = []
    try:
        with step("Writing the commit layer"):
            futures.append(_write_commit_layer(repo, content, layout, opts.compression, level))
        total = sum(c.size for c in chunks)
        done = 0
        reusable = {r.components: r for r in opts.reuse}
        for i, chunk in enumerate(chunks, 1):
            csums = sorted(c for name in chunk.components for c in by_component.get(name, []))
            reused = _reuse(reusable.get(chunk.components), csums, paths_of, layout, opts)
            if reused is not None:
                logger.info(
                    "  layer %d/%d: %s unchanged, %s kept",
                    i,
                    len(chunks),
                    chunk_title(chunk.components),
                    reused.digest,
                )
                done_future: Future[Blob] = Future()
                done_future.set_result(reused)
                futures.append(done_future)
                continue
            with step(f"Writing layer {i}/{len(chunks)}: {chunk_title(chunk.components)}"):
                futures.append(
                    _write_chunk_layer(
                        repo, content, csums, paths_of, layout, opts.compression, level
                    )
                )
            if len(futures) > _IN_FLIGHT:
                futures[-_IN_FLIGHT - 1].result()
            done += chunk.size
            if progress is not None:
                progress(done, total)
        blobs = [f.result() for f in futures]
        chunk_layers = [
            LayerInfo(blob, chunk.components, chunk_title(chunk.components))
            for blob, chunk in zip(blobs[1:], chunks, strict=True)
        ]
        result = _write_manifest(content, layout, tag, blobs[0], chunk_layers, opts)
    except OSError as e:
        _remove_new_blobs(layout, futures, existing)
        raise UserError(
            f"writing the image to {layout.path} failed: {e.strerror or e}",
            hint="check free space and permissions of the destination",
        ) from e
    except BaseException:
        _remove_new_blobs(layout, futures, existing)
        raise
    return result


_IN_FLIGHT = 2


def _reuse(
    candidate: ReusableLayer | None,
    csums: list[str],
    paths_of: dict[str, list[str]],
    layout: OciLayout,
    opts: EncapsulateOptions,
) -> Blob | None:
    if candidate is None or frozenset(csums) != candidate.objects:
        return None
    for c in csums:
        if tuple(p for p in paths_of[c] if not p.startswith("sysroot/")) != candidate.paths.get(c):
            return None
    target = layout.blob_path(candidate.blob.digest)
    if not target.exists():
        if opts.fetch_blob is None:
            return None
        opts.fetch_blob(candidate.blob, target)
    return candidate.blob


def _remove_new_blobs(layout: OciLayout, futures: list[Future[Blob]], existing: set[str]) -> None:
    """Undo a failed write: wait for the layers in flight, delete the blobs that are new."""
    for f in futures:
        try:
            blob = f.result()
        except BaseException:
            continue  # that layer discarded its own temporary file
        name = blob.digest.removeprefix("sha256:")
        if name not in existing:
            (layout.blobs / name).unlink(missing_ok=True)


def _write_commit_layer(
    repo: Repo, content: CommitContent, layout: OciLayout, compression: Compression, level: int
) -> Future[Blob]:
    commit = content.commit
    with LayerWriter(layout.blobs, compression, level) as w:
        tar = TarWriter(w)
        root_meta = repo.dirmeta(commit.root_meta)
        tar.add_dir("./", root_meta.mode, root_meta.uid, root_meta.gid)
        ostree_tar.write_skeleton(tar)
        tar.add_data(ostree_tar.object_path(commit.checksum, ObjectType.COMMIT), commit.variant)
        if commit.detached is not None:
            tar.add_data(
                ostree_tar.object_path(commit.checksum, ObjectType.COMMITMETA), commit.detached
            )
        seen_meta: set[str] = set()
        seen_tree: set[str] = set()
        has_var_tmp = False
        for path, tree, meta in content.dirs:
            if meta not in seen_meta:
                seen_meta.add(meta)
                tar.add_data(
                    ostree_tar.object_path(meta, ObjectType.DIRMETA),
                    repo.read_metadata(ObjectType.DIRMETA, meta),
                )
            if tree not in seen_tree:
                seen_tree.add(tree)
                tar.add_data(
                    ostree_tar.object_path(tree, ObjectType.DIRTREE),
                    repo.read_metadata(ObjectType.DIRTREE, tree),
                )
            # The tar stream already has sysroot/ (the repo skeleton lives there).
            if path == "" or path == "sysroot" or path.startswith("sysroot/"):
                continue
            has_var_tmp = has_var_tmp or path == "var/tmp"
            dm = repo.dirmeta(meta)
            tar.add_dir(
                ostree_tar.checkout_path(path),
                dm.mode,
                dm.uid,
                dm.gid,
                ostree_tar.pax_xattrs(dm.xattrs),
            )
        if not has_var_tmp:
            # Container runtimes expect /var/tmp; ostree trees create it at boot.
            tar.add_dir("var/tmp", 0o1777)
        tar.finish()
        return w.finish_async()


def _write_chunk_layer(
    repo: Repo,
    content: CommitContent,
    csums: list[str],
    paths_of: dict[str, list[str]],
    layout: OciLayout,
    compression: Compression,
    level: int,
) -> Future[Blob]:
    with LayerWriter(layout.blobs, compression, level) as w:
        tar = TarWriter(w)
        ostree_tar.write_skeleton(tar)
        for csum in csums:
            paths = [p for p in paths_of[csum] if not p.startswith("sysroot/")]
            ostree_tar.write_content(tar, repo, content.objects[csum], paths)
        tar.finish()
        return w.finish_async()


def _write_manifest(
    content: CommitContent,
    layout: OciLayout,
    tag: str | None,
    layer0: Blob,
    chunk_layers: list[LayerInfo],
    opts: EncapsulateOptions,
) -> EncapsulateResult:
    commit = content.commit
    created = _created(commit.timestamp)
    labels: dict[str, str] = {COMMIT_LABEL: commit.checksum}
    last = chunk_layers[-1].blob if chunk_layers else layer0
    labels[DIFFID_LABEL] = last.diff_id
    meta = commit.metadata
    if meta.get(BOOTABLE_LABEL) is True:
        labels[BOOTABLE_LABEL] = "true"
        labels[BOOTC_LABEL] = "1"
    if isinstance(meta.get(LINUX_LABEL), str):
        labels[LINUX_LABEL] = meta[LINUX_LABEL]
    if isinstance(meta.get("version"), str):
        labels[VERSION_LABEL] = meta["version"]
    labels.update(opts.labels)
    layer0_title = commit.subject or f"ostree export of commit {commit.checksum}"
    layers = [LayerInfo(layer0, None, layer0_title), *chunk_layers]
    arch = detect_arch(content, opts.arch)
    container_config: dict[str, Any] = {"Labels": labels}
    cmd = opts.cmd or meta.get("ostree.container-cmd")
    if cmd:
        container_config["Cmd"] = list(cmd)
    config = {
        "architecture": arch,
        "os": "linux",
        "created": created,
        "config": container_config,
        "rootfs": {"type": "layers", "diff_ids": [li.blob.diff_id for li in layers]},
        "history": [{"created": created, "created_by": li.created_by} for li in layers],
    }
    config_blob = layout.write_json_blob(config, CONFIG_TYPE)
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": descriptor(config_blob),
        "layers": [
            descriptor(
                li.blob,
                None
                if li.components is None
                else {COMPONENTS_ANNOTATION: ",".join(sorted(li.components))},
            )
            for li in layers
        ],
        "annotations": labels,
    }
    manifest_blob = layout.write_json_blob(manifest, MANIFEST_TYPE)
    layout.add_manifest(manifest_blob, tag, {"architecture": arch, "os": "linux"})
    logger.info(
        "Wrote %s with %d layers (%s)", commit.checksum[:12], len(layers), manifest_blob.digest
    )
    return EncapsulateResult(commit.checksum, manifest_blob, config_blob, layers)


def previous_chunks(image: Image) -> list[list[str]]:
    """The component lists of an earlier image's chunk layers, in layer order."""
    count = ostree_layer_count(image)
    if count == 0:
        raise UserError(
            "the previous image is not an ostree container image (no ostree.commit label)",
            hint="--previous takes an image made by 'ocitree encapsulate' or rpm-ostree",
        )
    out: list[list[str]] = []
    for layer in image.manifest.get("layers", [])[1:count]:
        value = (layer.get("annotations") or {}).get(COMPONENTS_ANNOTATION)
        if value is None:
            raise UserError(
                "the previous image's layers carry no ostree.components annotations",
                hint="--previous needs an image made by chunked encapsulation",
            )
        out.append([c for c in value.split(",") if c])
    return out
