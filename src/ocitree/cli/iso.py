"""``ocitree iso``: an installer ISO that runs a kickstart (what lorax's mkksiso does)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ocitree.cli.options import add_json
from ocitree.cli.output import print_fields, print_json
from ocitree.installer.iso import make_ks_iso


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "iso",
        parents=[common],
        help="add a kickstart (and files) to an installer ISO",
        description="Write OUT.iso: IN.iso with the kickstart at its root and "
        "inst.ks=hd:LABEL=<volume id>:/<kickstart> on every installer boot entry (isolinux, "
        "GRUB for BIOS and UEFI, and the grub.cfg inside images/efiboot.img). The volume id "
        "and the El Torito boot images (BIOS and UEFI, isohybrid MBR/GPT) are kept.",
        epilog="example: ocitree iso --ks microshift.ks --add ./container "
        '--cmdline "console=ttyS0" rhel-9.2-boot.iso microshift.iso',
    )
    p.add_argument("--ks", type=Path, required=True, metavar="KS", help="the kickstart file")
    p.add_argument(
        "--add",
        type=Path,
        action="append",
        default=[],
        metavar="PATH",
        help="file or directory to put at the ISO root under its name, e.g. an oci: image "
        "layout for an offline install (repeatable)",
    )
    p.add_argument(
        "--cmdline", default="", metavar="ARGS", help="kernel arguments to add to every entry"
    )
    p.add_argument(
        "--rm-args",
        default="",
        metavar="NAMES",
        help="kernel arguments to remove from every entry, by name (e.g. 'quiet rhgb')",
    )
    p.add_argument(
        "--volid",
        metavar="NEW",
        help="new volume id (LABEL= references in the boot entries are updated)",
    )
    p.add_argument("--force", action="store_true", help="replace OUT if it exists")
    p.add_argument(
        "--no-md5sum",
        action="store_true",
        help="do not run implantisomd5 on OUT even if it is installed",
    )
    p.add_argument("input", type=Path, metavar="IN.iso", help="the installer ISO (not changed)")
    p.add_argument("output", type=Path, metavar="OUT.iso", help="the ISO to write")
    add_json(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    result = make_ks_iso(
        args.input,
        args.output,
        args.ks,
        add=args.add,
        cmdline=args.cmdline,
        rm_args=args.rm_args.split(),
        volid=args.volid,
        force=args.force,
        implant_md5=not args.no_md5sum,
    )
    if args.json:
        print_json(
            {
                "output": str(result.output),
                "volume_id": result.volid,
                "kickstart": result.kickstart,
                "kernel_args": list(result.kernel_args),
                "boot_entries": result.edited,
                "added": list(result.added),
                "md5_implanted": result.md5_implanted,
            }
        )
        return 0
    entries = ", ".join(f"{name} ({n})" for name, n in result.edited.items() if n)
    print_fields(
        [
            ("ISO", str(result.output)),
            ("Volume id", result.volid),
            ("Kickstart", result.kickstart),
            ("Kernel arguments added", " ".join(result.kernel_args)),
            ("Boot entries edited", entries),
            ("Added", ", ".join(result.added) or "-"),
        ]
    )
    return 0
