#!/usr/bin/env python3
"""Build Sample Linux: the rpm-md repository that ``ocitree compose`` composes from.

Each package has a spec file in ``specs/`` and its source files in ``sources/NAME/``.
:func:`build_repo` runs ``rpmbuild`` for each (``sample-tools`` twice: 1.0-1 and 1.1-1)
and ``createrepo_c -g comps.xml`` over the packages, with the package groups of
``comps.xml``. The shell package is Debian's static busybox (``busybox-static``), copied
in at build time.

The output is the same bytes on every build from the same inputs on the same rpm: the
build time and every file's mtime are ``SOURCE_DATE_EPOCH``, the build host is fixed, and
the repository's timestamps and revision are the same number.

Standalone: ``python examples/sample-distro/build.py OUT`` (``--arch``, ``--workdir``).
Importable: ``build_repo(workdir, out)`` returns the repository directory.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import struct
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
TOP = HERE.parent.parent
if str(TOP / "src") not in sys.path:
    sys.path.insert(0, str(TOP / "src"))

from ocitree.build.rpmrepo import host_arch  # noqa: E402
from ocitree.errors import CommandError, UserError  # noqa: E402
from ocitree.run import run  # noqa: E402

SPECS = HERE / "specs"
SOURCES = HERE / "sources"
COMPS = HERE / "comps.xml"

SOURCE_DATE_EPOCH = 1700000000  # 2023-11-14 22:13:20 UTC
BUILDHOST = "build.sample.example.com"
BUSYBOX = Path("/bin/busybox")  # Debian's busybox-static

KERNEL_VERSION = "6.1.0"
KERNEL_RELEASE = "1.sample"
TOOLS_VERSIONS = ("1.0", "1.1")

# (spec name, extra macro definitions) in the order they are built.
BUILDS: tuple[tuple[str, Mapping[str, str]], ...] = (
    ("setup", {}),
    ("filesystem", {}),
    ("sample-shell", {}),
    ("sample-release", {}),
    ("kernel", {}),
    ("sample-agent", {}),
    *(("sample-tools", {"tools_version": v}) for v in TOOLS_VERSIONS),
    ("sample-base", {}),
)
PACKAGES = tuple(dict.fromkeys(name for name, _ in BUILDS))
NOARCH = frozenset({"setup", "sample-release", "sample-agent", "sample-tools", "sample-base"})
GROUPS = ("core", "agent")  # the groups of comps.xml

# Disable what rpmbuild does after %install (stripping, bytecompiling, compressing man
# pages) and the debuginfo and build-id packaging: the payload is what %install made.
_BUILD_MACROS = {
    "__os_install_post": "%{nil}",
    "debug_package": "%{nil}",
    "_build_id_links": "none",
    "_buildhost": BUILDHOST,
    "use_source_date_epoch_as_buildtime": "1",
    "clamp_mtime_to_source_date_epoch": "1",
}


def kver(arch: str | None = None) -> str:
    """The kernel package's version string: ``6.1.0-1.sample.ARCH``."""
    return f"{KERNEL_VERSION}-{KERNEL_RELEASE}.{arch or host_arch()}"


def _is_static_elf(path: Path) -> bool:
    """True if ``path`` is an ELF executable without a program interpreter."""
    with path.open("rb") as f:
        head = f.read(64)
        if head[:4] != b"\x7fELF":
            return False
        end = "<" if head[5] == 1 else ">"
        if head[4] == 2:  # ELFCLASS64
            phoff, phentsize, phnum = (struct.unpack_from(f"{end}Q", head, 0x20)[0],
                                       *struct.unpack_from(f"{end}HH", head, 0x36))  # fmt: skip
        else:
            phoff, phentsize, phnum = (struct.unpack_from(f"{end}I", head, 0x1C)[0],
                                       *struct.unpack_from(f"{end}HH", head, 0x2A))  # fmt: skip
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    pt_interp = 3
    return all(
        struct.unpack_from(f"{end}I", table, i * phentsize)[0] != pt_interp for i in range(phnum)
    )


def static_busybox() -> Path:
    """Debian's static busybox, the sample OS's shell (the root has no C library)."""
    if not BUSYBOX.is_file() or not _is_static_elf(BUSYBOX):
        raise UserError(
            f"{BUSYBOX} is not a statically linked busybox",
            hint="install Debian's busybox-static package (apt-get install busybox-static)",
        )
    return BUSYBOX


def _rpmbuild(
    workdir: Path, name: str, defines: Mapping[str, str], arch: str, busybox: Path
) -> list[Path]:
    tag = "-".join([name, *defines.values()])
    topdir = workdir / tag
    if topdir.exists():
        shutil.rmtree(topdir)
    sourcedir = topdir / "SOURCES"
    if (SOURCES / name).is_dir():
        shutil.copytree(SOURCES / name, sourcedir)
    else:
        sourcedir.mkdir(parents=True)
    if name == "sample-shell":
        shutil.copy2(busybox, sourcedir / "busybox")
    (topdir / "tmp").mkdir()
    macros = {
        "_topdir": str(topdir),
        "_sourcedir": str(sourcedir),
        "_tmppath": str(topdir / "tmp"),
        **_BUILD_MACROS,
        **defines,
    }
    argv: list[str | os.PathLike[str]] = ["rpmbuild", "-bb", "--target", arch]
    for key, value in macros.items():
        argv += ["--define", f"{key} {value}"]
    run(
        [*argv, SPECS / f"{name}.spec"],
        env={"SOURCE_DATE_EPOCH": str(SOURCE_DATE_EPOCH), "TZ": "UTC"},
        hint="rpmbuild comes with Debian's rpm package",
    )
    built = sorted(topdir.glob("RPMS/*/*.rpm"))
    if not built:
        raise FileNotFoundError(f"rpmbuild wrote no package for {name} under {topdir}")
    return built


def build_repo(workdir: Path, out: Path, *, arch: str | None = None) -> Path:
    """Build every package under ``workdir`` and make ``out`` an rpm-md repo of them.

    Architecture-specific packages are built for ``arch`` (default: this machine's; the
    busybox copied in is this machine's either way). Packages and ``repodata/`` that
    ``out`` already holds are replaced. Returns ``out``.
    """
    arch = arch or host_arch()
    workdir, out = workdir.resolve(), out.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.rpm"):
        old.unlink()
    shutil.rmtree(out / "repodata", ignore_errors=True)
    busybox = static_busybox()
    for name, defines in BUILDS:
        for rpm in _rpmbuild(workdir, name, defines, arch, busybox):
            shutil.copy2(rpm, out / rpm.name)
            # primary.xml records each package file's mtime.
            os.utime(out / rpm.name, (SOURCE_DATE_EPOCH, SOURCE_DATE_EPOCH))
    run(
        [
            "createrepo_c",
            "--quiet",
            "--groupfile",
            COMPS,
            "--revision",
            str(SOURCE_DATE_EPOCH),
            "--set-timestamp-to-revision",
            out,
        ],
        hint="createrepo_c comes with Debian's createrepo-c package",
    )
    return out


def _version_key(version: str) -> tuple[tuple[int, int | str], ...]:
    # rpmvercmp for plain versions: digit runs compare as numbers and win over letters.
    return tuple(
        (1, int(seg)) if seg.isdigit() else (0, seg)
        for seg in re.findall(r"\d+|[a-zA-Z]+", version)
    )


def newest_rpms(repo: Path) -> list[Path]:
    """The newest package of each name in ``repo`` (plain versions, no ``~`` or ``^``)."""
    rpms = sorted(repo.glob("*.rpm"))
    if not rpms:
        return []
    qf = "%{NAME}\\t%{EPOCHNUM}\\t%{VERSION}\\t%{RELEASE}\\n"
    out = run(["rpm", "-qp", "--nosignature", "--qf", qf, *rpms]).stdout.decode()
    best: dict[str, tuple[tuple[object, ...], Path]] = {}
    for rpm, line in zip(rpms, out.splitlines(), strict=True):
        name, epoch, version, release = line.split("\t")
        key = (int(epoch), _version_key(version), _version_key(release))
        if name not in best or key > best[name][0]:
            best[name] = (key, rpm)
    return sorted(path for _, path in best.values())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("out", type=Path, help="directory to make the repository in")
    parser.add_argument("--arch", help=f"architecture of the binary packages ({host_arch()})")
    parser.add_argument("--workdir", type=Path, help="keep the rpmbuild trees here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="sample-distro-") as tmp:
        repo = build_repo(args.workdir or Path(tmp), args.out, arch=args.arch)
    for rpm in sorted(repo.glob("*.rpm")):
        print(rpm.name)
    print(f"repository: {repo} (groups: {', '.join(GROUPS)}; kernel {kver(args.arch)})")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except UserError as e:
        if isinstance(e, CommandError):
            print(e.stderr, end="", file=sys.stderr)
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
