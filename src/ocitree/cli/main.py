"""Argument parsing and the one place errors become output and an exit code."""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence

from ocitree import __version__, log
from ocitree.cli import build as build_cmd
from ocitree.cli import compose as compose_cmd
from ocitree.cli import device as device_cmd
from ocitree.cli import encapsulate as encapsulate_cmd
from ocitree.cli import inspect as inspect_cmd
from ocitree.cli import iso as iso_cmd
from ocitree.cli import kickstart as kickstart_cmd
from ocitree.cli import plan as plan_cmd
from ocitree.cli import push as push_cmd
from ocitree.cli import serve as serve_cmd
from ocitree.errors import UserError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ocitree",
        description="Ship an ostree-based OS as OCI container images.",
    )
    parser.add_argument("--version", action="version", version=f"ocitree {__version__}")
    # --debug and --quiet are taken before or after the command name.
    common = argparse.ArgumentParser(add_help=False)
    for p in (parser, common):
        default = False if p is parser else argparse.SUPPRESS
        p.add_argument(
            "--debug",
            action="store_true",
            default=default,
            help="show command lines, timings and tracebacks",
        )
        p.add_argument(
            "-q", "--quiet", action="store_true", default=default, help="only print errors"
        )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in (
        compose_cmd,
        serve_cmd,
        kickstart_cmd,
        iso_cmd,
        encapsulate_cmd,
        plan_cmd,
        push_cmd,
        inspect_cmd,
        build_cmd,
        device_cmd,
    ):
        module.register(sub, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    log.setup(debug=args.debug, quiet=args.quiet)
    try:
        result: int = args.func(args)
        return result
    except UserError as e:
        if args.debug:
            traceback.print_exc()
        print(f"ocitree: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("ocitree: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
