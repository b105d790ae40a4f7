"""``ocitree rebase|upgrade|rollback|status``: a device's OS from container images."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ocitree.cli.options import add_json, add_registry_options, human_size, registry_options
from ocitree.cli.output import print_json, print_table, progress_bar
from ocitree.device.sysroot import DeploymentInfo, Device
from ocitree.device.update import UpdateResult, rebase, upgrade


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    device = argparse.ArgumentParser(add_help=False)
    device.add_argument(
        "--sysroot", type=Path, default=Path("/"), help="the device's ostree sysroot (default: /)"
    )
    device.add_argument("--os", dest="osname", help="the stateroot (default: the current one)")

    p = sub.add_parser(
        "rebase",
        parents=[common, device],
        help="switch the device to an OS image",
        description="Pull an OS image (only the "
        "layers the device lacks) and make it the new default deployment; the current one "
        "stays as rollback.",
        epilog="example: ocitree rebase ostree-unverified-registry:quay.io/example/os:1",
    )
    p.add_argument(
        "imgref",
        metavar="IMGREF",
        help="ostree-unverified-registry:HOST/NAME:TAG, "
        "ostree-unverified-image:oci:DIR, ostree-image-signed:docker://…",
    )
    _update_options(p)
    p.set_defaults(func=_rebase)

    p = sub.add_parser(
        "upgrade",
        parents=[common, device],
        help="update to the newest image of the same tag",
        description="Pull the image the default deployment came from and deploy it if it changed.",
        epilog="example: ocitree upgrade --check",
    )
    _update_options(p)
    p.set_defaults(func=_upgrade)

    p = sub.add_parser(
        "rollback",
        parents=[common, device],
        help="make the previous deployment the default again",
        epilog="example: ocitree rollback --sysroot /mnt/device",
    )
    add_json(p)
    p.set_defaults(func=_rollback)

    p = sub.add_parser(
        "status",
        parents=[common, device],
        help="show the deployments",
        epilog="example: ocitree status --json",
    )
    add_json(p)
    p.set_defaults(func=_status)


def _update_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--check", action="store_true", help="only report what would be fetched, change nothing"
    )
    add_registry_options(p)
    add_json(p)


def _device(args: argparse.Namespace) -> Device:
    return Device(args.sysroot, args.osname)


def _report(args: argparse.Namespace, result: UpdateResult) -> int:
    plan = result.plan
    data: dict[str, Any] = {
        "image": plan.imgref,
        "manifest_digest": plan.manifest_digest,
        "up_to_date": plan.up_to_date,
        "fetch_bytes": plan.fetch_bytes,
        "total_bytes": plan.total_bytes,
        "layers_to_fetch": sum(1 for layer in plan.layers if not layer.cached),
        "layers": len(plan.layers),
        "fetched_bytes": result.pulled.fetched_bytes if result.pulled else 0,
        "deployment": asdict(result.deployment) if result.deployment else None,
    }
    if args.json:
        print_json(data)
    elif not args.quiet:
        if args.check:
            print(
                f"{plan.imgref} {plan.manifest_digest}: "
                f"{'up to date' if plan.up_to_date else 'update available'}; "
                f"{data['layers_to_fetch']} of {data['layers']} layers to fetch, "
                f"{human_size(plan.fetch_bytes)} of {human_size(plan.total_bytes)}"
            )
        elif result.deployment is None:
            print(f"{plan.imgref}: already deployed ({plan.manifest_digest})")
        else:
            d = result.deployment
            print(
                f"Deployed {d.version or d.checksum[:12]} from {plan.imgref} "
                f"({human_size(data['fetched_bytes'])} fetched); reboot to use it"
            )
    return 0


def _rebase(args: argparse.Namespace) -> int:
    with progress_bar("Fetching", enabled=not (args.quiet or args.json)) as progress:
        result = rebase(
            _device(args), args.imgref, registry_options(args), check=args.check, progress=progress
        )
    return _report(args, result)


def _upgrade(args: argparse.Namespace) -> int:
    with progress_bar("Fetching", enabled=not (args.quiet or args.json)) as progress:
        result = upgrade(_device(args), registry_options(args), check=args.check, progress=progress)
    return _report(args, result)


def _rollback(args: argparse.Namespace) -> int:
    d = _device(args).rollback()
    if args.json:
        print_json(asdict(d))
    elif not args.quiet:
        print(
            f"Default is now {d.version or ''} {d.checksum[:12]} "
            f"({d.image_reference or d.origin_refspec or 'no origin'}); reboot to use it"
        )
    return 0


def _status(args: argparse.Namespace) -> int:
    deps = _device(args).deployments()
    if args.json:
        print_json({"deployments": [asdict(d) for d in deps]})
        return 0
    rows = [_row(d) for d in deps]
    print_table(
        f"Deployments of {args.sysroot}",
        ["", "OS", "Version", "Image", "Digest", "Commit", "Timestamp"],
        rows,
    )
    return 0


def _row(d: DeploymentInfo) -> list[str]:
    marks = "".join(
        m
        for m, on in (
            ("*", d.booted),
            ("D", d.default),
            ("R", d.rollback),
            ("S", d.staged),
            ("P", d.pinned),
        )
        if on
    )
    when = datetime.fromtimestamp(d.timestamp, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    digest = (d.manifest_digest or "")[7:19]
    return [
        marks,
        d.osname,
        d.version or "-",
        d.image_reference or d.origin_refspec or "-",
        digest or "-",
        d.checksum[:12],
        when,
    ]
