"""Logging with nested, timed steps; plain lines when not on a terminal."""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Iterator

logger = logging.getLogger("ocitree")

_depth = [0]


def setup(*, debug: bool = False, quiet: bool = False) -> None:
    """Configure the ``ocitree`` logger for the command line (stderr)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.handlers[:] = [handler]
    logger.setLevel(logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO)
    logger.propagate = False


@contextlib.contextmanager
def step(title: str) -> Iterator[None]:
    """Log ``title`` indented by nesting depth, then how long the step took."""
    indent = "  " * _depth[0]
    logger.info("%s‣ %s", indent, title)
    start = time.monotonic()
    _depth[0] += 1
    try:
        yield
    finally:
        _depth[0] -= 1
        logger.debug("%s  (%s: %.2fs)", indent, title, time.monotonic() - start)
