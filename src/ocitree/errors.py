"""Errors a user can cause or fix, and the one place they become output."""

from __future__ import annotations


class UserError(Exception):
    """A failure the user can act on: printed as one line with a hint, no traceback."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message} (hint: {self.hint})"
        return self.message


class CommandError(UserError):
    """An external command failed; carries the command line and its exit code."""

    def __init__(
        self, argv: list[str], returncode: int, stderr: str, *, hint: str | None = None
    ) -> None:
        last = stderr.strip().splitlines()[-1] if stderr.strip() else ""
        message = f"{argv[0]} failed with exit code {returncode}"
        if last:
            message += f": {last}"
        super().__init__(message, hint=hint)
        self.argv = argv
        self.returncode = returncode
        self.stderr = stderr


class ImageFormatError(UserError):
    """An image, layer or blob does not have the format we expect."""
