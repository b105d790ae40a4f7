"""B4: bytes a device fetches for an update, against the content that changed.

The device is on v1 (a fresh sysroot rebased onto B3's image). v2 is the same generated
tree with 5 % of its components changed (``generate_tree(version=2, changed=0.05)``),
committed on top of v1 and encapsulated with ``--previous`` v1, then pushed under the
tag the device follows. Fetched: the blob bytes the registry's access log shows sent
during ``ocitree upgrade``. Limit L: the content objects v2 has and v1 lacks, each
compressed with gzip -6, summed.
"""

from __future__ import annotations

import json
import shutil
import tarfile
import time
import zlib
from pathlib import Path
from typing import Any

from b3_device import NAME, OCITREE, DeviceImages, rebase_fresh
from common import MIB, figure, info, layers_bytes, layout_manifest, timed, tmpfs

from ocitree.ostree.repo import Repo
from ocitree.run import Arg
from support.gentree import commit_tree, generate_tree

FETCH_TARGET = 1.3
CHANGED = 0.05
_READ = 1 << 20
_OBJECTS = "sysroot/ostree/repo/objects/"


def content_checksums(repo: Repo, commit: str) -> set[str]:
    """The content (``.file``) objects a commit's tree uses."""
    return {e.checksum for e in repo.iter_tree(repo.commit(commit)) if e.kind == "file"}


def gzip_size(repo: Repo, checksum: str, level: int = 6) -> int:
    """Bytes of the object's data through gzip at ``level`` (a symlink counts its target)."""
    obj = repo.content(checksum)
    z = zlib.compressobj(level, zlib.DEFLATED, 31)
    if obj.symlink_target is not None:
        return len(z.compress(obj.symlink_target.encode()) + z.flush())
    n = 0
    with repo.open_content(obj) as f:
        while chunk := f.read(_READ):
            n += len(z.compress(chunk))
    return n + len(z.flush())


def new_content(repo: Repo, old: str, new: str) -> dict[str, tuple[int, int]]:
    """The content objects of ``new`` not in ``old``: checksum -> (size, gzip -6 size)."""
    added = content_checksums(repo, new) - content_checksums(repo, old)
    return {c: (repo.content(c).size, gzip_size(repo, c)) for c in sorted(added)}


def layer_objects(blob: Path) -> list[str]:
    """Checksums of the content objects in an ostree-format layer (a gzip tarball)."""
    out = []
    with tarfile.open(blob, "r|gz") as tf:
        for m in tf:
            name = m.name.removeprefix("./")
            if name.startswith(_OBJECTS) and name.endswith(".file"):
                out.append(name[len(_OBJECTS) : -len(".file")].replace("/", ""))
    return out


def fetched_layers(
    layout: Path, old_tag: str, new_tag: str, added: dict[str, tuple[int, int]]
) -> list[str]:
    """The layers of ``new_tag`` not in ``old_tag``, largest first: size, share of new content."""
    before = {layer["digest"] for layer in _layers(layout, old_tag)}
    rows = []
    for layer in _layers(layout, new_tag):
        if layer["digest"] in before:
            continue
        blob = layout / "blobs" / "sha256" / layer["digest"].split(":")[1]
        objs = layer_objects(blob)
        fresh = [c for c in objs if c in added]
        new_gz = sum(added[c][1] for c in fresh)
        comps = (layer.get("annotations") or {}).get("ostree.components", "commit layer")
        if len(comps) > 120:
            comps = comps[:117] + "..."
        rows.append((int(layer["size"]), new_gz, len(fresh), len(objs), comps))
    rows.sort(reverse=True)
    return [
        f"{size / MIB:.1f} MiB, of which new content {new_gz / MIB:.1f} MiB gz "
        f"({n_new} of {n} objects): {comps}"
        for size, new_gz, n_new, n, comps in rows
    ]


def _layers(layout: Path, tag: str) -> list[dict[str, Any]]:
    layers = layout_manifest(layout, tag)["layers"]
    assert isinstance(layers, list)
    return layers


def bench(images: DeviceImages) -> None:
    print(
        f"B4 update download ({images.tree_bytes / MIB:.0f} MiB tree, "
        f"{CHANGED:.0%} of components changed in v2)",
        flush=True,
    )
    start = time.perf_counter()
    gen = generate_tree(
        images.work / "tree-v2", size=images.size, components=60, seed=0, version=2, changed=CHANGED
    )
    v2 = commit_tree(gen.path, images.repo, images.ref, mode="bare")
    shutil.rmtree(gen.path)
    layout = images.layout
    timed([
        OCITREE, "-q", "encapsulate", "--repo", images.repo, images.ref, f"oci:{layout}:v2",
        "--previous", f"oci:{layout}:v1",
    ])  # fmt: skip
    image2_bytes = layers_bytes(layout_manifest(layout, "v2"))
    info(
        f"v2: components changed {', '.join(gen.changed_components)}; image "
        f"{image2_bytes / MIB:.0f} MiB, made in {time.perf_counter() - start:.0f} s"
    )
    added = new_content(Repo(images.repo), images.v1, v2)
    limit = sum(gz for _, gz in added.values())
    raw = sum(size for size, _ in added.values())
    info(
        f"L: {len(added)} content objects in v2 and not in v1, {raw / MIB:.1f} MiB, "
        f"{limit / MIB:.1f} MiB with gzip -6 each"
    )

    reg = images.registry
    mnt = images.work / "b4-mnt"
    with tmpfs(mnt, images.tmpfs_size()):
        sysroot, _, first = rebase_fresh(images, mnt)
        info(f"device on v1: rebased in {first.seconds:.0f} s")
        timed([
            OCITREE, "-q", "push", f"oci:{layout}:v2", reg.ref(NAME), "--tls-verify=false",
        ])  # fmt: skip
        env = {"TMPDIR": str(mnt / "tmp")}
        device: list[Arg] = ["--sysroot", sysroot, "--tls-verify=false", "--json"]
        check = json.loads(timed([OCITREE, "upgrade", "--check", *device], env=env).stdout)
        since = reg.log_position()
        up = timed([OCITREE, "upgrade", *device], env=env)
        fetched = reg.bytes_sent(since, blobs_only=True)
    done = json.loads(up.stdout)
    if not done.get("deployment"):
        raise RuntimeError(f"ocitree upgrade deployed nothing: {done}")
    figure("B4 fetched vs L", f"{fetched / limit:.2f}x", f"target <= {FETCH_TARGET}")
    figure(
        "B4 fetched vs whole image",
        f"{fetched / image2_bytes:.3f}x",
        f"{fetched / MIB:.1f} MiB of {image2_bytes / MIB:.0f} MiB",
    )
    info(
        f"ocitree upgrade: {up.seconds:.1f} s, {done['layers_to_fetch']} of {done['layers']} "
        f"layers; --check predicted {check['fetch_bytes'] / MIB:.1f} MiB, ocitree counted "
        f"{done['fetched_bytes'] / MIB:.1f} MiB, the registry sent {fetched / MIB:.1f} MiB "
        "of blobs"
    )
    info("layers of v2 not in v1 (what a device on v1 fetches):")
    for row in fetched_layers(layout, "v1", "v2", added):
        info(f"  {row}")
