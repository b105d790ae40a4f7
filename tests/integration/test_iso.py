"""``ocitree iso`` on a lorax-like boot.iso, checked with xorriso, pycdlib and mtools."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from ocitree.cli.main import main
from ocitree.installer.bootcfg import GRUB_KERNEL_COMMANDS
from ocitree.installer.iso import make_ks_iso
from ocitree.run import run
from support.images import ocitree
from support.isos import INSTALLER_ENTRIES, ISOLINUX_BIN, TOOLS, VOLID, installer_iso

pycdlib = pytest.importorskip("pycdlib")

pytestmark = pytest.mark.integration

KS = b"text\nostreecontainer --transport oci --url /run/install/repo/container\nreboot\n"
CMDLINE = 'console=ttyS0,115200 rd.foo="a b"'
KS_ARG = f"inst.ks=hd:LABEL={VOLID}:/ks.cfg"
CONFIGS = ("isolinux/isolinux.cfg", "EFI/BOOT/grub.cfg", "boot/grub2/grub.cfg")


def _require() -> None:
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed")
    if not ISOLINUX_BIN.exists():
        pytest.skip(f"{ISOLINUX_BIN} missing (isolinux package)")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass(frozen=True)
class Made:
    src: Path
    src_sha256: str
    ks: Path
    container: Path
    out: Path
    out_json: dict[str, object]


def _container(base: Path) -> Path:
    """A stand-in ``oci:`` image layout directory."""
    d = base / "container"
    (d / "blobs" / "sha256").mkdir(parents=True)
    (d / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (d / "index.json").write_text('{"schemaVersion": 2, "manifests": []}')
    (d / "blobs" / "sha256" / ("ab" * 32)).write_bytes(b"layer bytes\n" * 100)
    return d


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Made:
    _require()
    base = tmp_path_factory.mktemp("iso")
    src = installer_iso(base / "src")
    ks = base / "ks.cfg"
    ks.write_bytes(KS)
    container = _container(base)
    out = base / "out" / "ks.iso"
    out.parent.mkdir()
    sha = _sha256(src)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        argv = ["iso", "--ks", ks, "--add", container, "--cmdline", CMDLINE, "--json", src, out]
        code = main([str(a) for a in argv])
    assert code == 0
    return Made(src, sha, ks, container, out, json.loads(buf.getvalue()))


def _read(iso: Path, path: str) -> bytes:
    p = pycdlib.PyCdlib()
    p.open(str(iso))
    try:
        out = io.BytesIO()
        p.get_file_from_iso_fp(out, rr_path=path)
        return out.getvalue()
    finally:
        p.close()


def _volid(iso: Path) -> str:
    p = pycdlib.PyCdlib()
    p.open(str(iso))
    try:
        return str(p.pvd.volume_identifier.decode().rstrip())
    finally:
        p.close()


def _efiboot_cfg(iso: Path, tmp: Path) -> str:
    img = tmp / f"{iso.stem}-efiboot.img"
    img.write_bytes(_read(iso, "/images/efiboot.img"))
    proc = run(["mtype", "-i", img, "::EFI/BOOT/grub.cfg"], env={"MTOOLS_SKIP_CHECK": "1"})
    return proc.stdout.decode()


def _configs(iso: Path, tmp: Path) -> dict[str, str]:
    out = {c: _read(iso, "/" + c).decode() for c in CONFIGS}
    out["images/efiboot.img:EFI/BOOT/grub.cfg"] = _efiboot_cfg(iso, tmp)
    return out


def _kernel_lines(name: str, text: str) -> list[str]:
    """The argument lines of the installer entries (not memtest, not local boot)."""
    lines = [ln.split() for ln in text.splitlines()]
    if name.endswith("isolinux.cfg"):
        return [" ".join(w) for w in lines if w and w[0] == "append"]
    return [
        " ".join(w)
        for w in lines
        if len(w) > 1 and w[0] in GRUB_KERNEL_COMMANDS and "memtest" not in w[1]
    ]


def _el_torito(iso: Path) -> list[list[str]]:
    proc = run(["xorriso", "-indev", iso, "-report_el_torito", "plain"])
    rows = []
    for line in proc.stdout.decode().splitlines():
        if line.startswith("El Torito boot img"):
            rows.append(line.split(":", 1)[1].split()[:-1])  # without the LBA
        elif line.startswith(("El Torito img path", "El Torito img opts")):
            rows.append(line.split(":", 1)[1].split())
    return rows


def _system_area(iso: Path) -> str:
    proc = run(["xorriso", "-indev", iso, "-report_system_area", "plain"])
    return next(
        (ln for ln in proc.stdout.decode().splitlines() if ln.startswith("System area summary")),
        "",
    )


def test_boot_images_are_kept(made: Made) -> None:
    before, after = _el_torito(made.src), _el_torito(made.out)
    assert before == after
    platforms = [r[1] for r in after if len(r) == 7]
    assert platforms == ["BIOS", "UEFI"]
    assert ["1", "/isolinux/isolinux.bin"] in after
    assert ["2", "/images/efiboot.img"] in after
    assert ["1", "boot-info-table", "isohybrid-suitable"] in after
    assert _system_area(made.out) == _system_area(made.src)
    assert "MBR isohybrid" in _system_area(made.out) and "GPT" in _system_area(made.out)


def test_volume_id_kickstart_and_added_files(made: Made) -> None:
    assert _volid(made.out) == VOLID
    assert _read(made.out, "/ks.cfg") == KS
    for f in made.container.rglob("*"):
        if f.is_file():
            rel = f.relative_to(made.container.parent).as_posix()
            assert _read(made.out, "/" + rel) == f.read_bytes(), rel
    # the installer's own files are still there
    assert _read(made.out, "/images/install.img") == _read(made.src, "/images/install.img")
    assert made.out_json["volume_id"] == VOLID
    assert made.out_json["added"] == ["/container"]


def test_every_boot_entry_gets_the_kickstart_once(made: Made, tmp_path: Path) -> None:
    configs = _configs(made.out, tmp_path)
    for name, text in configs.items():
        lines = _kernel_lines(name, text)
        assert len(lines) == INSTALLER_ENTRIES[name], name
        for line in lines:
            assert line.split().count(KS_ARG) == 1, (name, line)
            assert line.count("inst.ks=") == 1, (name, line)
            assert line.endswith(f"{CMDLINE} {KS_ARG}"), (name, line)
            assert f"inst.stage2=hd:LABEL={VOLID}" in line
    assert made.out_json["boot_entries"] == INSTALLER_ENTRIES
    # entries that do not boot the installer are left alone
    assert "\tlinux /images/pxeboot/memtest\n" in configs["boot/grub2/grub.cfg"]
    assert "  kernel memtest\n" in configs["isolinux/isolinux.cfg"]


def test_input_is_unchanged(made: Made) -> None:
    assert _sha256(made.src) == made.src_sha256


def test_media_check_sum_is_implanted(made: Made) -> None:
    """The installer's "Test this media" (rd.live.check) checks the implanted MD5."""
    checker = shutil.which("checkisomd5")
    if checker is None or shutil.which("implantisomd5") is None:
        pytest.skip("isomd5sum is not installed")
    assert made.out_json["md5_implanted"] is True
    assert run([checker, made.out], check=False).returncode == 0


def test_running_on_its_own_output_changes_nothing(
    made: Made, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    again = tmp_path / "again.iso"
    r = ocitree(
        capsys, "iso", "--ks", made.ks, "--add", made.container, "--cmdline", CMDLINE,
        made.out, again,
    )  # fmt: skip
    assert r.code == 0, r.err
    assert _configs(again, tmp_path) == _configs(made.out, tmp_path)
    assert _el_torito(again) == _el_torito(made.src)
    assert _read(again, "/ks.cfg") == KS


def test_new_volume_id_and_removed_args(
    made: Made, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "relabeled.iso"
    r = ocitree(
        capsys, "iso", "--ks", made.ks, "--volid", "Test Only", "--rm-args", "quiet",
        made.src, out,
    )  # fmt: skip
    assert r.code == 0, r.err
    assert _volid(out) == "Test Only"
    for name, text in _configs(out, tmp_path).items():
        assert VOLID not in text, name
        for line in _kernel_lines(name, text):
            words = line.split()
            assert "inst.ks=hd:LABEL=Test\\x20Only:/ks.cfg" in words, line
            assert "inst.stage2=hd:LABEL=Test\\x20Only" in words, line
            assert "quiet" not in words, line
        if "grub" in name:
            assert "search --no-floppy --set=root -l 'Test Only'" in text
    assert _el_torito(out) == _el_torito(made.src)


def test_plain_iso_without_isohybrid_stays_plain(tmp_path: Path) -> None:
    _require()
    src = installer_iso(tmp_path / "src", isohybrid=False)
    ks = tmp_path / "install.ks"
    ks.write_bytes(KS)
    result = make_ks_iso(src, tmp_path / "out.iso", ks)
    assert result.kickstart == "/install.ks"
    assert _el_torito(result.output) == _el_torito(src)
    assert "isohybrid" not in _system_area(result.output)
    assert _read(result.output, "/install.ks") == KS


def _bad(tmp: Path, made: Made) -> dict[str, tuple[list[str], str]]:
    notiso = tmp / "not.iso"
    notiso.write_bytes(b"\0" * 70000)
    empty = tmp / "empty.ks"
    empty.write_text("\n  \n")
    binary = tmp / "binary.ks"
    binary.write_bytes(b"\x7fELF\0\0\x01")
    taken = tmp / "taken.iso"
    taken.write_bytes(b"keep me")
    reserved = tmp / "images"  # a kickstart of that name would replace /images
    reserved.write_text("text\n")
    return {
        "missing iso": (["--ks", str(made.ks), str(tmp / "nope.iso")], "does not exist"),
        "not an iso": (["--ks", str(made.ks), str(notiso)], "not an ISO 9660 image"),
        "empty kickstart": (["--ks", str(empty), str(made.src)], "is empty"),
        "binary kickstart": (["--ks", str(binary), str(made.src)], "not a text file"),
        "missing kickstart": (["--ks", str(tmp / "no.ks"), str(made.src)], "does not exist"),
        "missing add": (
            ["--ks", str(made.ks), "--add", str(tmp / "nodir"), str(made.src)],
            "does not exist",
        ),
        "ks in cmdline": (
            ["--ks", str(made.ks), "--cmdline", "inst.ks=http://x/ks", str(made.src)],
            "--cmdline may not set inst.ks",
        ),
        "bad volid": (["--ks", str(made.ks), "--volid", "x" * 33, str(made.src)], "1 to 32"),
        "reserved ks name": (["--ks", str(reserved), str(made.src)], "would replace /images"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "missing iso",
        "not an iso",
        "empty kickstart",
        "binary kickstart",
        "missing kickstart",
        "missing add",
        "ks in cmdline",
        "bad volid",
        "reserved ks name",
    ],
)
def test_bad_input(
    case: str, made: Made, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args, words = _bad(tmp_path, made)[case]
    outdir = tmp_path / "out"
    outdir.mkdir()
    r = ocitree(capsys, "iso", *args, outdir / "new.iso")
    assert r.code == 1
    lines = r.err.strip().splitlines()
    assert lines[-1].startswith("ocitree: error:") and words in lines[-1], r.err
    assert "Traceback" not in r.err
    assert list(outdir.iterdir()) == []
    assert _sha256(made.src) == made.src_sha256


def test_out_exists_or_is_in(
    made: Made, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    taken = tmp_path / "taken.iso"
    taken.write_bytes(b"keep me")
    r = ocitree(capsys, "iso", "--ks", made.ks, made.src, taken)
    assert r.code == 1 and "already exists" in r.err and "--force" in r.err
    assert taken.read_bytes() == b"keep me"
    r = ocitree(capsys, "iso", "--ks", made.ks, "--force", made.src, made.src)
    assert r.code == 1 and "OUT is the input ISO" in r.err
    assert _sha256(made.src) == made.src_sha256
    r = ocitree(capsys, "iso", "--ks", made.ks, "--force", made.src, taken)
    assert r.code == 0, r.err
    assert _read(taken, "/ks.cfg") == KS
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken.iso"]


def test_iso_without_boot_config(
    made: Made, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "README").write_text("data only\n")
    data = tmp_path / "data.iso"
    run(["xorriso", "-as", "mkisofs", "-o", data, "-R", "-V", "DATA", tree])
    outdir = tmp_path / "out"
    outdir.mkdir()
    r = ocitree(capsys, "iso", "--ks", made.ks, data, outdir / "new.iso")
    assert r.code == 1
    assert "no installer boot entry" in r.err.strip().splitlines()[-1]
    assert list(outdir.iterdir()) == []
