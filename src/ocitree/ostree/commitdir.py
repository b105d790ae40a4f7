"""``ostree commit --tree=dir=`` of a directory, the one place its command line is made.

Metadata is given as ``strings`` (``--add-metadata-string KEY=VALUE``) and ``variants``
(``--add-metadata KEY=GVARIANT-TEXT``), in that order: the order the commit object keeps
them in, which :mod:`ocitree.build.treecommit` reproduces for the same checksum.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ocitree.run import run


def commit_directory(
    repo: Path,
    root: Path,
    *,
    subject: str,
    timestamp: int,
    parent: str | None = None,
    branch: str | None = None,
    strings: Sequence[tuple[str, str]] = (),
    variants: Sequence[tuple[str, str]] = (),
) -> str:
    """Commit ``root`` into ``repo``; its checksum. Without ``branch`` no ref is written
    and the commit has no ref binding; without ``parent`` it has none. A root with an
    SELinux policy (``usr/etc/selinux/config``) is labelled with it."""
    argv: list[str | Path] = [
        "ostree", f"--repo={repo}", "commit", f"--tree=dir={root}",
        f"--parent={parent or 'none'}", f"--subject={subject}", f"--timestamp=@{timestamp}",
    ]  # fmt: skip
    argv += [f"--branch={branch}"] if branch else ["--orphan", "--no-bindings"]
    argv += [f"--add-metadata-string={k}={v}" for k, v in strings]
    argv += [f"--add-metadata={k}={v}" for k, v in variants]
    if (root / "usr/etc/selinux/config").exists():
        argv.append(f"--selinux-policy={root}")
    return run(argv).stdout.decode().strip().splitlines()[-1]
