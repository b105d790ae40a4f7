"""``ocitree build``: a derived OS image from a Containerfile."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ocitree.cli.encapsulate import print_result
from ocitree.cli.options import add_json, add_registry_options, registry_options
from ocitree.errors import UserError
from ocitree.oci.reference import ImageReference


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "build",
        parents=[common],
        help="build a derived OS image from a Containerfile or an osbuild blueprint",
        description="Build FROM an ostree container image: COPY/ADD, RUN (with offline "
        "systemctl and rpm-ostree install), or an osbuild blueprint's packages and "
        "customizations (--blueprint, --from), squashed into one new ostree commit and "
        "encapsulated with the base's layers kept byte-identical.",
        epilog="example: ocitree build -f Containerfile.microshift -t "
        "oci:build/os:microshift --secret id=key,src=entitlement-key.pem .; "
        "ocitree build --blueprint layer.toml --from oci:build/os:base -t oci:build/os:layer",
    )
    p.add_argument(
        "context",
        metavar="CONTEXT",
        nargs="?",
        default=None,
        type=Path,
        help="the build context directory (default: .)",
    )
    p.add_argument(
        "--blueprint",
        type=Path,
        metavar="FILE",
        help="build from an osbuild blueprint (TOML) instead of a Containerfile; needs --from",
    )
    p.add_argument(
        "--from",
        dest="base",
        metavar="IMAGE",
        help="the base image (overrides the Containerfile's FROM)",
    )
    p.add_argument(
        "-f",
        "--file",
        type=Path,
        help="the Containerfile (default: CONTEXT/Containerfile, else CONTEXT/Dockerfile)",
    )
    p.add_argument(
        "-t",
        "--tag",
        required=True,
        metavar="DEST",
        help="where the image goes: oci:DIR[:TAG], oci-archive:FILE, docker://…",
    )
    p.add_argument("--build-arg", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument(
        "--secret",
        action="append",
        default=[],
        metavar="id=ID,src=FILE",
        help="a secret for RUN --mount=type=secret,id=ID (never in the image)",
    )
    p.add_argument("--label", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument(
        "--network",
        choices=["none", "host"],
        default="none",
        help="network for RUN steps (default: none)",
    )
    p.add_argument(
        "--repo",
        action="append",
        default=[],
        dest="extra_repos",
        metavar="URL|DIR",
        help="an extra rpm-md repository for package installs",
    )
    p.add_argument(
        "--cache-dir",
        type=Path,
        default=Path("/var/tmp/ocitree-build"),
        help="build repo and download cache (default: /var/tmp/ocitree-build)",
    )
    p.add_argument("--max-layers", type=int, default=64)
    add_registry_options(p)
    add_json(p)
    p.set_defaults(func=run)


def _pairs(items: list[str], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"{what} {item!r} is not KEY=VALUE")
        out[key] = value
    return out


def _secrets(items: list[str]) -> dict[str, Path]:
    out = {}
    for item in items:
        fields = dict(f.partition("=")[::2] for f in item.split(","))
        if "id" not in fields or not ("src" in fields or "source" in fields):
            raise UserError(f"--secret {item!r} needs id=ID,src=FILE")
        out[fields["id"]] = Path(fields.get("src") or fields["source"])
    return out


def run(args: argparse.Namespace) -> int:
    from ocitree.build.builder import BuildOptions, build

    context: Path = args.context or Path(".")
    file = args.file
    if args.blueprint is not None:
        given = [
            what
            for what, value in (
                ("-f", file),
                ("CONTEXT", args.context),
                ("--build-arg", args.build_arg),
                ("--secret", args.secret),
            )
            if value
        ]
        if given:
            raise UserError(
                f"--blueprint takes no {', '.join(given)}: those are for a Containerfile build"
            )
    elif file is None:
        file = context / "Containerfile"
        if not file.exists() and (context / "Dockerfile").exists():
            file = context / "Dockerfile"
    opts = BuildOptions(
        containerfile=file,
        context=context,
        dest=ImageReference.parse(args.tag),
        build_args=_pairs(args.build_arg, "--build-arg"),
        secrets=_secrets(args.secret),
        labels=_pairs(args.label, "--label"),
        network=args.network,
        cache_dir=args.cache_dir,
        registry=registry_options(args),
        extra_repos=tuple(args.extra_repos),
        max_layers=args.max_layers,
        blueprint=args.blueprint,
        base=args.base,
    )
    result = build(opts)
    print_result(result, args.tag, args)
    return 0
