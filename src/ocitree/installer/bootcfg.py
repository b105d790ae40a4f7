"""Kernel command lines in an installer ISO's boot configurations (isolinux and GRUB).

Pure text editing, no I/O: :func:`edit_config` takes a configuration's text and returns
the new text with every installer boot entry's kernel arguments changed by an
:class:`ArgEdit`. Running the same edit twice gives the same text as running it once.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass

# udev's whitelist for labels (is_whitelisted in libudev-util.c), as lorax uses it.
_UDEV_SAFE = frozenset(string.ascii_letters + string.digits + "#+.:=@_-")

GRUB_KERNEL_COMMANDS = ("linux", "linuxefi", "linux16")


def udev_escape(label: str) -> str:
    """Escape a volume id the way udev names /dev/disk/by-label (a space is ``\\x20``)."""
    return "".join(ch if ch in _UDEV_SAFE else f"\\x{ord(ch):02x}" for ch in label)


def split_args(cmdline: str) -> list[str]:
    """Split kernel arguments at whitespace, keeping double-quoted values whole."""
    tokens: list[str] = []
    current: list[str] = []
    quoted = False
    for ch in cmdline:
        if ch == '"':
            quoted = not quoted
        if ch.isspace() and not quoted:
            if current:
                tokens.append("".join(current))
                current = []
            continue
        current.append(ch)
    if current:
        tokens.append("".join(current))
    return tokens


def arg_key(token: str) -> str:
    """The name of a kernel argument: ``inst.ks`` for ``inst.ks=hd:LABEL=X:/ks.cfg``."""
    return token.split("=", 1)[0].strip('"')


@dataclass(frozen=True)
class ArgEdit:
    """How to change each installer entry's kernel arguments.

    ``remove`` names arguments to drop; ``add`` are arguments appended unless the entry
    already has the very same one (arguments named in ``replace`` are dropped first, so
    their new values replace the old); ``relabel`` maps an old escaped volume label to the
    new one in ``LABEL=``/``CDLABEL=`` references and GRUB ``search`` lines.
    """

    add: tuple[str, ...] = ()
    remove: frozenset[str] = frozenset()
    replace: frozenset[str] = frozenset()
    relabel: tuple[str, str] | None = None
    raw_relabel: tuple[str, str] | None = None

    def apply(self, tokens: list[str]) -> list[str]:
        drop = self.remove | self.replace
        out = [t for t in tokens if arg_key(t) not in drop]
        if self.relabel is not None:
            old, new = self.relabel
            pattern = re.compile(r"LABEL=" + re.escape(old) + r"(?=$|[:/\"])")
            out = [pattern.sub(lambda _m: "LABEL=" + new, t) for t in out]
        for token in self.add:
            if token not in out:
                out.append(token)
        return out


def _split_line(line: str) -> tuple[str, str]:
    body = line.rstrip("\r\n")
    return body, line[len(body) :]


def _rewrite(indent: str, words: list[str], tokens: list[str], end: str) -> str:
    return indent + " ".join([*words, *tokens]) + end


def _is_installer_kernel(kernel: str | None) -> bool:
    if kernel is None:
        return True
    name = kernel.rsplit("/", 1)[-1].lower()
    return not (name.endswith(".c32") or "memtest" in name)


def edit_isolinux(text: str, edit: ArgEdit) -> tuple[str, int]:
    """Edit the ``append`` lines of the labels that boot a kernel; return (text, entries)."""
    out: list[str] = []
    edited = 0
    in_label = False
    kernel: str | None = None
    for line in text.splitlines(keepends=True):
        body, end = _split_line(line)
        words = body.split(None, 1)
        keyword = words[0].lower() if words else ""
        if keyword == "label":
            in_label, kernel = True, None
        elif keyword in ("kernel", "linux") and len(words) > 1:
            kernel = words[1].split()[0]
        elif keyword == "append" and in_label and _is_installer_kernel(kernel):
            indent = body[: len(body) - len(body.lstrip())]
            args = edit.apply(split_args(words[1] if len(words) > 1 else ""))
            line = _rewrite(indent, [words[0]], args, end)
            edited += 1
        out.append(line)
    return "".join(out), edited


def _relabel_search(body: str, edit: ArgEdit) -> str:
    if edit.raw_relabel is None:
        return body
    old, new = edit.raw_relabel
    pattern = re.compile(r"(?<=\s)(['\"]?)" + re.escape(old) + r"\1(?=\s|$)")
    return pattern.sub(lambda _m: "'" + new + "'", body)


def edit_grub(text: str, edit: ArgEdit) -> tuple[str, int]:
    """Edit the ``linux``/``linuxefi`` lines of installer entries; return (text, entries)."""
    out: list[str] = []
    edited = 0
    for line in text.splitlines(keepends=True):
        body, end = _split_line(line)
        words = body.split()
        if words and words[0] == "search":
            line = _relabel_search(body, edit) + end
        elif len(words) > 1 and words[0] in GRUB_KERNEL_COMMANDS and _is_installer_kernel(words[1]):
            indent = body[: len(body) - len(body.lstrip())]
            command, kernel, *rest = body.split(None, 2)
            args = edit.apply(split_args(rest[0] if rest else ""))
            line = _rewrite(indent, [command, kernel], args, end)
            edited += 1
        out.append(line)
    return "".join(out), edited


def edit_config(path: str, text: str, edit: ArgEdit) -> tuple[str, int]:
    """Edit one configuration file, chosen by its path on the ISO."""
    if path.lower().endswith("isolinux.cfg"):
        return edit_isolinux(text, edit)
    return edit_grub(text, edit)
