"""``ocitree compose``: a base OS commit from an osbuild blueprint."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ocitree.cli.options import add_json
from ocitree.cli.output import print_fields, print_json
from ocitree.compose import distro
from ocitree.compose.compose import DEFAULT_CACHE, ComposeOptions, compose


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    names = ", ".join(distro.names())
    p = sub.add_parser(
        "compose",
        parents=[common],
        help="compose a bootable ostree commit from a blueprint",
        description="Install the blueprint's distro, packages and groups into an empty root "
        "(or take a tree made by another tool), apply its customizations, lay it out for "
        "ostree and commit it. The same inputs give the same commit.",
        epilog=f"distros: {names}. example: ocitree compose minimal.toml --repo repo "
        "--rpm-repo ./rpms --tarball edge-commit.tar",
    )
    p.add_argument("blueprint", metavar="BLUEPRINT", type=Path, help="osbuild blueprint (TOML)")
    p.add_argument(
        "--repo", type=Path, required=True, help="ostree repository (made, archive mode, if new)"
    )
    p.add_argument("--ref", help="the branch (default: <os id>/<major>/<arch>/edge, Fedora: …/iot)")
    p.add_argument("--distro", help="the distro, in place of the blueprint's distro =")
    p.add_argument(
        "--rpm-repo",
        action="append",
        default=[],
        metavar="URL|DIR",
        help="an rpm-md repository to use in place of the distro's (repeatable)",
    )
    p.add_argument(
        "--repo-file",
        action="append",
        default=[],
        type=Path,
        metavar="FILE",
        help="a .repo file whose repositories to use in place of the distro's (repeatable)",
    )
    p.add_argument(
        "--from-rootfs",
        type=Path,
        metavar="DIR|TARBALL",
        help="take this tree (debootstrap, mkosi, …) instead of installing packages",
    )
    p.add_argument(
        "--tarball", type=Path, metavar="OUT.tar", help="also write the edge-commit tarball"
    )
    p.add_argument(
        "--cache-dir",
        type=Path,
        default=DEFAULT_CACHE,
        help=f"repository metadata, packages and the work tree (default: {DEFAULT_CACHE})",
    )
    add_json(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    result = compose(
        ComposeOptions(
            blueprint=args.blueprint,
            repo=args.repo,
            ref=args.ref,
            distro=args.distro,
            rpm_repos=tuple(args.rpm_repo),
            repo_files=tuple(args.repo_file),
            from_rootfs=args.from_rootfs,
            tarball=args.tarball,
            cache_dir=args.cache_dir,
        )
    )
    if args.json:
        print_json(
            {
                "ref": result.ref,
                "commit": result.commit,
                "version": result.version,
                "kernel": result.kernel,
                "packages": list(result.packages),
                "inputhash": result.input_hash,
                "timestamp": result.timestamp,
                "tarball": str(result.tarball) if result.tarball else None,
            }
        )
        return 0
    fields = [
        ("Ref", result.ref),
        ("Commit", result.commit),
        ("Version", result.version or "-"),
        ("Kernel", result.kernel),
        ("Packages", str(len(result.packages)) if result.packages else "- (from a rootfs)"),
        ("Input hash", result.input_hash),
    ]
    if result.tarball:
        fields.append(("Tarball", str(result.tarball)))
    print_fields(fields)
    return 0
