"""A small installer ISO with lorax's layout, made with xorriso, for the ``ocitree iso`` tests.

The kernels and EFI binaries are stand-in files: nothing here boots, but the El Torito
catalog, the isohybrid MBR/GPT, the volume id and every boot configuration are laid out
the way lorax lays them out on a RHEL/Fedora boot.iso.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ocitree.run import run

VOLID = "RHEL-9-2-0-BaseOS-x86_64"
ISOLINUX_BIN = Path("/usr/lib/ISOLINUX/isolinux.bin")
ISOHDPFX = Path("/usr/lib/ISOLINUX/isohdpfx.bin")
LDLINUX = Path("/usr/lib/syslinux/modules/bios/ldlinux.c32")
TOOLS = ("xorriso", "mcopy", "mtype", "mkfs.fat")

ISOLINUX_CFG = """\
default vesamenu.c32
timeout 600

display boot.msg

menu clear
menu background splash.png
menu title Red Hat Enterprise Linux 9.2
menu vshift 8

label linux
  menu label ^Install Red Hat Enterprise Linux 9.2
  kernel vmlinuz
  append initrd=initrd.img inst.stage2=hd:LABEL={volid} quiet

label check
  menu label Test this ^media & install Red Hat Enterprise Linux 9.2
  menu default
  kernel vmlinuz
  append initrd=initrd.img inst.stage2=hd:LABEL={volid} rd.live.check quiet

menu separator # insert an empty line

menu begin ^Troubleshooting
  menu title Troubleshooting Red Hat Enterprise Linux 9.2

label basic
  menu indent count 5
  menu label Install using ^basic graphics mode
  text help
	Try this option out if you're having trouble installing
	Red Hat Enterprise Linux 9.2.
  endtext
  kernel vmlinuz
  append initrd=initrd.img inst.stage2=hd:LABEL={volid} nomodeset quiet

label memtest
  menu label Run a ^memory test
  kernel memtest

label local
  menu label Boot from ^local drive
  localboot 0xffff

menu end
"""

GRUB_EFI_CFG = """\
set default="1"

function load_video {{
  insmod efi_gop
  insmod efi_uga
  insmod video_bochs
  insmod video_cirrus
  insmod all_video
}}

load_video
set gfxpayload=keep
insmod gzio
insmod part_gpt
insmod ext2

set timeout=60
### END /etc/grub.d/00_header ###

search --no-floppy --set=root -l '{volid}'

### BEGIN /etc/grub.d/10_linux ###
menuentry 'Install Red Hat Enterprise Linux 9.2' --class fedora --class gnu-linux {{
	linuxefi /images/pxeboot/vmlinuz inst.stage2=hd:LABEL={volid} quiet
	initrdefi /images/pxeboot/initrd.img
}}
menuentry 'Test this media & install Red Hat Enterprise Linux 9.2' --class fedora {{
	linuxefi /images/pxeboot/vmlinuz inst.stage2=hd:LABEL={volid} rd.live.check quiet
	initrdefi /images/pxeboot/initrd.img
}}
submenu 'Troubleshooting -->' {{
	menuentry 'Install Red Hat Enterprise Linux 9.2 in basic graphics mode' --class fedora {{
		linuxefi /images/pxeboot/vmlinuz inst.stage2=hd:LABEL={volid} nomodeset quiet
		initrdefi /images/pxeboot/initrd.img
	}}
	menuentry 'Rescue a Red Hat Enterprise Linux system' --class fedora --class gnu-linux {{
		linuxefi /images/pxeboot/vmlinuz inst.stage2=hd:LABEL={volid} inst.rescue quiet
		initrdefi /images/pxeboot/initrd.img
	}}
}}
"""

GRUB_BIOS_CFG = """\
set default="1"

function load_video {{
  insmod all_video
}}

load_video
set gfxpayload=keep
insmod gzio
insmod part_gpt
insmod ext2
insmod chain

set timeout=60
### END /etc/grub.d/00_header ###

search --no-floppy --set=root -l '{volid}'

### BEGIN /etc/grub.d/10_linux ###
menuentry 'Install Red Hat Enterprise Linux 9.2' --class fedora --class gnu-linux {{
	linux /images/pxeboot/vmlinuz inst.stage2=hd:LABEL={volid} quiet
	initrd /images/pxeboot/initrd.img
}}
menuentry 'Test this media & install Red Hat Enterprise Linux 9.2' --class fedora {{
	linux /images/pxeboot/vmlinuz inst.stage2=hd:LABEL={volid} rd.live.check quiet
	initrd /images/pxeboot/initrd.img
}}
submenu 'Troubleshooting -->' {{
	menuentry 'Install Red Hat Enterprise Linux 9.2 in basic graphics mode' --class fedora {{
		linux /images/pxeboot/vmlinuz inst.stage2=hd:LABEL={volid} nomodeset quiet
		initrd /images/pxeboot/initrd.img
	}}
	menuentry 'Run a memory test' {{
		linux /images/pxeboot/memtest
	}}
	menuentry 'Boot first drive' --class fedora --class gnu-linux {{
		chainloader (hd0)+1
	}}
}}
"""

# The installer kernel entries in each configuration above (memtest and local boot excluded).
INSTALLER_ENTRIES = {
    "isolinux/isolinux.cfg": 3,
    "EFI/BOOT/grub.cfg": 4,
    "boot/grub2/grub.cfg": 3,
    "images/efiboot.img:EFI/BOOT/grub.cfg": 4,
}


def _efiboot(tree: Path, work: Path, volid: str) -> None:
    """``images/efiboot.img``: a FAT image with the EFI loader and its own grub.cfg."""
    img = tree / "images" / "efiboot.img"
    run(["mkfs.fat", "-C", "-n", "ANACONDA", img, "2048"])
    cfg = work / "efi-grub.cfg"
    cfg.write_text(GRUB_EFI_CFG.format(volid=volid))
    loader = work / "BOOTX64.EFI"
    loader.write_bytes(b"MZ stand-in shim\n" * 64)
    env = {"MTOOLS_SKIP_CHECK": "1"}
    run(["mmd", "-i", img, "::EFI", "::EFI/BOOT"], env=env)
    run(["mcopy", "-i", img, loader, "::EFI/BOOT/BOOTX64.EFI"], env=env)
    run(["mcopy", "-i", img, cfg, "::EFI/BOOT/grub.cfg"], env=env)


def make_tree(tree: Path, work: Path, *, volid: str = VOLID, bios_grub: bool = True) -> None:
    """Lay out a lorax-like boot.iso tree under ``tree``."""
    (tree / "isolinux").mkdir(parents=True)
    (tree / "images" / "pxeboot").mkdir(parents=True)
    (tree / "EFI" / "BOOT").mkdir(parents=True)
    shutil.copyfile(ISOLINUX_BIN, tree / "isolinux" / "isolinux.bin")
    shutil.copyfile(LDLINUX, tree / "isolinux" / "ldlinux.c32")
    (tree / "isolinux" / "isolinux.cfg").write_text(ISOLINUX_CFG.format(volid=volid))
    for d in ("isolinux", "images/pxeboot"):
        (tree / d / "vmlinuz").write_bytes(b"stand-in kernel\n" * 256)
        (tree / d / "initrd.img").write_bytes(b"stand-in initrd\n" * 512)
    (tree / "images" / "install.img").write_bytes(b"stand-in squashfs\n" * 1024)
    (tree / "EFI" / "BOOT" / "grub.cfg").write_text(GRUB_EFI_CFG.format(volid=volid))
    (tree / "EFI" / "BOOT" / "BOOTX64.EFI").write_bytes(b"MZ stand-in shim\n" * 64)
    if bios_grub:
        (tree / "boot" / "grub2").mkdir(parents=True)
        (tree / "boot" / "grub2" / "grub.cfg").write_text(GRUB_BIOS_CFG.format(volid=volid))
    (tree / ".discinfo").write_text("1683000000.000000\nRed Hat Enterprise Linux 9.2\nx86_64\n")
    _efiboot(tree, work, volid)


def make_iso(tree: Path, iso: Path, *, volid: str = VOLID, isohybrid: bool = True) -> None:
    """Master ``tree`` with the El Torito setup lorax uses (BIOS isolinux + UEFI efiboot.img)."""
    argv: list[str | Path] = ["xorriso", "-as", "mkisofs", "-o", iso, "-R", "-J", "-V", volid]
    argv += ["-b", "isolinux/isolinux.bin", "-c", "isolinux/boot.cat", "-no-emul-boot"]
    argv += ["-boot-load-size", "4", "-boot-info-table"]
    argv += ["-eltorito-alt-boot", "-e", "images/efiboot.img", "-no-emul-boot"]
    if isohybrid:
        argv += ["-isohybrid-mbr", ISOHDPFX, "-isohybrid-gpt-basdat"]
    run([*argv, tree])


def installer_iso(base: Path, *, volid: str = VOLID, isohybrid: bool = True) -> Path:
    """Build the whole ISO under ``base`` and return its path."""
    tree = base / "tree"
    work = base / "work"
    work.mkdir(parents=True)
    make_tree(tree, work, volid=volid)
    iso = base / "boot.iso"
    make_iso(tree, iso, volid=volid, isohybrid=isohybrid)
    return iso
