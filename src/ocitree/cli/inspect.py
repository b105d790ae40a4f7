"""``ocitree inspect``: what an ostree container image holds, from any transport."""

from __future__ import annotations

import argparse
from typing import Any

from ocitree.cli.options import add_json, add_registry_options, human_size, registry_options
from ocitree.cli.output import print_fields, print_json, print_table
from ocitree.container.describe import describe
from ocitree.oci.images import read_image
from ocitree.oci.reference import ImageReference


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "inspect",
        parents=[common],
        help="show an image's commit, version and layers",
        description="Show the ostree commit, version, bootability and layers of an image.",
        epilog="example: ocitree inspect docker://127.0.0.1:5000/os:1",
    )
    p.add_argument("image", metavar="IMAGE", help="oci:DIR[:TAG], oci-archive:FILE, docker://…")
    add_registry_options(p)
    add_json(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    ref = ImageReference.parse(args.image)
    info = describe(read_image(ref, registry_options(args)))
    if args.json:
        print_json(info.as_dict())
        return 0
    print_fields(
        [
            ("Image", str(ref)),
            ("Manifest", info.manifest_digest),
            ("Commit", info.commit or "(not an ostree image)"),
            ("Version", info.version or "-"),
            ("Bootable", "yes" if info.bootable else "no"),
            ("Created", info.created or "-"),
            ("Architecture", info.architecture),
            ("Size", human_size(sum(layer.size for layer in info.layers))),
        ]
    )
    rows = []
    for i, layer in enumerate(info.layers):
        comps = (
            layer.kind
            if layer.components is None
            else (", ".join(layer.components) or "(reserved)")
        )
        if len(comps) > 60:
            comps = comps[:57] + "..."
        rows.append([str(i), human_size(layer.size), layer.digest[7:19], comps])
    print()
    print_table("Layers", ["#", "Size", "Digest", "Components"], rows)
    return 0
