#!/usr/bin/env python3
"""`make demo`: a sample OS tree → ostree commit → OCI image → local registry → a device.

Each step prints the command it runs. Everything goes to ./demo-output; the registry runs
on 127.0.0.1 and is stopped by its PID at the end. `--no-registry` stops at the oci: image.

The device is an ostree sysroot on a tmpfs mounted at demo-output/device (libostree
freezes and thaws the filesystem holding a sysroot's /boot when it writes deployments,
so it must not be the machine's own). It is installed from the plain ostree commit, then
rebased onto the image in the registry, upgraded to a second version pushed under the
same tag, and rolled back. Last, a MicroShift-like image is built FROM the sample image
in the registry with ``ocitree build`` (examples/microshift-like: COPY, RUN with
``systemctl enable`` and a build secret that stays out of the image), and the device
is rebased onto it. Where a tmpfs cannot be mounted (not root) the demo says why and
stops before the device.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TOP = HERE.parent
sys.path.insert(0, str(TOP / "src"))

from ocitree.errors import CommandError  # noqa: E402
from ocitree.run import find_tool, run, spawn  # noqa: E402

KVER = "6.1.0-sample.x86_64"
REF = "ocitree-sample/1/x86_64/edge"
OSNAME = "sample"
DEVICE_TMPFS_SIZE = "256M"
CONF = "sample/sample.conf"  # a config file of the sample OS the device edits
MICROSHIFT = HERE / "microshift-like"  # the derived image's Containerfile and context


def show(*argv: object) -> None:
    args = [str(a) for a in argv]
    print(f"\n$ {shlex.join(args)}", flush=True)
    run(args, capture=False)


def build_tree(out: Path) -> Path:
    tree = out / "tree"
    shutil.copytree(HERE / "sample-os/rootfs", tree, symlinks=True)
    usr_bin = tree / "usr/bin"
    usr_bin.mkdir(parents=True, exist_ok=True)
    shutil.copy(find_tool("busybox", package="busybox-static"), usr_bin / "busybox")
    for name in ("sh", "ls", "cat", "echo"):
        (usr_bin / name).symlink_to("busybox")
    modules = tree / "usr/lib/modules" / KVER
    modules.mkdir(parents=True)
    (modules / "vmlinuz").write_bytes(b"stand-in kernel for the demo\n" * 1024)
    (modules / "initramfs.img").write_bytes(b"stand-in initramfs for the demo\n" * 1024)
    for link, target in (
        ("bin", "usr/bin"),
        ("sbin", "usr/bin"),
        ("lib", "usr/lib"),
        ("ostree", "sysroot/ostree"),
        ("home", "var/home"),
    ):
        (tree / link).symlink_to(target)
    for d in ("sysroot", "boot", "dev", "proc", "sys", "run", "tmp", "var", "usr/sbin"):
        (tree / d).mkdir(parents=True, exist_ok=True)
    return tree


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
        f"storage:\n  filesystem:\n    rootdirectory: {out / 'registry'}\n"
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
    return f"127.0.0.1:{port}", proc


def commit(out: Path, tree: Path, version: str) -> None:
    show(
        "ostree",
        "commit",
        f"--repo={out / 'repo'}",
        f"--branch={REF}",
        f"--tree=dir={tree}",
        f"--subject=ocitree sample OS {version}",
        f"--add-metadata-string=version={version}",
        "--add-metadata=ostree.bootable=true",
        f"--add-metadata-string=ostree.linux={KVER}",
    )


def build_v2(out: Path, tree: Path) -> Path:
    """v1's tree with a new motd, a new file and a new os-release version."""
    tree2 = out / "tree-1.1"
    shutil.copytree(tree, tree2, symlinks=True)
    (tree2 / "usr/etc/sample/motd").write_text(
        "Welcome to the ocitree sample OS 1.1, updated from a container registry.\n"
    )
    notes = tree2 / "usr/share/sample/NEWS"
    notes.parent.mkdir(parents=True)
    notes.write_text("1.1: a new motd, and this file.\n")
    release = tree2 / "usr/lib/os-release"
    release.write_text(
        release.read_text()
        .replace("VERSION_ID=1\n", "VERSION_ID=1.1\n")
        .replace("sample OS 1", "sample OS 1.1")
    )
    return tree2


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


def default_deployment_etc(ocitree: list[str], dev: Path) -> Path:
    """/etc of the default deployment, from ``ocitree status --json``."""
    proc = run([*ocitree, "status", "--sysroot", dev, "--json"])
    d = json.loads(proc.stdout)["deployments"][0]
    name = f"{d['checksum']}.{d['serial']}"
    return dev / "ostree/deploy" / d["osname"] / "deploy" / name / "etc"


def device_demo(out: Path, ocitree: list[str], host: str, tree: Path, dev: Path) -> None:
    print("\n== 4. A device: a sysroot installed from the plain ostree commit")
    show("ostree", "admin", "init-fs", dev)
    show("ostree", "admin", "os-init", OSNAME, f"--sysroot={dev}")
    show("ostree", "pull-local", f"--repo={dev / 'ostree/repo'}", out / "repo", REF)
    show("ostree", "admin", "deploy", f"--sysroot={dev}", f"--os={OSNAME}", REF)
    show(*ocitree, "status", "--sysroot", dev)

    print("\n== 5. Rebased onto the image in the registry")
    imgref = f"ostree-unverified-registry:{host}/ocitree/sample:1.0"
    show(*ocitree, "rebase", imgref, "--sysroot", dev, "--tls-verify=false")
    show(*ocitree, "status", "--sysroot", dev)
    etc = default_deployment_etc(ocitree, dev)
    print("\n-- a local edit of a config file in the new deployment's /etc")
    show("sed", "-i", "s/^greeting = .*/greeting = hello from this device/", etc / CONF)

    print("\n== 6. Version 1.1 of the sample OS, pushed under the same tag")
    tree2 = build_v2(out, tree)
    commit(out, tree2, "1.1")
    image2 = f"oci:{out / 'oci'}:1.1"
    show(
        *ocitree,
        "encapsulate",
        "--repo",
        out / "repo",
        REF,
        image2,
        "--previous",
        f"oci:{out / 'oci'}:1.0",
    )
    show(*ocitree, "push", image2, f"docker://{host}/ocitree/sample:1.0", "--tls-verify=false")

    print("\n== 7. The device upgrades: only the changed layers are fetched")
    show(*ocitree, "upgrade", "--check", "--sysroot", dev, "--tls-verify=false")
    show(*ocitree, "upgrade", "--sysroot", dev, "--tls-verify=false")
    etc2 = default_deployment_etc(ocitree, dev)
    print("\n-- /etc keeps the local edit, next to the image's copy in /usr/etc;")
    print("-- the unedited motd is 1.1's")
    show("cat", etc2 / CONF)
    show("cat", etc2.parent / "usr/etc" / CONF)
    show("cat", etc2 / "sample/motd")
    show(*ocitree, "status", "--sysroot", dev)

    print("\n== 8. Rolled back to 1.0")
    show(*ocitree, "rollback", "--sysroot", dev)
    show(*ocitree, "status", "--sysroot", dev)

    derived_demo(out, ocitree, host, dev)


def inspect_json(ocitree: list[str], image: str) -> dict[str, Any]:
    proc = run([*ocitree, "inspect", "--json", image, "--tls-verify=false"])
    return dict(json.loads(proc.stdout))


def compare_layers(ocitree: list[str], base: str, derived: str) -> str:
    """One line: which of the derived image's layers are the base's own blobs."""
    base_digests = {layer["digest"] for layer in inspect_json(ocitree, base)["layers"]}
    layers = inspect_json(ocitree, derived)["layers"]
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


def derived_demo(out: Path, ocitree: list[str], host: str, dev: Path) -> None:
    print("\n== 9. A MicroShift-like image built FROM the sample image in the registry")
    base = f"docker://{host}/ocitree/sample:1.0"
    derived = f"docker://{host}/ocitree/sample:1.0-microshift"
    token = secrets.token_hex(16)
    secret = out / "entitlement.pem"
    secret.write_text(f"entitlement-key: {token}\n")
    secret.chmod(0o600)
    print(f"-- {MICROSHIFT.relative_to(TOP)}/Containerfile, without its comments:")
    for line in (MICROSHIFT / "Containerfile").read_text().splitlines():
        if line and not line.startswith("#"):
            print(f"   {line}")
    show(
        *ocitree,
        "build",
        "-f",
        MICROSHIFT / "Containerfile",
        "-t",
        derived,
        "--tls-verify=false",
        "--build-arg",
        f"BASE={base.removeprefix('docker://')}",
        "--secret",
        f"id=entitlement,src={secret}",
        "--cache-dir",
        out / "build-cache",
        MICROSHIFT,
    )
    show(*ocitree, "inspect", derived, "--tls-verify=false")
    print(f"\n-- against {base}: {compare_layers(ocitree, base, derived)}")
    hits, total = blobs_holding(out / "registry", token.encode())
    print(f"-- the entitlement's key is in {hits} of the registry's {total} blobs")
    if hits:
        raise SystemExit("the build secret leaked into the image")

    print("\n== 10. The device rebased onto the derived image")
    imgref = f"ostree-unverified-registry:{derived.removeprefix('docker://')}"
    show(*ocitree, "rebase", imgref, "--sysroot", dev, "--tls-verify=false")
    etc = default_deployment_etc(ocitree, dev)
    print("\n-- the unit the build enabled, and its config, in the new deployment's /etc")
    show("ls", "-l", etc / "systemd/system/multi-user.target.wants")
    show("cat", etc / "sample/microshift.conf")
    show(*ocitree, "status", "--sysroot", dev)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--no-registry", action="store_true", help="stop at the oci: image")
    parser.add_argument("--out", type=Path, default=TOP / "demo-output")
    args = parser.parse_args()
    out: Path = args.out
    dev = out / "device"
    if is_mount(dev):  # left over from an interrupted run
        unmount(dev)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    ocitree = [str(Path(sys.executable).parent / "ocitree")]

    print("== 1. A sample OS tree from examples/sample-os, committed with ostree")
    tree = build_tree(out)
    show("ostree", "init", f"--repo={out / 'repo'}", "--mode=archive")
    commit(out, tree, "1.0")

    print("\n== 2. The layer plan, and the commit encapsulated as an OCI image")
    show(*ocitree, "plan", "--repo", out / "repo", REF)
    image = f"oci:{out / 'oci'}:1.0"
    show(*ocitree, "encapsulate", "--repo", out / "repo", REF, image)
    show(*ocitree, "inspect", image)
    if args.no_registry:
        print(f"\nDone: the image is at {image}")
        return 0

    print("\n== 3. Pushed to a registry on 127.0.0.1 and inspected there")
    host, proc = start_registry(out)
    why: str | None = None
    try:
        remote = f"docker://{host}/ocitree/sample:1.0"
        show(*ocitree, "push", image, remote, "--tls-verify=false")
        show(*ocitree, "inspect", remote, "--tls-verify=false")
        show("skopeo", "inspect", "--tls-verify=false", remote)
        why = mount_tmpfs(dev)
        if why is None:
            try:
                print(f"\n(a tmpfs is mounted at {dev} for the device's sysroot)")
                device_demo(out, ocitree, host, tree, dev)
            finally:
                unmount(dev)
                print(f"\n({dev} unmounted)")
    finally:
        proc.terminate()
        proc.wait(10)
        print(f"(registry pid {proc.pid} stopped)")
    if why is not None:
        print(f"\nStopped before the device: cannot mount a tmpfs at {dev}: {why}")
        print(f"Done: {remote} (registry data in {out / 'registry'})")
    else:
        print(
            f"\nDone: {remote} deployed, upgraded and rolled back on a device, then "
            "rebased onto its MicroShift-like derivative"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
