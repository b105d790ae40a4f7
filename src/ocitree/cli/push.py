"""``ocitree push`` / ``ocitree copy``: an image from one transport to another (skopeo)."""

from __future__ import annotations

import argparse
from typing import Any

from ocitree.cli.options import add_registry_options, registry_options
from ocitree.log import step
from ocitree.oci.reference import ImageReference
from ocitree.oci.skopeo import copy


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    for name, text in (
        ("push", "push an image to a registry (or any transport)"),
        ("copy", "copy an image between any two transports"),
    ):
        p = sub.add_parser(
            name,
            parents=[common],
            help=text,
            description=text.capitalize() + ", digests kept.",
            epilog=f"example: ocitree {name} oci:build/os:1 docker://127.0.0.1:5000/os:1",
        )
        p.add_argument("src", metavar="SRC", help="e.g. oci:DIR:TAG")
        p.add_argument("dest", metavar="DEST", help="e.g. docker://HOST/NAME:TAG")
        p.add_argument(
            "--sign-by",
            metavar="FINGERPRINT",
            help="sign the image with this GPG key (simple signing)",
        )
        add_registry_options(p)
        p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    src = ImageReference.parse(args.src)
    dest = ImageReference.parse(args.dest)
    with step(f"Copying {src} to {dest}"):
        copy(src, dest, registry_options(args), sign_by=args.sign_by)
    return 0
