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


class FileErrors(UserError):
    """Every problem found in one input file, reported together: ``errors`` holds
    ``(line, message)`` pairs, in line order; line 0 means the file as a whole."""

    def __init__(self, filename: str, errors: list[tuple[int, str]]) -> None:
        ordered = sorted(errors, key=lambda e: (e[0] == 0, e[0]))
        count = len(ordered)
        lines = [f"{count} error{'' if count == 1 else 's'} in {filename}"]
        for line, message in ordered:
            where = f"{filename}:{line}" if line else filename
            lines.append(f"{where}: {message}")
        super().__init__("\n".join(lines))
        self.filename = filename
        self.errors = ordered
