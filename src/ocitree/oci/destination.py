"""Where a written image goes: an ``oci:`` layout written in place, or a staging layout
that is packed into an ``oci-archive:`` or copied to a registry with skopeo. Nothing is
left behind at the destination when writing fails."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ocitree.container.tarwriter import TarWriter
from ocitree.errors import UserError
from ocitree.fsutil import create_temp
from ocitree.oci import skopeo
from ocitree.oci.layout import OciLayout
from ocitree.oci.reference import ImageReference, Transport


@dataclass(frozen=True)
class Staged:
    layout: OciLayout
    tag: str | None


@contextlib.contextmanager
def staged(
    dest: ImageReference,
    opts: skopeo.RegistryOptions,
    *,
    tmpdir: Path | None = None,
    complete: Callable[[], bool] | None = None,
) -> Iterator[Staged]:
    """Yield a layout to write the image into; publish it to ``dest`` on success.

    For a registry, the layout may lack blobs the registry has already (skopeo reuses
    them without reading the source): if the push fails, ``complete()`` is called to put
    the missing blobs into the layout (it returns False when there were none) and the
    push is tried once more."""
    if dest.transport is Transport.OCI:
        created = not dest.path.exists()
        try:
            yield Staged(OciLayout.create(dest.path), dest.tag)
        except BaseException:
            if created:
                shutil.rmtree(dest.path, ignore_errors=True)
            raise
        return
    if dest.transport is Transport.OCI_ARCHIVE:
        parent = dest.path.resolve().parent
        if not parent.is_dir():
            raise UserError(f"directory {parent} does not exist")
        if not os.access(parent, os.W_OK):
            raise UserError(f"cannot write to {parent}", hint="check its permissions")
        with tempfile.TemporaryDirectory(prefix=".ocitree-", dir=parent) as tmp:
            yield Staged(OciLayout.create(Path(tmp) / "layout"), dest.tag)
            pack_archive(Path(tmp) / "layout", dest.path)
        return
    if dest.transport is Transport.REGISTRY:
        with tempfile.TemporaryDirectory(prefix="ocitree-push-", dir=tmpdir) as tmp:
            layout = OciLayout.create(Path(tmp) / "layout")
            yield Staged(layout, "image")
            source = ImageReference(Transport.OCI, str(layout.path), "image")
            try:
                skopeo.copy(source, dest, opts)
            except UserError:
                if complete is None or not complete():
                    raise
                skopeo.copy(source, dest, opts)
        return
    raise UserError(
        f"cannot write images to {dest.transport.value}: transport",
        hint="write to oci:DIR, oci-archive:FILE or docker://HOST/NAME:TAG",
    )


def pack_archive(layout_dir: Path, dest: Path) -> None:
    """Tar a layout into ``dest`` (sorted, mtime 0), atomically."""
    out, tmp = create_temp(dest.resolve().parent, ".tmp-")
    try:
        with out:
            tar = TarWriter(out)
            for root, dirs, files in os.walk(layout_dir):
                dirs.sort()
                rel = Path(root).relative_to(layout_dir)
                if rel != Path():
                    tar.add_dir(str(rel))
                for name in sorted(files):
                    p = Path(root) / name
                    with p.open("rb") as f:
                        tar.add_file(
                            str(rel / name) if rel != Path() else name,
                            p.stat().st_size,
                            f,
                            0o644,
                            0,
                            0,
                        )
            tar.finish()
            out.flush()
            os.fsync(out.fileno())
        tmp.replace(dest)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise UserError(f"writing {dest} failed: {e.strerror or e}") from e
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
