#!/usr/bin/env python3
"""`make demo`: a sample OS tree → ostree commit → OCI image → local registry → inspect.

Each step prints the command it runs. Everything goes to ./demo-output; the registry runs
on 127.0.0.1 and is stopped by its PID at the end. `--no-registry` stops at the oci: image.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TOP = HERE.parent
sys.path.insert(0, str(TOP / "src"))

from ocitree.run import find_tool, run, spawn  # noqa: E402

KVER = "6.1.0-sample.x86_64"
REF = "ocitree-sample/1/x86_64/edge"


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--no-registry", action="store_true", help="stop at the oci: image")
    parser.add_argument("--out", type=Path, default=TOP / "demo-output")
    args = parser.parse_args()
    out: Path = args.out
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    ocitree = [str(Path(sys.executable).parent / "ocitree")]

    print("== 1. A sample OS tree from examples/sample-os, committed with ostree")
    tree = build_tree(out)
    show("ostree", "init", f"--repo={out / 'repo'}", "--mode=archive")
    show(
        "ostree",
        "commit",
        f"--repo={out / 'repo'}",
        f"--branch={REF}",
        f"--tree=dir={tree}",
        "--subject=ocitree sample OS 1",
        "--add-metadata-string=version=1.0",
        "--add-metadata=ostree.bootable=true",
        f"--add-metadata-string=ostree.linux={KVER}",
    )

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
    try:
        remote = f"docker://{host}/ocitree/sample:1.0"
        show(*ocitree, "push", image, remote, "--tls-verify=false")
        show(*ocitree, "inspect", remote, "--tls-verify=false")
        show("skopeo", "inspect", "--tls-verify=false", remote)
    finally:
        proc.terminate()
        proc.wait(10)
        print(f"\n(registry pid {proc.pid} stopped)")
    print(f"\nDone: {remote} (registry data in {out / 'registry'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
