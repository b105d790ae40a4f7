"""Options shared by several commands."""

from __future__ import annotations

import argparse
from pathlib import Path

from ocitree.oci.skopeo import RegistryOptions


def add_registry_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("registry access")
    g.add_argument(
        "--authfile",
        type=Path,
        help="containers auth.json (default: skopeo's lookup, e.g. "
        "$XDG_RUNTIME_DIR/containers/auth.json, ~/.docker/config.json)",
    )
    g.add_argument(
        "--tls-verify",
        default="true",
        choices=["true", "false"],
        help="verify the registry's TLS certificate (default: true)",
    )
    g.add_argument("--cert-dir", type=Path, help="directory with the registry's ca.crt")


def registry_options(args: argparse.Namespace) -> RegistryOptions:
    return RegistryOptions(
        authfile=args.authfile, tls_verify=args.tls_verify == "true", cert_dir=args.cert_dir
    )


def add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def human_size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"
