"""Kernel argument editing in isolinux and GRUB configurations (no ISO needed)."""

from __future__ import annotations

from ocitree.installer.bootcfg import ArgEdit, edit_grub, edit_isolinux, split_args, udev_escape

KS = "inst.ks=hd:LABEL=X:/ks.cfg"
EDIT = ArgEdit(add=("console=ttyS0", KS), replace=frozenset({"inst.ks", "ks"}))

ISOLINUX = """\
label linux
  menu label ^Install
  kernel vmlinuz
  append initrd=initrd.img inst.stage2=hd:LABEL=X inst.ks=http://old/ks quiet
label memtest
  kernel memtest
  append foo
label local
  localboot 0xffff
"""

GRUB = """\
search --no-floppy --set=root -l 'X'\r
menuentry 'Install' {\r
\tlinuxefi /images/pxeboot/vmlinuz inst.stage2=hd:LABEL=X ks=cdrom:/old.ks quiet\r
\tinitrdefi /images/pxeboot/initrd.img\r
}\r
menuentry 'memtest' {\r
\tlinux /images/pxeboot/memtest\r
}\r
"""


def test_udev_escape_like_lorax() -> None:
    assert udev_escape("Test Only") == "Test\\x20Only"
    assert udev_escape("RHEL-9-2-0-BaseOS-x86_64") == "RHEL-9-2-0-BaseOS-x86_64"
    assert udev_escape("a/b(c)") == "a\\x2fb\\x28c\\x29"


def test_split_args_keeps_quoted_values() -> None:
    assert split_args('a=1  b="x y"\tc') == ["a=1", 'b="x y"', "c"]


def test_isolinux_replaces_ks_and_skips_non_kernel_labels() -> None:
    text, n = edit_isolinux(ISOLINUX, EDIT)
    assert n == 1
    lines = text.splitlines()
    assert lines[3] == (
        "  append initrd=initrd.img inst.stage2=hd:LABEL=X quiet console=ttyS0 " + KS
    )
    assert "  append foo" in lines  # the memtest label is left alone
    assert edit_isolinux(text, EDIT) == (text, 1)


def test_grub_keeps_crlf_and_is_idempotent() -> None:
    text, n = edit_grub(GRUB, EDIT)
    assert n == 1
    assert (
        "\tlinuxefi /images/pxeboot/vmlinuz inst.stage2=hd:LABEL=X quiet console=ttyS0 "
        + KS
        + "\r\n"
    ) in text
    assert "\tlinux /images/pxeboot/memtest\r\n" in text
    assert edit_grub(text, EDIT) == (text, 1)


def test_relabel_and_remove() -> None:
    edit = ArgEdit(
        add=("inst.ks=hd:LABEL=New\\x20Id:/ks.cfg",),
        remove=frozenset({"quiet"}),
        replace=frozenset({"inst.ks", "ks"}),
        relabel=("X", "New\\x20Id"),
        raw_relabel=("X", "New Id"),
    )
    text, _ = edit_grub(GRUB, edit)
    assert "search --no-floppy --set=root -l 'New Id'\r\n" in text
    assert "inst.stage2=hd:LABEL=New\\x20Id inst.ks=hd:LABEL=New\\x20Id:/ks.cfg\r\n" in text
    assert "quiet" not in text
