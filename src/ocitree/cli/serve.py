"""``ocitree serve``: serve an archive-mode ostree repository over HTTP."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ocitree.log import logger
from ocitree.ostree.serve import make_server, serve_until_stopped


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is not in 0-65535")
    return port


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "serve",
        parents=[common],
        help="serve an archive-mode ostree repository over HTTP",
        description="Serve an archive-mode ostree repository over HTTP for 'ostree pull' "
        "and installers (kickstart 'ostreesetup --url'). Prints the URL it serves at, "
        "logs one line per request and stops on SIGTERM or Ctrl-C.",
        epilog="examples: ocitree serve repo; ocitree serve --bind 0.0.0.0 --port 8080 repo; "
        "ocitree serve --port 0 repo (a free port)",
    )
    p.add_argument("repo", metavar="REPO", type=Path, help="the archive-mode ostree repository")
    p.add_argument(
        "--bind",
        default="127.0.0.1",
        metavar="ADDRESS",
        help="address to listen on (default: 127.0.0.1; 0.0.0.0 or :: for all)",
    )
    p.add_argument(
        "--port",
        type=_port,
        default=8000,
        help="TCP port to listen on (default: 8000; 0 picks a free one)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    server = make_server(args.repo, bind=args.bind, port=args.port)

    def ready() -> None:
        print(server.url, flush=True)
        if not (server.root / "summary").is_file():
            logger.info(
                "note: %s has no summary file: clients pull refs by name, but 'ostree remote "
                "refs' needs one ('ostree --repo=%s summary -u')",
                server.root,
                server.root,
            )
        logger.info("serving %s at %s (SIGTERM or Ctrl-C stops)", server.root, server.url)

    serve_until_stopped(server, ready=ready)
    return 0
