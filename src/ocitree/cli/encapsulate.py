"""``ocitree encapsulate``: ostree commit → OCI image."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ocitree.cli.options import add_json, add_registry_options, human_size, registry_options
from ocitree.cli.output import print_json, progress_bar
from ocitree.container.encapsulate import (
    EncapsulateOptions,
    EncapsulateResult,
    encapsulate,
    previous_chunks,
)
from ocitree.errors import UserError
from ocitree.oci.destination import staged
from ocitree.oci.images import read_image
from ocitree.oci.layer import Compression
from ocitree.oci.reference import ImageReference
from ocitree.ostree.repo import Repo


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "encapsulate",
        parents=[common],
        help="write an ostree commit as an OCI image",
        description="Write the ostree commit REF of --repo as an OCI image in the ostree "
        "native container format, one layer per chunk of packages.",
        epilog="example: ocitree encapsulate --repo repo rhel/8/x86_64/edge "
        "docker://registry.example.com/os:8.7",
    )
    p.add_argument("--repo", type=Path, required=True, help="the ostree repository")
    p.add_argument("ref", metavar="REF", help="ref or commit checksum")
    p.add_argument(
        "dest",
        metavar="DEST",
        help="oci:DIR[:TAG], oci-archive:FILE[:TAG] or docker://HOST/NAME:TAG",
    )
    add_chunking_options(p)
    p.add_argument("--compression", choices=[c.value for c in Compression], default="gzip")
    p.add_argument("--compression-level", type=int, help="gzip 1-9 (6), zstd 1-19 (3)")
    p.add_argument(
        "--label",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="add a label to the image config (repeatable)",
    )
    p.add_argument("--arch", help="image architecture (default: from the commit's kernel)")
    p.add_argument("--tmpdir", type=Path, help="where to stage an image before pushing it")
    add_registry_options(p)
    add_json(p)
    p.set_defaults(func=run)


def add_chunking_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--max-layers",
        type=int,
        default=64,
        help="most chunk layers, one of them reserved (default: 64)",
    )
    p.add_argument(
        "--previous", metavar="IMAGE", help="keep this earlier image's component→layer assignment"
    )
    p.add_argument(
        "--contentmeta",
        type=Path,
        metavar="FILE",
        help="rpm-ostree component metadata (JSON, may be gzipped) for change frequencies",
    )


def chunking_options(args: argparse.Namespace) -> dict[str, Any]:
    previous = None
    if args.previous:
        image = read_image(ImageReference.parse(args.previous), registry_options(args))
        previous = previous_chunks(image)
    return {"max_layers": args.max_layers, "previous": previous, "contentmeta": args.contentmeta}


def _labels(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--label {item!r} is not KEY=VALUE")
        if key.startswith("ostree.") or key == "containers.bootc":
            raise UserError(
                f"--label {key} would replace a label ocitree derives from the commit",
                hint="ostree.* and containers.bootc labels come from the commit itself",
            )
        out[key] = value
    return out


def run(args: argparse.Namespace) -> int:
    dest = ImageReference.parse(args.dest)
    repo = Repo(args.repo)
    compression = Compression(args.compression)
    opts = EncapsulateOptions(
        compression=compression,
        level=args.compression_level,
        labels=_labels(args.label),
        arch=args.arch,
        **chunking_options(args),
    )
    regopts = registry_options(args)
    with (
        staged(dest, regopts, tmpdir=args.tmpdir) as target,
        progress_bar("Writing layers", enabled=not (args.quiet or args.json)) as progress,
    ):
        result = encapsulate(repo, args.ref, target.layout, target.tag, opts, progress)
    print_result(result, str(dest), args)
    return 0


def print_result(result: EncapsulateResult, destination: str, args: argparse.Namespace) -> None:
    """What ``encapsulate`` and ``build`` print of the image they wrote (``--json``, or a
    line unless ``--quiet``)."""
    if args.json:
        print_json(
            {
                "commit": result.commit,
                "destination": destination,
                "manifest": result.manifest.digest,
                "config": result.config.digest,
                "layers": [
                    {
                        "digest": li.blob.digest,
                        "size": li.blob.size,
                        "diff_id": li.blob.diff_id,
                        "components": list(li.components) if li.components is not None else None,
                    }
                    for li in result.layers
                ],
            }
        )
    elif not args.quiet:
        total = sum(li.blob.size for li in result.layers)
        print(
            f"{destination}: commit {result.commit[:12]}, {len(result.layers)} layers, "
            f"{human_size(total)}, manifest {result.manifest.digest}"
        )
