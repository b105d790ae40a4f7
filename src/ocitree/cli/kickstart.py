"""``ocitree kickstart``: a kickstart that installs an ostree commit or container image with
MicroShift's LVM layout, validated with pykickstart (docs/installer.md)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ocitree.build import blueprint
from ocitree.errors import UserError
from ocitree.fsutil import atomic_write
from ocitree.installer.kickstart import (
    DEFAULT_VERSION,
    TRANSPORTS,
    CommitSource,
    ContainerSource,
    KickstartOptions,
    parse_size,
    read_auth_file,
    render,
)
from ocitree.log import logger

_PREFIXES = {"docker://": "registry", "registry:": "registry", "oci:": "oci"}
_PREFIXES["oci-archive:"] = "oci-archive"


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "kickstart",
        parents=[common],
        help="write a kickstart with MicroShift's disk layout",
        description="Write a kickstart that installs an ostree commit (--ostree-url) or an "
        "ostree container image (--container) with MicroShift's LVM layout, validated with "
        "pykickstart.",
        epilog="examples: ocitree kickstart --ostree-url http://10.0.2.2:8000/repo "
        "--ref rhel/9/x86_64/edge --nogpg -o edge.ks; ocitree kickstart --container "
        "quay.io/org/microshift:4.15 --auth-file auth.json --pull-secret pull-secret.json "
        "--blueprint installer.toml -o microshift.ks",
    )
    commit = p.add_argument_group("install an ostree commit (ostreesetup)")
    commit.add_argument("--ostree-url", metavar="URL", help="the repository: http(s):// or file://")
    commit.add_argument("--ref", help="the ref (or commit checksum) to install")
    commit.add_argument("--osname", help="the stateroot (default: rhel; images: anaconda's)")
    commit.add_argument("--remote", help="the name of the ostree remote (default: the osname)")
    commit.add_argument("--nogpg", action="store_true", help="do not verify GPG signatures")
    image = p.add_argument_group("install an ostree container image (ostreecontainer)")
    image.add_argument(
        "--container", metavar="IMAGE", help="HOST/NAME[:TAG], docker://..., oci:/PATH[:TAG]"
    )
    image.add_argument("--transport", choices=TRANSPORTS, help="default: registry")
    image.add_argument("--no-signature-verification", action="store_true")
    disk = p.add_argument_group("disk layout")
    disk.add_argument(
        "--root-size", default="10G", metavar="SIZE", help="size of / (MiB, or 10G; default 10G)"
    )
    disk.add_argument(
        "--vg", default="rhel", metavar="NAME", help="volume group name (default: rhel)"
    )
    disk.add_argument("--disk", help="use only this disk (e.g. vda)")
    disk.add_argument(
        "--reqpart",
        action="store_true",
        help="let anaconda make the platform's boot partitions instead of /boot/efi + /boot",
    )
    system = p.add_argument_group("system")
    system.add_argument(
        "--version",
        dest="ks_version",
        default=DEFAULT_VERSION,
        metavar="VERSION",
        help=f"pykickstart version name, e.g. RHEL8, RHEL10, F40 (default: {DEFAULT_VERSION})",
    )
    system.add_argument("--blueprint", type=Path, metavar="FILE", help="users, groups, keys, ...")
    system.add_argument("--hostname")
    system.add_argument("--lang", help="default: the blueprint's, else en_US.UTF-8")
    system.add_argument("--keyboard", help="default: the blueprint's, else us")
    system.add_argument("--timezone", help="default: the blueprint's, else UTC")
    system.add_argument("--root-password-hash", metavar="HASH", help="default: root is locked")
    secrets = p.add_argument_group("credentials (written in %post, mode 0600)")
    secrets.add_argument("--auth-file", type=Path, metavar="FILE", help="-> /etc/ostree/auth.json")
    secrets.add_argument(
        "--pull-secret", type=Path, metavar="FILE", help="-> /etc/crio/openshift-pull-secret"
    )
    p.add_argument("-o", "--output", type=Path, metavar="FILE", help="default: stdout")
    p.set_defaults(func=run)


def _source(args: argparse.Namespace) -> CommitSource | ContainerSource:
    commit = [f for f in ("ostree_url", "ref", "nogpg") if getattr(args, f)]
    if args.container:
        if commit:
            flags = ", ".join("--" + f.replace("_", "-") for f in commit)
            raise UserError(f"--container cannot be combined with {flags}")
        image, transport = args.container, args.transport
        for prefix, name in _PREFIXES.items():
            if image.startswith(prefix):
                if transport and transport != name:
                    raise UserError(f"{args.container} is not a {transport} reference")
                image, transport = image[len(prefix) :].removeprefix("//"), name
                break
        return ContainerSource(
            image,
            transport or "registry",
            stateroot=args.osname,
            remote=args.remote,
            verify_signatures=not args.no_signature_verification,
        )
    if args.transport or args.no_signature_verification:
        raise UserError("--transport and --no-signature-verification need --container")
    if not args.ostree_url or not args.ref:
        raise UserError(
            "give --ostree-url URL --ref REF (a commit) or --container IMAGE (an image)",
            hint="ocitree kickstart --ostree-url http://HOST/repo --ref rhel/9/x86_64/edge",
        )
    return CommitSource(
        args.ostree_url, args.ref, args.osname or "rhel", args.remote, not args.nogpg
    )


def _write(path: Path, text: str, mode: int) -> None:
    if not path.parent.is_dir():
        raise UserError(f"cannot write {path}: {path.parent} is not a directory")
    if path.is_dir():
        raise UserError(f"cannot write {path}: it is a directory")
    try:
        atomic_write(path, text.encode("utf-8"), mode=mode)
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror or e}") from e


def run(args: argparse.Namespace) -> int:
    options = KickstartOptions(
        source=_source(args),
        version=args.ks_version,
        root_size_mib=parse_size(args.root_size),
        volume_group=args.vg,
        disk=args.disk,
        reqpart=args.reqpart,
        lang=args.lang,
        keyboard=args.keyboard,
        timezone=args.timezone,
        hostname=args.hostname,
        root_password=args.root_password_hash,
        blueprint=blueprint.load(args.blueprint, compose=True) if args.blueprint else None,
        auth_json=read_auth_file(args.auth_file) if args.auth_file else None,
        pull_secret=read_auth_file(args.pull_secret, "pull secret") if args.pull_secret else None,
    )
    text = render(options)
    if args.output is None:
        sys.stdout.write(text)
        return 0
    _write(args.output, text, 0o600 if options.has_secrets else 0o644)
    logger.info("Wrote %s (pykickstart %s: valid)", args.output, options.version.upper())
    return 0
