"""Container images stored in an ostree repository, the way ostree-ext stores them.

- Each layer is imported once and kept under the ref ``ostree/container/blob/<digest>``:
  layer 0 points at the image's ostree commit, a chunk layer at a commit listing its
  content objects, a derived layer at a commit of its files (see :mod:`.derived`).
  An upgrade fetches only layers whose ref is missing.
- The image itself is a merge commit (the base commit plus the derived layers) under
  ``ostree/container/image/<escaped image reference>``, with the manifest digest,
  manifest and config in its metadata. rpm-ostree and bootc use the same refs and keys.

Every layer is imported in a transaction of its own and its ref is set only when its
blob has matched its digest; a process killed at any point leaves the repo consistent
and a rerun fetches only what is missing.
"""

from __future__ import annotations

import contextlib
import errno
import json
import tarfile
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ocitree import __version__
from ocitree.container.blobstream import Decompressor, DigestReader
from ocitree.container.derived import DerivedLayerImporter, merge, subdir, write_dirmeta
from ocitree.container.describe import labels_of, ostree_layer_count
from ocitree.container.importer import OstreeLayerImporter
from ocitree.container.selinux import relabel
from ocitree.errors import ImageFormatError, UserError
from ocitree.log import logger, step
from ocitree.oci.layout import Image
from ocitree.oci.source import ImageSource
from ocitree.ostree.repo import GLib, OSTree, Repo

LAYER_PREFIX = "ostree/container/blob"
IMAGE_PREFIX = "ostree/container/image"
META_MANIFEST_DIGEST = "ostree.manifest-digest"
META_MANIFEST = "ostree.manifest"
META_CONFIG = "ostree.container.image-config"
META_IMPORTER = "ostree.importer.version"


def escape_ref(text: str) -> str:
    """Escape any string into a valid ref component (ostree-ext's scheme)."""
    if not text:
        raise UserError("an empty string cannot name a ref")
    out = []
    prev_alnum = False
    for i, c in enumerate(text):
        alnum = c.isascii() and c.isalnum()
        if alnum or c == "-" or (c == "/" and prev_alnum and i + 1 < len(text)):
            out.append(c)
        elif c == "_":
            out.append("__")
        else:
            out.append(f"_{ord(c):02X}_")
        prev_alnum = alnum
    return "".join(out)


def layer_ref(digest: str) -> str:
    return f"{LAYER_PREFIX}/{escape_ref(digest)}"


def image_ref(imgref: str) -> str:
    return f"{IMAGE_PREFIX}/{escape_ref(imgref)}"


@dataclass(frozen=True)
class LayerPlan:
    digest: str
    size: int
    media_type: str
    kind: str  # "ostree commit", "ostree chunk" or "derived"
    cached: bool


@dataclass(frozen=True)
class PullPlan:
    """What pulling an image would do: which layers are new, how many bytes they are."""

    imgref: str
    image: Image
    layers: list[LayerPlan]
    current: str | None  # manifest digest the image ref has now

    @property
    def manifest_digest(self) -> str:
        return self.image.manifest_digest

    @property
    def up_to_date(self) -> bool:
        return self.current == self.image.manifest_digest

    @property
    def fetch_bytes(self) -> int:
        return sum(layer.size for layer in self.layers if not layer.cached)

    @property
    def total_bytes(self) -> int:
        return sum(layer.size for layer in self.layers)


@dataclass(frozen=True)
class PulledImage:
    commit: str  # the merge commit: what gets deployed
    base_commit: str | None
    manifest_digest: str
    version: str | None
    fetched_bytes: int
    fetched_layers: int


def resolve_ref(repo: Repo, ref: str) -> str | None:
    try:
        _, csum = repo.gi.resolve_rev(ref, True)
    except GLib.Error:
        return None
    return str(csum) if csum else None


def image_state(repo: Repo, imgref: str) -> tuple[str, str] | None:
    """(merge commit, manifest digest) of a stored image, or None."""
    commit = resolve_ref(repo, image_ref(imgref))
    if commit is None:
        return None
    digest = repo.commit(commit).metadata.get(META_MANIFEST_DIGEST)
    return commit, str(digest) if digest else ""


def plan_pull(repo: Repo, source: ImageSource, imgref: str) -> PullPlan:
    image = source.image()
    n_ostree = ostree_layer_count(image)
    layers = list(image.manifest.get("layers", []))
    plans = []
    for i, layer in enumerate(layers):
        kind = (
            "ostree commit"
            if i == 0 and n_ostree
            else ("ostree chunk" if i < n_ostree else "derived")
        )
        plans.append(
            LayerPlan(
                layer["digest"],
                int(layer.get("size", 0)),
                layer.get("mediaType", ""),
                kind,
                resolve_ref(repo, layer_ref(layer["digest"])) is not None,
            )
        )
    state = image_state(repo, imgref)
    return PullPlan(imgref, image, plans, state[1] if state else None)


Progress = Callable[[int, int], None]


def pull(
    repo: Repo,
    source: ImageSource,
    imgref: str,
    *,
    plan: PullPlan | None = None,
    progress: Progress | None = None,
) -> PulledImage:
    """Import the image into ``repo``; returns the merge commit to deploy."""
    plan = plan or plan_pull(repo, source, imgref)
    image = plan.image
    state = image_state(repo, imgref)
    n_ostree = sum(1 for layer in plan.layers if layer.kind != "derived")
    fetched = 0
    fetched_layers = 0
    commits: list[str] = []
    for i, layer in enumerate(plan.layers):
        ref = layer_ref(layer.digest)
        commit = resolve_ref(repo, ref)
        if commit is not None and layer.kind != "ostree commit":
            repo.gi.mark_commit_partial(commit, False)  # complete: see above
        if commit is None:
            with step(
                f"Fetching layer {i + 1}/{len(plan.layers)} ({layer.kind}, {layer.size} bytes)"
            ):
                commit, count = _import_with_retries(repo, source, layer, ref)
            fetched += count
            fetched_layers += 1
            if progress is not None:
                progress(fetched, plan.fetch_bytes)
        commits.append(commit)
    base = commits[0] if n_ostree else None
    if base is not None:
        repo.gi.mark_commit_partial(base, False)
    if state is not None and state[1] == image.manifest_digest:
        # Its ref was set in the transaction that wrote it, so it is complete even if a
        # kill came before the partial mark was cleared.
        repo.gi.mark_commit_partial(state[0], False)
        return PulledImage(
            state[0], base, image.manifest_digest, _version(image), fetched, fetched_layers
        )
    with step("Writing the merge commit"):
        merged = _write_merge_commit(repo, image, imgref, base, commits[n_ostree:])
    return PulledImage(
        merged, base, image.manifest_digest, _version(image), fetched, fetched_layers
    )


def _version(image: Image) -> str | None:
    labels = labels_of(image)
    return labels.get("org.opencontainers.image.version") or labels.get("version")


@contextlib.contextmanager
def _transaction(repo: Repo) -> Iterator[None]:
    repo.gi.prepare_transaction(None)
    try:
        yield
        repo.gi.commit_transaction(None)
    except BaseException:
        repo.gi.abort_transaction(None)
        raise


RETRIES = 3
_TRANSIENT = (
    "invalid status code from registry 5",
    "internal server error",
    "bad gateway",
    "service unavailable",
    "gateway timeout",
    "too many requests",
    "connection reset",
    "connection refused",
    "unexpected eof",
    "eof",
    "broken pipe",
    "timeout",
    "timed out",
    "500 internal",
    "502 bad",
    "503 service",
    "504 gateway",
    "status 500",
    "status 502",
    "status 503",
    "status 504",
    "bytes in blob",
    "cannot reach",
    "temporarily",
)


def _is_transient(e: UserError) -> bool:
    """A failed transfer that may well work when tried again (not a bad image)."""
    text = " ".join(str(x) for x in (e.message, getattr(e, "error", ""), e.__cause__ or "")).lower()
    if "does not match its digest" in text or "corrupted blob" in text:
        return False
    return any(marker in text for marker in _TRANSIENT)


def _import_with_retries(
    repo: Repo, source: ImageSource, layer: LayerPlan, ref: str
) -> tuple[str, int]:
    for attempt in range(1, RETRIES + 1):
        try:
            return _import_layer(repo, source, layer, ref)
        except UserError as e:
            if attempt == RETRIES or not _is_transient(e):
                raise
            logger.warning(
                "fetching %s failed (%s); retrying (%d/%d)",
                layer.digest[:19],
                e.message,
                attempt + 1,
                RETRIES,
            )
            time.sleep(0.5 * attempt)
    raise AssertionError("unreachable")


def _import_layer(repo: Repo, source: ImageSource, layer: LayerPlan, ref: str) -> tuple[str, int]:
    with source.open_blob(layer.digest, layer.size) as raw, _transaction(repo):
        blob = DigestReader(raw, layer.digest, layer.size)
        stream = Decompressor(blob, layer.media_type)
        try:
            if layer.kind == "derived":
                derived = DerivedLayerImporter(repo)
                derived.import_tar(stream)
                blob.verify()
                commit = derived.commit()
            else:
                imp = OstreeLayerImporter(repo, objects_only=layer.kind == "ostree chunk")
                imp.import_tar(stream)
                blob.verify()
                if layer.kind == "ostree commit":
                    if imp.commit is None:
                        raise ImageFormatError("the image's first layer holds no commit object")
                    commit = imp.commit
                    repo.gi.mark_commit_partial(commit, True)
                else:
                    commit = _object_set_commit(repo, imp.content)
        except ImageFormatError as e:
            _verify_quietly(blob)  # a digest mismatch is the better explanation
            if layer.digest in e.message:
                raise
            raise ImageFormatError(f"layer {layer.digest}: {e.message}", hint=e.hint) from e
        except (OSError, EOFError, ValueError, zlib.error, tarfile.TarError) as e:
            if isinstance(e, OSError) and e.errno == errno.ENOSPC:
                raise _no_space(layer) from e
            _verify_quietly(blob)
            if isinstance(e, OSError) and e.errno is not None:
                raise
            raise ImageFormatError(f"layer {layer.digest} is corrupt: {e}") from e
        except GLib.Error as e:
            if "No space left" in e.message or "min-free-space" in e.message:
                raise _no_space(layer) from e
            raise ImageFormatError(f"layer {layer.digest}: {e.message}") from e
        repo.gi.transaction_set_ref(None, ref, commit)
    if layer.kind != "ostree commit":  # the base commit stays partial until all its chunks are in
        repo.gi.mark_commit_partial(commit, False)
    return commit, blob.count


def _verify_quietly(blob: DigestReader) -> None:
    """Raise the digest mismatch if there is one; a broken stream is no news here."""
    try:
        blob.verify()
    except ImageFormatError:
        raise
    except (OSError, EOFError, ValueError, zlib.error, UserError):
        pass


def _no_space(layer: LayerPlan) -> UserError:
    return UserError(
        f"no space left on device importing layer {layer.digest}",
        hint="free space in the repository's filesystem and retry; what was fetched is kept",
    )


def _write_commit(
    repo: Repo, parent: str | None, meta: GLib.Variant | None, root: object, timestamp: int
) -> str:
    """write_commit_with_time, the commit marked partial until its transaction is in:
    a kill while the transaction moves objects in must not leave a commit that looks
    complete but is not (ostree fsck skips partial commits)."""
    _, commit = repo.gi.write_commit_with_time(parent, None, None, meta, root, timestamp, None)
    repo.gi.mark_commit_partial(commit, True)
    return str(commit)


def _object_set_commit(repo: Repo, content: list[str]) -> str:
    """A commit whose root lists a chunk layer's content objects by checksum."""
    mt = OSTree.MutableTree.new()
    mt.set_metadata_checksum(write_dirmeta(repo))
    for csum in sorted(set(content)):
        mt.replace_file(csum, csum)
    _, root = repo.gi.write_mtree(mt, None)
    return _write_commit(repo, None, None, root, 0)


def _timestamp(image: Image) -> int:
    created = image.config.get("created")
    if isinstance(created, str):
        with contextlib.suppress(ValueError):
            return int(datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp())
    return 0


def _write_merge_commit(
    repo: Repo, image: Image, imgref: str, base: str | None, derived: list[str]
) -> str:
    meta = GLib.Variant(
        "a{sv}",
        {
            META_MANIFEST_DIGEST: GLib.Variant("s", image.manifest_digest),
            META_MANIFEST: GLib.Variant("s", image.manifest_raw.decode()),
            META_CONFIG: GLib.Variant("s", image.config_raw.decode()),
            META_IMPORTER: GLib.Variant("s", f"ocitree {__version__}"),
        },
    )
    with _transaction(repo):
        mt = merge(repo, base, derived)
        if base is None:
            _require_kernel(mt)
        if derived:
            relabel(repo, mt)
        _, root = repo.gi.write_mtree(mt, None)
        commit = _write_commit(repo, base, meta, root, _timestamp(image))
        repo.gi.transaction_set_ref(None, image_ref(imgref), commit)
    repo.gi.mark_commit_partial(commit, False)
    return commit


def _require_kernel(mt: OSTree.MutableTree) -> None:
    modules = subdir(mt, ("usr", "lib", "modules"))
    if modules is not None:
        for kver in modules.get_subdirs().values():
            if "vmlinuz" in kver.get_files():
                return
    raise UserError(
        "the image is not an ostree container image and carries no kernel",
        hint="base it on an ostree image (FROM an image made by 'ocitree encapsulate'), "
        "or include usr/lib/modules/<kver>/vmlinuz",
    )


def stored_manifest(repo: Repo, commit: str) -> dict[str, Any] | None:
    raw = repo.commit(commit).metadata.get(META_MANIFEST)
    return json.loads(raw) if isinstance(raw, str) else None


def prune_layers(repo: Repo) -> int:
    """Drop layer refs that no stored image uses; returns how many were dropped."""
    keep: set[str] = set()
    for ref in repo.refs():
        if ref.startswith(IMAGE_PREFIX + "/"):
            manifest = stored_manifest(repo, repo.resolve(ref))
            if manifest:
                keep.update(layer_ref(x["digest"]) for x in manifest.get("layers", []))
    dropped = 0
    for ref in repo.refs():
        if ref.startswith(LAYER_PREFIX + "/") and ref not in keep:
            repo.set_ref(ref, None)
            dropped += 1
    return dropped
