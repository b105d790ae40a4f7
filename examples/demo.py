#!/usr/bin/env python3
"""`make demo`: the seed's workflow from a blueprint to a device running MicroShift.

1. Sample Linux, a small RPM distribution, is built with rpmbuild (examples/sample-distro).
2. ``ocitree compose`` makes an ostree commit (and the edge-commit tarball) from the
   blueprint examples/edge.toml.
3. ``ocitree serve`` serves the ostree repository over HTTP.
4. ``ocitree kickstart`` writes a kickstart that installs the commit from there
   (ostreesetup) with MicroShift's LVM layout and the blueprint's user.
5. ``ocitree iso`` puts it into an installer ISO (a stand-in for RHEL's boot.iso).
6. A device is installed the way the kickstart's ostreesetup does it: ``ostree pull``
   over HTTP and ``ostree admin deploy``.
7. ``ocitree encapsulate`` makes the commit an OCI image; ``ocitree push`` puts it into a
   registry on 127.0.0.1.
8. The device rebases onto the image in the registry, and /etc is edited on it.
9. Version 1.1 is composed, encapsulated with the 1.0 image's layers kept and pushed under
   the same tag; the device upgrades (the edit is kept) and rolls back.
10. The seed's step 3: ``ocitree build`` runs the seed's Containerfile
    (examples/microshift) FROM the image in the registry, installing stand-in MicroShift
    packages from an HTTPS repository that demands the entitlement client certificate.
    The entitlement is in none of the registry's blobs; the device rebases onto the image.

Each step prints the command it runs. Everything goes to ./demo-output; the servers are
stopped by their PIDs at the end. ``--no-registry`` stops at the oci: image (step 7).

The device is an ostree sysroot on a tmpfs mounted at demo-output/device (libostree
freezes and thaws the filesystem holding a sysroot's /boot when it writes deployments,
so it must not be the machine's own). Where a tmpfs cannot be mounted (not root) the
demo says why and leaves the device out.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TOP = HERE.parent
sys.path.insert(0, str(TOP / "src"))
sys.path.insert(0, str(TOP / "tests"))  # the test suite's stand-ins: tests/support

from ocitree.build.rpmrepo import host_arch  # noqa: E402
from ocitree.errors import CommandError  # noqa: E402
from ocitree.run import run, spawn  # noqa: E402
from support import isos, microshift  # noqa: E402
from support.rpmrepo_server import Pki, make_pki, serve  # noqa: E402

BLUEPRINT = HERE / "edge.toml"
CONTAINERFILE = HERE / "microshift/Containerfile"
REF = f"sample/1/{host_arch()}/edge"
OSNAME = "sample"
REMOTE = "edge"  # the ostree remote the kickstart's ostreesetup adds
DEVICE_TMPFS_SIZE = "256M"
CONF = "sample/sample.conf"  # sample-tools' config file, edited on the device
PULL_SECRET = '{"auths": {"cloud.openshift.com": {"auth": "ZGVtby1wdWxsLXNlY3JldA=="}}}\n'


def relative(path: Path) -> Path:
    """``path`` relative to the top of the repository (the demo runs from there)."""
    return path.relative_to(TOP) if path.is_relative_to(TOP) else path


OCITREE = str(relative(Path(sys.executable).parent / "ocitree"))


def show(*argv: object) -> None:
    args = [str(a) for a in argv]
    print(f"\n$ {shlex.join(args)}", flush=True)
    run(args, capture=False)


def ocitree(*argv: object) -> None:
    show(OCITREE, *argv)


def print_file(path: Path) -> None:
    """A file of the demo, without its comment lines."""
    print(f"-- {relative(path)}, without its comments:")
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            print(f"   {line}")


# ---------------------------------------------------------------- servers


def start_ostree_server(out: Path) -> tuple[str, subprocess.Popen[bytes]]:
    """``ocitree serve`` in the background; the URL is the first line it prints."""
    argv = [OCITREE, "serve", out / "repo", "--port", "0"]
    print(f"\n$ {shlex.join(str(a) for a in argv)} &", flush=True)
    log = (out / "serve.log").open("wb")
    proc = spawn(argv, stdout=subprocess.PIPE, stderr=log.fileno())
    assert proc.stdout is not None
    url = proc.stdout.readline().decode().strip()
    if not url.startswith("http"):
        stop(proc, "ocitree serve")
        raise SystemExit(f"ocitree serve did not start: see {out / 'serve.log'}")
    print(f"{url}   (pid {proc.pid}; requests are logged to {out / 'serve.log'})")
    return url, proc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_registry(out: Path) -> tuple[str, subprocess.Popen[bytes]]:
    port = free_port()
    config = out / "registry.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: warn\n"
        f"storage:\n  filesystem:\n    rootdirectory: {(out / 'registry').resolve()}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n  secret: demo\n"
    )
    log = (out / "registry.log").open("wb")
    proc = spawn(["docker-registry", "serve", config], stdout=log.fileno(), stderr=log.fileno())
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            break
        except OSError:
            time.sleep(0.05)
    print(f"(docker-registry on 127.0.0.1:{port}, pid {proc.pid})")
    return f"127.0.0.1:{port}", proc


def stop(proc: subprocess.Popen[bytes], name: str) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    print(f"({name} pid {proc.pid} stopped)")


# ---------------------------------------------------------------- the device's sysroot


def is_mount(path: Path) -> bool:
    return path.is_dir() and os.path.ismount(path)


def unmount(path: Path) -> None:
    try:
        run(["umount", path])
    except CommandError:
        run(["umount", "--lazy", path], check=False)


def mount_tmpfs(path: Path) -> str | None:
    """Mount a tmpfs at ``path``; None, or why it cannot be done."""
    if os.geteuid() != 0:
        return "mounting a tmpfs needs root"
    if shutil.which("mount") is None:
        return "mount is not installed"
    path.mkdir(parents=True, exist_ok=True)
    try:
        run(["mount", "-t", "tmpfs", "-o", f"size={DEVICE_TMPFS_SIZE},mode=0755", "tmpfs", path])
    except CommandError as e:
        return str(e)
    return None


def deployed(dev: Path) -> Path:
    """A symlink next to ``dev`` to the default deployment's root (found with ``ocitree
    status --json``), which keeps the commands that look into it short."""
    proc = run([OCITREE, "status", "--sysroot", dev, "--json"])
    d = json.loads(proc.stdout)["deployments"][0]
    root = Path(dev.name, "ostree/deploy", d["osname"], "deploy", f"{d['checksum']}.{d['serial']}")
    link = dev.parent / "deployed"
    link.unlink(missing_ok=True)
    link.symlink_to(root)
    print(f"({link} → {root}, the default deployment)")
    return link


def run_in(root: Path, *argv: str) -> None:
    """Run a program of a deployment, in a read-only bubblewrap sandbox of it."""
    show("bwrap", "--ro-bind", root, "/", "--proc", "/proc", "--dev", "/dev", *argv)


# ---------------------------------------------------------------- images in the registry


def inspect_json(image: str) -> dict[str, Any]:
    proc = run([OCITREE, "inspect", "--json", image, "--tls-verify=false"])
    return dict(json.loads(proc.stdout))


def compare_layers(base: str, derived: str) -> str:
    """One line: which of the derived image's layers are the base's own blobs."""
    base_digests = {layer["digest"] for layer in inspect_json(base)["layers"]}
    layers = inspect_json(derived)["layers"]
    new = [
        f"#{i} "
        + ("ostree commit" if layer["components"] is None else " + ".join(layer["components"]))
        for i, layer in enumerate(layers)
        if layer["digest"] not in base_digests
    ]
    return (
        f"{len(layers) - len(new)} of the {len(layers)} layers are the base's, same digests "
        f"(nothing to push or pull for them); new: {'; '.join(new)}"
    )


def blobs_holding(storage: Path, needle: bytes) -> tuple[int, int]:
    """(blobs that contain ``needle``, blobs) in a registry's storage, layers uncompressed."""
    hits = total = 0
    for data_file in (storage / "docker/registry/v2/blobs").rglob("data"):
        data = data_file.read_bytes()
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
        total += 1
        hits += needle in data
    return hits, total


def pem_needle(path: Path) -> bytes:
    """A line from the middle of a PEM file's body: bytes found only where the file is."""
    lines = path.read_bytes().splitlines()
    return lines[len(lines) // 2]


# ---------------------------------------------------------------- the steps


def sample_distro(out: Path) -> None:
    print("== 1. Sample Linux: an RPM distribution built with rpmbuild and createrepo_c")
    show(relative(Path(sys.executable)), relative(HERE / "sample-distro/build.py"), out / "rpms")


def compose(out: Path) -> None:
    print("\n== 2. Compose: the blueprint → an ostree commit and the edge-commit tarball")
    print_file(BLUEPRINT)
    ocitree(
        "compose", relative(BLUEPRINT), "--repo", out / "repo", "--rpm-repo", out / "rpms",
        "--tarball", out / "edge-commit.tar", "--cache-dir", out / "cache",
    )  # fmt: skip
    show("ostree", f"--repo={out / 'repo'}", "log", REF)
    print("-- /var is empty in the commit: tmpfiles.d makes it on the device")
    show("ostree", f"--repo={out / 'repo'}", "ls", REF, "/usr/lib/tmpfiles.d")
    show("ostree", f"--repo={out / 'repo'}", "cat", REF, "/usr/lib/tmpfiles.d/ocitree-var.conf")


def kickstart(out: Path, url: str) -> Path:
    print("\n== 4. A kickstart: the commit from that URL, MicroShift's LVM layout")
    print(f"-- the accounts, hostname and services of {relative(BLUEPRINT)} go in it too")
    ks = out / "microshift.ks"
    ocitree(
        "kickstart", "--ostree-url", url, "--ref", REF, "--osname", OSNAME,
        "--remote", REMOTE, "--nogpg", "--blueprint", BLUEPRINT, "-o", ks,
    )  # fmt: skip
    show("cat", ks)
    return ks


def installer_iso(out: Path, ks: Path) -> None:
    print("\n== 5. The installer ISO with the kickstart")
    print(
        "-- there is no RHEL boot.iso here: tests/support/isos.py makes a stand-in with\n"
        "-- lorax's layout (isolinux, GRUB for BIOS and UEFI, images/efiboot.img, El Torito\n"
        "-- and isohybrid), whose kernels are stand-ins: it does not boot"
    )
    boot_iso = isos.installer_iso(out / "boot-iso")
    print(f"({boot_iso}: volume id {isos.VOLID})")
    iso = out / "edge-installer.iso"
    ocitree("iso", "--ks", ks, boot_iso, iso)
    show("xorriso", "-report_about", "WARNING", "-indev", iso, "-report_el_torito", "plain")
    print("\n-- the installer's boot entries now point at the kickstart")
    files = out / "iso-files"
    show(
        "xorriso", "-report_about", "WARNING", "-osirrox", "on", "-indev", iso,
        "-extract", "/isolinux/isolinux.cfg", files / "isolinux.cfg",
        "-extract", "/EFI/BOOT/grub.cfg", files / "grub.cfg",
    )  # fmt: skip
    show("grep", "-h", "inst.ks=", files / "isolinux.cfg", files / "grub.cfg")


def install_device(dev: Path, url: str) -> None:
    """What the kickstart's ostreesetup makes anaconda do, on a sysroot at ``dev``."""
    print(f"(a tmpfs is mounted at {dev} for the device's sysroot)")
    show("ostree", "admin", "init-fs", dev)
    show("ostree", "admin", "os-init", OSNAME, f"--sysroot={dev}")
    repo = f"--repo={dev / 'ostree/repo'}"
    show("ostree", repo, "remote", "add", "--no-gpg-verify", REMOTE, url)
    show("ostree", repo, "pull", REMOTE, REF)
    show("ostree", "admin", "deploy", f"--sysroot={dev}", f"--os={OSNAME}", f"{REMOTE}:{REF}")
    ocitree("status", "--sysroot", dev)
    root = deployed(dev)
    print("\n-- the blueprint's hostname and user, and the package's config, in its /etc")
    show("cat", root / "etc/hostname")
    show("grep", "-e", "^core:", "-e", "^wheel:", root / "etc/passwd", root / "etc/group")
    run_in(root, "sample-tool")


def encapsulate(out: Path) -> str:
    print("\n-- the layer plan: a component per package, files of no package by directory")
    ocitree("plan", "--repo", out / "repo", REF)
    image = f"oci:{out / 'oci'}:1.0"
    ocitree("encapsulate", "--repo", out / "repo", REF, image)
    ocitree("inspect", image)
    return image


def push(image: str, host: str) -> None:
    remote = f"docker://{host}/ocitree/sample:1.0"
    ocitree("push", image, remote, "--tls-verify=false")
    ocitree("inspect", remote, "--tls-verify=false")
    show("skopeo", "inspect", "--tls-verify=false", "--format", "{{.Digest}} {{.Labels}}", remote)


def rebase(host: str, dev: Path) -> None:
    print("\n== 8. The device rebased onto the image in the registry")
    ocitree("rebase", f"ostree-unverified-registry:{host}/ocitree/sample:1.0", "--sysroot", dev,
            "--tls-verify=false")  # fmt: skip
    ocitree("status", "--sysroot", dev)
    print("\n-- a local edit of sample-tools' config file in the new deployment's /etc")
    conf = deployed(dev) / "etc" / CONF
    show("sed", "-i", "s/^greeting = .*/greeting = hello from this device/", conf)


def version_1_1(out: Path, host: str, dev: Path) -> None:
    print("\n== 9. Version 1.1, composed and pushed under the same tag; the device upgrades")
    blueprint = out / "edge-1.1.toml"
    text = BLUEPRINT.read_text()
    blueprint.write_text(
        text.replace('version = "1.0.0"', 'version = "1.1.0"').replace('"1.0*"', '"1.1*"')
    )
    print(f"-- {blueprint}: {relative(BLUEPRINT)} with version 1.1.0 and sample-tools 1.1*")
    ocitree("compose", blueprint, "--repo", out / "repo", "--rpm-repo", out / "rpms",
            "--cache-dir", out / "cache")  # fmt: skip
    image = f"oci:{out / 'oci'}:1.1"
    ocitree("encapsulate", "--repo", out / "repo", REF, image, "--previous",
            f"oci:{out / 'oci'}:1.0")  # fmt: skip
    ocitree("push", image, f"docker://{host}/ocitree/sample:1.0", "--tls-verify=false")
    print("\n-- only the changed layers are fetched")
    ocitree("upgrade", "--check", "--sysroot", dev, "--tls-verify=false")
    ocitree("upgrade", "--sysroot", dev, "--tls-verify=false")
    root = deployed(dev)
    print("\n-- /etc keeps the local edit, next to the image's copy in /usr/etc; the tool is 1.1")
    show("cat", root / "etc" / CONF)
    show("cat", root / "usr/etc" / CONF)
    run_in(root, "sample-tool")
    ocitree("status", "--sysroot", dev)
    print("\n-- rolled back to 1.0")
    ocitree("rollback", "--sysroot", dev)
    ocitree("status", "--sysroot", dev)


def build_context(ctx: Path, pki: Pki, url: str) -> None:
    """The seed's etc/: repo file, entitlement certificate and key, RHSM CA, pull secret."""
    files = {
        "etc/yum.repos.d/microshift.repo": microshift.repo_file(url).encode(),
        "etc/pki/entitlement/cert.pem": pki.client_cert.read_bytes(),
        "etc/pki/entitlement/key.pem": pki.client_key.read_bytes(),
        "etc/rhsm/ca/ca.pem": pki.ca_cert.read_bytes(),
        "etc/crio/openshift-pull-secret": PULL_SECRET.encode(),
    }
    for rel, data in files.items():
        (ctx / rel).parent.mkdir(parents=True, exist_ok=True)
        (ctx / rel).write_bytes(data)
    (ctx / "etc/pki/entitlement/key.pem").chmod(0o600)


def check_no_leak(out: Path, ctx: Path) -> None:
    storage = out / "registry"
    for rel in ("etc/pki/entitlement/key.pem", "etc/pki/entitlement/cert.pem"):
        hits, total = blobs_holding(storage, pem_needle(ctx / rel))
        print(f"-- {rel} is in {hits} of the registry's {total} blobs")
        if hits:
            raise SystemExit(f"the build leaked {rel} into the image")
    hits, total = blobs_holding(storage, PULL_SECRET.encode())
    print(f"-- the pull secret, which the image keeps, is in {hits} of them")


def microshift_build(out: Path, host: str, dev: Path) -> None:
    print("\n== 10. The seed's MicroShift image: ocitree build with packages")
    print(
        "-- stand-in MicroShift 4.12 packages (tests/support/microshift.py) keep the\n"
        "-- scriptlets that failed in the seed (semodule's renames, systemctl); their\n"
        "-- repository is served over HTTPS and demands the entitlement client certificate,\n"
        "-- like Red Hat's CDN (tests/support/rpmrepo_server.py)"
    )
    microshift.make_repo(out / "microshift-rpms", out / "cdn/rhocp-4.12")
    pki = make_pki(out / "pki")
    base = f"docker://{host}/ocitree/sample:1.0"  # holds version 1.1 since step 9
    derived = f"docker://{host}/ocitree/sample:1.1-microshift"
    ctx = out / "microshift"
    with serve(out / "cdn", pki) as cdn:
        build_context(ctx, pki, f"{cdn.url}/rhocp-4.12")
        print(f"({cdn.url}: the entitled repository)")
        show("find", ctx, "-type", "f")
        print_file(CONTAINERFILE)
        ocitree(
            "build", "-f", relative(CONTAINERFILE), "-t", derived, "--tls-verify=false",
            "--build-arg", f"BASE={base.removeprefix('docker://')}",
            "--cache-dir", out / "build-cache", ctx,
        )  # fmt: skip
        rpms = [p.rsplit("/", 1)[-1] for p in cdn.requests if p.endswith(".rpm")]
        print(f"-- the build fetched with the entitlement: {', '.join(sorted(rpms))}")
    ocitree("inspect", derived, "--tls-verify=false")
    print(f"\n-- against {base}: {compare_layers(base, derived)}")
    check_no_leak(out, ctx)

    print("\n-- the device rebased onto the MicroShift image")
    ocitree("rebase", f"ostree-unverified-registry:{derived.removeprefix('docker://')}",
            "--sysroot", dev, "--tls-verify=false")  # fmt: skip
    root = deployed(dev)
    show("ls", "-l", root / "etc/systemd/system/multi-user.target.wants")
    show("cat", root / "etc/microshift/config.yaml")
    show("ls", root / "etc/crio")
    left = [d for d in ("pki", "rhsm", "yum.repos.d") if (root / "etc" / d).exists()]
    if left:
        raise SystemExit(f"the build left /etc/{left[0]} in the image")
    print("-- /etc/pki, /etc/rhsm and /etc/yum.repos.d are not there: the RUN removed them")
    run_in(root, "microshift")
    ocitree("status", "--sysroot", dev)


def registry_steps(out: Path, image: str, dev: Path | None) -> str:
    """Steps 7 (push) to 10, with a registry on 127.0.0.1; what was done, in words."""
    host, registry = start_registry(out)
    try:
        push(image, host)
        if dev is None:
            return f"docker://{host}/ocitree/sample:1.0 pushed (registry data in {out}/registry)"
        rebase(host, dev)
        version_1_1(out, host, dev)
        microshift_build(out, host, dev)
    finally:
        stop(registry, "docker-registry")
    return (
        "a device installed from a composed commit, rebased onto its image, upgraded, "
        "rolled back, then rebased onto the MicroShift image built FROM it"
    )


def device_and_images(out: Path, url: str, no_registry: bool) -> str:
    """Steps 6 to 10 (the device on a tmpfs, if one can be mounted)."""
    print("\n== 6. A device installed the way the kickstart's ostreesetup does it")
    dev = out / "device"
    why = mount_tmpfs(dev)
    if why is not None:
        print(f"-- left out: cannot mount a tmpfs at {dev}: {why}")
    try:
        if why is None:
            install_device(dev, url)
        print("\n== 7. The commit encapsulated as an OCI image and pushed to a registry")
        image = encapsulate(out)
        if no_registry:
            return f"the image is at {image} (--no-registry)"
        return registry_steps(out, image, dev if why is None else None)
    finally:
        if why is None:
            (out / "deployed").unlink(missing_ok=True)
            unmount(dev)
            print(f"({dev} unmounted)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--no-registry", action="store_true", help="stop at the oci: image")
    parser.add_argument("--out", type=Path, default=TOP / "demo-output")
    args = parser.parse_args()
    # Killed (a timeout, `kill`): unwind, so that the finally blocks stop the servers
    # by their PIDs and unmount the device.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    out = relative(args.out.resolve())
    os.chdir(TOP)  # the commands print as one would type them at the top of the repo
    if is_mount(out / "device"):  # left over from an interrupted run
        unmount(out / "device")
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    started = time.monotonic()

    sample_distro(out)
    compose(out)
    print("\n== 3. The ostree repository served over HTTP")
    url, server = start_ostree_server(out)
    try:
        ks = kickstart(out, url)
        installer_iso(out, ks)
        done = device_and_images(out, url, args.no_registry)
    finally:
        stop(server, "ocitree serve")
    print(f"\nDone in {time.monotonic() - started:.0f} s: {done}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except CommandError as e:
        sys.exit(f"demo: {e}")
