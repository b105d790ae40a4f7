"""MicroShift-like test packages, built with rpmbuild and served like Red Hat's CDN.

The seed's build (``../shared/seed/000_12de822f7fa18b4d.txt``) failed in the scriptlets
of MicroShift 4.12's packages. These stand-ins keep those scriptlets, copied from
``packaging/rpm/microshift.spec`` of that time with the macros expanded by hand to what
RHEL 8's macro files make of them:

- ``microshift``: ``/usr/bin/microshift``, ``microshift.service``; ``%post`` is
  ``%systemd_post microshift.service`` and a ``systemctl restart`` of crio if it runs.
  Requires ``cri-o``, ``microshift-selinux``, ``microshift-networking``.
- ``microshift-selinux``: ``%post`` is ``%selinux_modules_install``: the image's
  ``semodule`` where it has one and a policy configured, else a stand-in doing what
  libsemanage's commit does with a policy store in ``/etc/selinux`` (rpm-ostree
  systems keep it there): the store copied to a sandbox, the module added, then the
  *directory renames* ``active`` -> ``previous`` and sandbox -> ``active`` that failed
  on overlayfs ("Invalid cross-device link") in the seed. The renames are rename(2)
  (perl's, where the image has perl), not ``mv``, which would copy instead on EXDEV.
- ``microshift-networking``: ``%post`` edits ``/etc/sysconfig/openvswitch`` with
  ``sed -i``, restarts NetworkManager if it runs, enables openvswitch.
- ``cri-o``, ``openvswitch``: stand-ins with unit files (openvswitch ships
  ``/etc/sysconfig/openvswitch`` as a config file).

:func:`build_package` is the general spec writer (support.rpms has no scriptlets);
:func:`make_repo` builds all of them into an rpm-md repository with createrepo_c.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ocitree.build.rpmrepo import host_arch
from ocitree.run import run

VERSION = "4.12.7"
RELEASE = "202303082246.p0.el8"
MODULE_FILE = "/usr/share/selinux/packages/targeted/microshift.pp.bz2"
MODULE_BYTES = b"BZh91AY&SY microshift selinux policy module (test stand-in)\n"
OVS_SYSCONFIG = "/etc/sysconfig/openvswitch"
OVS_SYSCONFIG_TEXT = """\
### Configuration options for openvswitch
#
# Enable core files:
# --force-corefiles=yes
#
# Set "nice" value for ovs-vswitchd and ovsdb-server:
# --ovs-vswitchd-priority=-10
# --ovsdb-server-priority=-10
OPTIONS=""

# Uncomment to make the Open vSwitch daemons run as root
#OVS_USER_ID="openvswitch:hugetlbfs"
"""
# What microshift-networking's sed makes of it: every line but OPTIONS=, then the new one.
OVS_SYSCONFIG_EDITED = (
    "".join(
        line + "\n" for line in OVS_SYSCONFIG_TEXT.splitlines() if not line.startswith("OPTIONS=")
    )
    + 'OPTIONS="--no-mlockall"\n'
)
PACKAGE_NAMES = (
    "cri-o",
    "microshift",
    "microshift-networking",
    "microshift-selinux",
    "openvswitch",
)


@dataclass(frozen=True)
class Package:
    """What a spec file says: files (path -> bytes; mode 0755 under a bin dir)."""

    name: str
    version: str
    release: str = "1"
    arch: str = "noarch"
    files: Mapping[str, bytes] = field(default_factory=dict)
    config: Sequence[str] = ()  # paths of files that are %config(noreplace)
    requires: Sequence[str] = ()
    provides: Sequence[str] = ()
    post: str | None = None  # %post scriptlet, run by /bin/sh

    @property
    def nevra(self) -> str:
        return f"{self.name}-{self.version}-{self.release}.{self.arch}"


def _mode(path: str) -> int:
    return 0o755 if any(p in ("bin", "sbin", "libexec") for p in path.split("/")[:-1]) else 0o644


def _spec(pkg: Package, stage: Path) -> str:
    lines = [
        # The payload is exactly the given bytes: no stripping, no debuginfo.
        "%global __os_install_post %{nil}",
        "%global debug_package %{nil}",
        "%global _build_id_links none",
        f"Name: {pkg.name}",
        f"Version: {pkg.version}",
        f"Release: {pkg.release}",
        f"Summary: ocitree test stand-in for {pkg.name}",
        "License: ASL 2.0",
        *(["BuildArch: noarch"] if pkg.arch == "noarch" else []),
        *(f"Requires: {r}" for r in pkg.requires),
        *(f"Provides: {p}" for p in pkg.provides),
        "",
        "%description",
        f"Stand-in for {pkg.name}, built by the ocitree test suite.",
        "",
        "%install",
        f'mkdir -p "%{{buildroot}}" && cp -a "{stage}/." "%{{buildroot}}/"',
        "",
    ]
    if pkg.post is not None:
        # A spec file expands macros in scriptlets: the hand-expanded text has none.
        lines += ["%post", pkg.post.replace("%", "%%"), ""]
    lines.append("%files")
    for p in sorted(pkg.files):
        lines.append(f'%config(noreplace) "{p}"' if p in pkg.config else f'"{p}"')
    return "\n".join(lines) + "\n"


def build_package(workdir: Path, pkg: Package) -> Path:
    """Build ``pkg`` with rpmbuild under ``workdir``; return the .rpm."""
    base = workdir.resolve() / pkg.nevra
    stage, topdir = base / "stage", base / "rpmbuild"
    stage.mkdir(parents=True)
    for path, data in pkg.files.items():
        dest = stage / path.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
        dest.chmod(_mode(path))
    spec = base / f"{pkg.name}.spec"
    spec.write_text(_spec(pkg, stage))
    (base / "tmp").mkdir()
    argv: list[str | os.PathLike[str]] = [
        "rpmbuild", "-bb", "--define", f"_topdir {topdir}", "--define", f"_tmppath {base / 'tmp'}",
    ]  # fmt: skip
    if pkg.arch != "noarch":
        argv += ["--target", pkg.arch]
    run([*argv, spec], hint="rpmbuild comes with Debian's rpm package")
    out = topdir / "RPMS" / pkg.arch / f"{pkg.nevra}.rpm"
    if not out.is_file():
        raise FileNotFoundError(f"rpmbuild did not write {out}")
    return out


def _unit(description: str, exec_start: str, *, after: str = "", wanted_by: str) -> bytes:
    after_line = f"After={after}\n" if after else ""
    return (
        f"[Unit]\nDescription={description}\n{after_line}\n"
        f"[Service]\nExecStart={exec_start}\n\n[Install]\nWantedBy={wanted_by}\n"
    ).encode()


def _script(text: str) -> bytes:
    return f"#!/bin/sh\n{text}\n".encode()


# %systemd_post of RHEL 8's systemd (239), expanded.
def _systemd_post(unit: str) -> str:
    return (
        "if [ $1 -eq 1 ] ; then\n"
        "        # Initial installation\n"
        f"        systemctl --no-reload preset {unit} &>/dev/null || :\n"
        "fi\n"
    )


# %selinux_modules_install -s targeted MODULE, expanded: the real semodule where the image
# has one and a policy configured; else the stand-in does libsemanage's commit by hand
# (with its store in /etc/selinux, as rpm-ostree configures it), with the message and
# failure libsemanage gives when a rename fails, e.g. with EXDEV on overlayfs.
SELINUX_POST = f"""\
_policytype=targeted
if [ -x /usr/sbin/semodule ] && [ -e /etc/selinux/config ]; then
  . /etc/selinux/config
  if [ "${{SELINUXTYPE}}" = "${{_policytype}}" ]; then
    /usr/sbin/semodule -n -s ${{_policytype}} -X 200 -i {MODULE_FILE}
    /usr/sbin/selinuxenabled && /usr/sbin/load_policy || :
  fi
else
  store=/etc/selinux/${{_policytype}}
  failed() {{
    echo "libsemanage.semanage_commit_sandbox: Error while renaming $1 to $2." >&2
    echo "/usr/sbin/semodule:  Failed!" >&2
    exit 1
  }}
  # no policy at all (no config, no store): %selinux_modules_install does nothing either
  [ -d "$store/active" ] || exit 0
  rm -rf "$store/tmp" "$store/previous"
  cp -a "$store/active" "$store/tmp"
  mkdir -p "$store/tmp/modules/200/microshift"
  cp {MODULE_FILE} "$store/tmp/modules/200/microshift/cil"
  echo microshift > "$store/tmp/modules/200/microshift/lang_ext"
  rename() {{  # rename(2) as libsemanage calls it: mv would copy on EXDEV (overlayfs)
    if command -v perl >/dev/null 2>&1; then
      perl -e 'rename($ARGV[0], $ARGV[1]) or die "$!\\n"' "$1" "$2" || failed "$1" "$2"
    else
      mv "$1" "$2" || failed "$1" "$2"
    fi
  }}
  rename "$store/active" "$store/previous"
  rename "$store/tmp" "$store/active"
fi
if [ -x /usr/sbin/selinuxenabled ] && /usr/sbin/selinuxenabled ; then
   restorecon -R /etc/microshift /usr/lib/microshift || :
fi
"""

MICROSHIFT_POST = (
    _systemd_post("microshift.service")
    + """
# only for install, not on upgrades
if [ $1 -eq 1 ]; then
\t# if crio was already started, restart it so it will catch /etc/crio/crio.conf.d/microshift.conf
\tsystemctl is-active --quiet crio && systemctl restart --quiet crio || true
fi
"""
)

NETWORKING_POST = (
    "# setup ovs / ovsdb optimization to avoid full pre-allocation of memory\n"
    f"sed -i -n -e '/^OPTIONS=/!p' -e '$aOPTIONS=\"--no-mlockall\"' {OVS_SYSCONFIG}\n"
    + _systemd_post("microshift-ovs-init.service")
    + "systemctl is-active --quiet NetworkManager && systemctl restart --quiet NetworkManager"
    " || true\n"
    "systemctl enable --now --quiet openvswitch || true\n"
)


def packages(arch: str | None = None) -> list[Package]:
    """The five stand-ins; binary ones for ``arch`` (default: this machine's)."""
    arch = arch or host_arch()
    same = f"{VERSION}-{RELEASE}"
    return [
        Package(
            "microshift",
            VERSION,
            RELEASE,
            arch,
            files={
                "/usr/bin/microshift": _script('echo "MicroShift Version: 4.12.7"'),
                "/usr/lib/systemd/system/microshift.service": _unit(
                    "MicroShift",
                    "/usr/bin/microshift run",
                    after="network-online.target crio.service",
                    wanted_by="multi-user.target",
                ),
                "/etc/crio/crio.conf.d/microshift.conf": b"[crio.runtime]\nlog_level = 'info'\n",
                "/etc/microshift/config.yaml": b"dns:\n  baseDomain: example.com\n",
            },
            config=("/etc/crio/crio.conf.d/microshift.conf", "/etc/microshift/config.yaml"),
            requires=(
                "cri-o >= 1.25.0",
                f"microshift-selinux = {same}",
                f"microshift-networking = {same}",
            ),
            post=MICROSHIFT_POST,
        ),
        Package(
            "microshift-selinux",
            VERSION,
            RELEASE,
            "noarch",
            files={MODULE_FILE: MODULE_BYTES},
            post=SELINUX_POST,
        ),
        Package(
            "microshift-networking",
            VERSION,
            RELEASE,
            arch,
            files={
                "/usr/bin/configure-ovs.sh": _script("exit 0"),
                "/usr/lib/systemd/system/microshift-ovs-init.service": _unit(
                    "MicroShift OVS init",
                    "/usr/bin/configure-ovs.sh OVNKubernetes",
                    after="network-online.target openvswitch.service",
                    wanted_by="multi-user.target",
                ),
                "/etc/NetworkManager/conf.d/microshift-nm.conf": b"[main]\n",
            },
            config=("/etc/NetworkManager/conf.d/microshift-nm.conf",),
            requires=("openvswitch >= 2.17",),
            post=NETWORKING_POST,
        ),
        Package(
            "cri-o",
            "1.25.2",
            "10.rhaos4.12.git0a083f9.el8",
            arch,
            files={
                "/usr/bin/crio": _script("exit 0"),
                "/usr/lib/systemd/system/crio.service": _unit(
                    "Container Runtime Interface for OCI (CRI-O)",
                    "/usr/bin/crio",
                    after="network-online.target",
                    wanted_by="multi-user.target",
                ),
                "/etc/crio/crio.conf": b"[crio]\n",
            },
            config=("/etc/crio/crio.conf",),
        ),
        Package(
            "openvswitch",
            "2.17.0",
            "77.el8fdp",
            arch,
            files={
                "/usr/bin/ovs-vsctl": _script("exit 0"),
                "/usr/lib/systemd/system/openvswitch.service": _unit(
                    "Open vSwitch", "/bin/true", wanted_by="multi-user.target"
                ),
                OVS_SYSCONFIG: OVS_SYSCONFIG_TEXT.encode(),
            },
            config=(OVS_SYSCONFIG,),
        ),
    ]


def make_repo(workdir: Path, directory: Path) -> list[Package]:
    """Build the packages into ``directory`` and make it an rpm-md repository."""
    directory.mkdir(parents=True, exist_ok=True)
    pkgs = packages()
    for pkg in pkgs:
        rpm = build_package(workdir, pkg)
        rpm.rename(directory / rpm.name)
    run(["createrepo_c", "--quiet", directory], hint="createrepo_c comes with createrepo-c")
    return pkgs


def repo_file(url: str) -> str:
    """The seed's kind of repo file: an entitlement certificate and the RHSM CA."""
    return (
        "[rhocp-4.12-for-rhel-8-x86_64-rpms]\n"
        "name = Red Hat OpenShift Container Platform 4.12 for RHEL 8 (test stand-in)\n"
        f"baseurl = {url}\n"
        "enabled = 1\n"
        "gpgcheck = 0\n"
        "sslverify = 1\n"
        "sslcacert = /etc/rhsm/ca/ca.pem\n"
        "sslclientcert = /etc/pki/entitlement/cert.pem\n"
        "sslclientkey = /etc/pki/entitlement/key.pem\n"
    )
