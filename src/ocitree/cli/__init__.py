"""The ``ocitree`` command line: parse arguments, call the library, print."""

from ocitree.cli.main import main

__all__ = ["main"]
