"""What ``ocitree iso`` reads from and writes into ISO images: xorriso and mtools calls,
and a direct look at the ISO 9660 volume descriptors."""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ocitree.errors import UserError
from ocitree.run import find_tool, run

SECTOR = 2048
_MTOOLS_ENV = {"MTOOLS_SKIP_CHECK": "1"}
_JOLIET_ESCAPES = (b"%/@", b"%/C", b"%/E")


@dataclass(frozen=True)
class IsoInfo:
    volid: str
    files: frozenset[str]  # every path on the ISO, without the leading "/"
    joliet: bool


def read_descriptors(path: Path) -> tuple[bool, bool]:
    """Return (is ISO 9660, has Joliet) from the volume descriptors at sector 16 on."""
    with path.open("rb") as f:
        f.seek(16 * SECTOR)
        iso = joliet = False
        for _ in range(64):
            vd = f.read(SECTOR)
            if len(vd) < SECTOR or vd[1:6] != b"CD001":
                break
            iso = iso or vd[0] == 1
            if vd[0] == 2 and vd[88:91] in _JOLIET_ESCAPES:
                joliet = True
            if vd[0] == 255:
                break
    return iso, joliet


def xorriso() -> str:
    return find_tool("xorriso", package="xorriso")


def read_iso(path: Path) -> IsoInfo:
    """The volume id and file list of an ISO image."""
    iso, joliet = read_descriptors(path)
    if not iso:
        raise UserError(
            f"{path} is not an ISO 9660 image", hint="give an installer ISO such as boot.iso"
        )
    proc = run(
        [xorriso(), "-indev", path, "-pkt_output", "on", "-pvd_info", "-find", "/"],
        hint=f"is {path} a readable ISO image?",
    )
    volid = ""
    files: set[str] = set()
    for raw in proc.stdout.decode(errors="surrogateescape").splitlines():
        if not raw.startswith("R:1: "):
            continue
        line = raw[5:]
        if line.startswith("Volume Id    :"):
            volid = line.split(":", 1)[1].strip()
        elif line.startswith("'/"):
            name = shlex.split(line)[0].lstrip("/")
            if name:
                files.add(name)
    if not volid:
        raise UserError(f"{path} has no volume id", hint="give one with --volid")
    return IsoInfo(volid, frozenset(files), joliet)


def extract(iso: Path, paths: Sequence[str], dest: Path) -> None:
    """Copy files out of the ISO into ``dest``, keeping their paths, writable."""
    argv: list[str | Path] = [xorriso(), "-osirrox", "on", "-indev", iso]
    for p in paths:
        (dest / p).parent.mkdir(parents=True, exist_ok=True)
        argv += ["-extract", "/" + p, dest / p]
    run(argv, hint=f"could not read files from {iso}")
    for p in paths:
        (dest / p).chmod(0o644)


def boot_catalog(iso: Path) -> list[str]:
    """The El Torito boot entries and the system area (MBR/GPT) summary, without addresses.

    Two images with the same list boot the same way: same platforms, emulation, load
    sizes, boot-info-table and isohybrid options.
    """
    proc = run([xorriso(), "-indev", iso, "-report_el_torito", "plain"])
    out = []
    for line in proc.stdout.decode(errors="replace").splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "El Torito boot img":
            out.append(f"{key}: {' '.join(value.split()[:-1])}")  # the LBA moves
        elif key in ("El Torito img path", "El Torito img opts", "El Torito cat path"):
            out.append(f"{key}: {' '.join(value.split())}")
    proc = run([xorriso(), "-indev", iso, "-report_system_area", "plain"])
    for line in proc.stdout.decode(errors="replace").splitlines():
        if line.startswith("System area summary"):
            out.append(" ".join(line.split()))
    return out


def fat_files(image: Path) -> list[str]:
    """Every file in a FAT image (``images/efiboot.img``), as ``EFI/BOOT/grub.cfg``."""
    find_tool("mdir", package="mtools")
    proc = run(
        ["mdir", "-i", image, "-/", "-b", "::"],
        env=_MTOOLS_ENV,
        hint=f"{image.name} is not a FAT image mtools can read",
    )
    names = []
    for line in proc.stdout.decode(errors="surrogateescape").splitlines():
        if line.startswith("::/") and not line.endswith("/"):
            names.append(line[3:])
    return names


def fat_read(image: Path, name: str, dest: Path) -> None:
    run(["mcopy", "-n", "-i", image, f"::{name}", dest], env=_MTOOLS_ENV)
    dest.chmod(0o644)


def fat_write(image: Path, src: Path, name: str) -> None:
    run(
        ["mcopy", "-o", "-i", image, src, f"::{name}"],
        env=_MTOOLS_ENV,
        hint=f"is {image.name} full? its grub.cfg grows by the new arguments",
    )


def write_iso(
    source: Path,
    out: Path,
    *,
    updates: Sequence[tuple[Path, str]],
    removes: Sequence[str],
    maps: Sequence[tuple[Path, str]],
    volid: str | None,
    joliet: bool,
    big_files: bool,
) -> None:
    """Write ``out`` from ``source`` with files replaced/added, replaying its boot setup."""
    argv: list[str | Path] = [xorriso(), "-indev", source, "-outdev", out]
    argv += ["-boot_image", "any", "replay"]
    if volid is not None:
        argv += ["-volid", volid]
    if joliet:
        argv += ["-joliet", "on"]
    if big_files:
        argv += ["-compliance", "iso_9660_level=3"]
    for disk, iso_path in updates:
        argv += ["-update", disk, "/" + iso_path]
    for iso_path in removes:
        argv += ["-rm_r", "/" + iso_path, "--"]
    for disk, iso_path in maps:
        argv += ["-map", disk, "/" + iso_path]
    run(argv, hint="xorriso could not write the new ISO")


def implant_md5(iso: Path) -> bool:
    """Implant the media check checksum (``rd.live.check``) if ``implantisomd5`` exists."""
    try:
        find_tool("implantisomd5", package="isomd5sum")
    except UserError:
        return False
    run(["implantisomd5", "--force", iso])
    return True
