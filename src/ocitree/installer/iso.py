"""``ocitree iso``: put a kickstart (and files) on an installer ISO and boot it automatically.

What lorax's ``mkksiso`` does, with the same xorriso route: the ISO is never mounted or
unpacked. The boot configurations are extracted, every installer entry gets
``inst.ks=hd:LABEL=<volume id>:/<kickstart>`` (and ``--cmdline``), and xorriso writes a new
image from the old one with ``-boot_image any replay``, which keeps its El Torito boot
images and its isohybrid MBR/GPT. Unlike mkksiso, the grub.cfg inside the UEFI boot image
``images/efiboot.img`` is edited too, and an existing ``inst.ks=`` is replaced.

The new image is written next to OUT under a temporary name and renamed at the end; on
any failure nothing is left behind.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ocitree.errors import UserError
from ocitree.installer import isofs
from ocitree.installer.bootcfg import ArgEdit, arg_key, edit_config, split_args, udev_escape
from ocitree.log import logger

# The boot configurations lorax writes (x86_64, aarch64, Mac) that carry kernel arguments.
BOOT_CONFIGS = (
    "isolinux/isolinux.cfg",
    "EFI/BOOT/grub.cfg",
    "EFI/BOOT/BOOT.conf",
    "boot/grub2/grub.cfg",
    "boot/grub/grub.cfg",
)
EFIBOOT = "images/efiboot.img"
# Top-level names on the ISO that --ks/--add may not replace.
RESERVED = frozenset({"isolinux", "images", "EFI", "boot", ".discinfo", ".treeinfo"})
KS_KEYS = frozenset({"inst.ks", "ks"})
MAX_VOLID = 32
BIG_FILE = 4 << 30


@dataclass(frozen=True)
class KsIsoResult:
    output: Path
    volid: str
    kickstart: str  # its path on the ISO, "/ks.cfg"
    kernel_args: tuple[str, ...]
    edited: dict[str, int] = field(default_factory=dict)  # config → installer entries edited
    added: tuple[str, ...] = ()
    md5_implanted: bool = False


def _read_kickstart(path: Path) -> str:
    if not path.is_file():
        raise UserError(f"kickstart {path} does not exist", hint="give a file with --ks")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = "\0"
    if "\0" in text:
        raise UserError(f"kickstart {path} is not a text file", hint="give a kickstart (.ks)")
    if not text.strip():
        raise UserError(f"kickstart {path} is empty")
    if any(c.isspace() or c in "\"':" for c in path.name):
        raise UserError(
            f"kickstart name {path.name!r} cannot go on a kernel command line",
            hint="rename it without spaces, quotes or colons, e.g. ks.cfg",
        )
    if path.name in RESERVED:
        raise UserError(
            f"kickstart name {path.name!r} would replace /{path.name} of the installer",
            hint="rename it, e.g. ks.cfg",
        )
    return path.name


def _check_paths(input_iso: Path, output_iso: Path, force: bool) -> None:
    if not input_iso.exists():
        raise UserError(f"{input_iso} does not exist", hint="give the installer ISO to edit")
    if not input_iso.is_file():
        raise UserError(f"{input_iso} is not a file", hint="give the installer ISO to edit")
    if output_iso.resolve() == input_iso.resolve() or (
        output_iso.exists() and output_iso.samefile(input_iso)
    ):
        raise UserError("OUT is the input ISO", hint="write the new ISO to another path")
    if not output_iso.parent.is_dir():
        raise UserError(f"directory {output_iso.parent} does not exist")
    if output_iso.exists() and not force:
        raise UserError(f"{output_iso} already exists", hint="use --force to replace it")
    if output_iso.is_dir():
        raise UserError(f"{output_iso} is a directory", hint="give a file name for the new ISO")


def _check_adds(add: Sequence[Path], ks_name: str) -> list[tuple[Path, str]]:
    seen = {ks_name}
    out = []
    for p in add:
        if not p.exists():
            raise UserError(f"--add {p} does not exist")
        name = p.resolve().name
        if name in RESERVED:
            raise UserError(f"--add {p} would replace /{name} of the installer")
        if name in seen:
            raise UserError(f"two files would be /{name} on the ISO", hint="rename one")
        seen.add(name)
        out.append((p, name))
    return out


def _check_volid(volid: str) -> str:
    if not volid or len(volid) > MAX_VOLID:
        raise UserError(f"volume id {volid!r} must have 1 to {MAX_VOLID} characters")
    if not volid.isascii() or not volid.isprintable() or any(c in "'\"\\" for c in volid):
        raise UserError(
            f"volume id {volid!r} has characters a boot loader cannot quote",
            hint="use letters, digits, '-', '_', '.' and spaces",
        )
    return volid


def _kernel_args(cmdline: str) -> tuple[str, ...]:
    args = tuple(split_args(cmdline))
    if any(arg_key(a) in KS_KEYS for a in args):
        raise UserError("--cmdline may not set inst.ks", hint="give the kickstart with --ks")
    return args


def _has_big_file(paths: Sequence[Path]) -> bool:
    for p in paths:
        if p.is_file() and p.stat().st_size >= BIG_FILE:
            return True
        for top, _dirs, files in os.walk(p):
            if any((Path(top) / f).stat().st_size >= BIG_FILE for f in files):
                return True
    return False


def _edit_files(tree: Path, names: Sequence[str], edit: ArgEdit, label: str) -> dict[str, int]:
    counts = {}
    for name in names:
        path = tree / name
        text, n = edit_config(name, path.read_text(errors="surrogateescape"), edit)
        path.write_text(text, errors="surrogateescape")
        counts[f"{label}{name}"] = n
    return counts


def _edit_efiboot(image: Path, work: Path, edit: ArgEdit) -> dict[str, int]:
    """Edit the GRUB configuration inside the UEFI El Torito image (a FAT file system)."""
    counts = {}
    for name in isofs.fat_files(image):
        if name.rsplit("/", 1)[-1].lower() not in ("grub.cfg", "boot.conf"):
            continue
        local = work / "efiboot-cfg"
        isofs.fat_read(image, name, local)
        counts.update(_edit_files(work, ["efiboot-cfg"], edit, ""))
        counts[f"{EFIBOOT}:{name}"] = counts.pop("efiboot-cfg")
        isofs.fat_write(image, local, name)
        local.unlink()
    return counts


def make_ks_iso(
    input_iso: Path,
    output_iso: Path,
    kickstart: Path,
    *,
    add: Sequence[Path] = (),
    cmdline: str = "",
    rm_args: Sequence[str] = (),
    volid: str | None = None,
    force: bool = False,
    implant_md5: bool = True,
) -> KsIsoResult:
    """Write ``output_iso``: ``input_iso`` with the kickstart, ``add`` files and boot args."""
    input_iso, output_iso, kickstart = (
        input_iso.absolute(),
        output_iso.absolute(),
        kickstart.absolute(),
    )
    add = [p.absolute() for p in add]
    _check_paths(input_iso, output_iso, force)
    ks_name = _read_kickstart(kickstart)
    adds = _check_adds(add, ks_name)
    extra = _kernel_args(cmdline)
    new_volid = _check_volid(volid) if volid is not None else None
    info = isofs.read_iso(input_iso)
    final_volid = new_volid or info.volid
    ks_arg = f"inst.ks=hd:LABEL={udev_escape(final_volid)}:/{ks_name}"
    relabel = new_volid is not None and new_volid != info.volid
    edit = ArgEdit(
        add=(*extra, ks_arg),
        remove=frozenset(rm_args),
        replace=KS_KEYS,
        relabel=(udev_escape(info.volid), udev_escape(final_volid)) if relabel else None,
        raw_relabel=(info.volid, final_volid) if relabel else None,
    )
    configs = [c for c in BOOT_CONFIGS if c in info.files]
    work = Path(tempfile.mkdtemp(prefix=f".{output_iso.name}.", dir=output_iso.parent))
    try:
        tree = work / "tree"
        efiboot = EFIBOOT in info.files
        isofs.extract(input_iso, [*configs, *([EFIBOOT] if efiboot else [])], tree)
        edited = _edit_files(tree, configs, edit, "")
        if efiboot:
            edited.update(_edit_efiboot(tree / EFIBOOT, work, edit))
        if not any(edited.values()):
            raise UserError(
                f"{input_iso} has no installer boot entry to add inst.ks= to",
                hint=f"ocitree iso edits {', '.join(BOOT_CONFIGS)} and {EFIBOOT}",
            )
        for name, n in edited.items():
            logger.info("%s: %d boot entries", name, n)
        updates = [(tree / c, c) for c in configs] + (
            [(tree / EFIBOOT, EFIBOOT)] if efiboot else []
        )
        maps = [(kickstart, ks_name), *adds]
        new_iso = work / "out.iso"
        isofs.write_iso(
            input_iso,
            new_iso,
            updates=updates,
            removes=[name for _p, name in maps if name in info.files],
            maps=maps,
            volid=final_volid if relabel else None,
            joliet=info.joliet,
            big_files=_has_big_file([p for p, _ in adds]),
        )
        before, after = isofs.boot_catalog(input_iso), isofs.boot_catalog(new_iso)
        if before != after:
            raise UserError(
                "the new ISO does not boot like the input",
                hint=f"El Torito/MBR before: {before}; after: {after}",
            )
        md5 = implant_md5 and isofs.implant_md5(new_iso)
        os.replace(new_iso, output_iso)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return KsIsoResult(
        output=output_iso,
        volid=final_volid,
        kickstart="/" + ks_name,
        kernel_args=edit.add,
        edited=edited,
        added=tuple("/" + name for _p, name in adds),
        md5_implanted=md5,
    )
