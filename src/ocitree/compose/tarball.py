"""osbuild's edge-commit artifact: a tar of ``repo/`` (an archive-mode repository holding
one ref) and ``compose.json``, the form ``composer-cli compose image`` downloads and the
seed's ``tar -xvf …; cd repo; python3 -m http.server`` serves.

``compose.json`` has what rpm-ostree writes of a commit: ``ref``, ``ostree-commit``,
``ostree-content-checksum``, ``ostree-timestamp``, ``rpm-ostree-inputhash`` and
``ostree-version``. Entries are named ``./repo/…`` as osbuild's tar stage names them
(GNU format). The tar is reproducible: entries sorted, owned by 0:0 without names,
dated ``epoch``; it is written next to its destination and renamed into place.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from ocitree.ostree.repo import Repo
from ocitree.run import run


def compose_json(
    ref: str, commit: str, *, content: str, epoch: int, input_hash: str, version: str | None
) -> bytes:
    """What rpm-ostree's ``--write-composejson-to`` writes of a commit (osbuild's stage
    puts it in the tarball); ``ostree-version`` only when the commit has a version."""
    data = {
        "ref": ref,
        "ostree-commit": commit,
        "ostree-content-checksum": content,
        "ostree-timestamp": datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "rpm-ostree-inputhash": input_hash,
    }
    if version:
        data["ostree-version"] = version
    return json.dumps(data, indent=2, sort_keys=True).encode() + b"\n"


def _content_checksum(repo: Path, commit: str) -> str:
    out = run(["ostree", f"--repo={repo}", "show", commit]).stdout.decode()
    for line in out.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "ContentChecksum":
            return value.strip()
    raise AssertionError(f"ostree show {commit} prints no ContentChecksum")


def _add(tf: tarfile.TarFile, path: Path, arcname: str, epoch: int) -> None:
    info = tf.gettarinfo(str(path), arcname)
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = epoch
    if info.isreg():
        with path.open("rb") as f:
            tf.addfile(info, f)
    else:
        tf.addfile(info)


def write(
    dest: Path,
    repo: Path,
    ref: str,
    commit: str,
    *,
    input_hash: str,
    epoch: int,
    version: str | None,
) -> Path:
    """Write the tarball of ``ref`` (at ``commit``) of ``repo`` to ``dest``."""
    with tempfile.TemporaryDirectory(prefix=".edge-commit-", dir=dest.parent) as tmp:
        export = Path(tmp) / "repo"
        Repo.create(export)
        run(["ostree", f"--repo={export}", "pull-local", str(repo), commit])
        run(["ostree", f"--repo={export}", "refs", f"--create={ref}", commit])
        written = Path(tmp) / "edge-commit.tar"
        with tarfile.open(written, mode="w", format=tarfile.GNU_FORMAT) as tf:
            for dirpath, dirnames, filenames in os.walk(export):
                dirnames.sort()
                base = Path(dirpath)
                rel = f"./{base.relative_to(export.parent)}"
                _add(tf, base, rel, epoch)
                for name in sorted(set(filenames) - {".lock"}):
                    _add(tf, base / name, f"{rel}/{name}", epoch)
            content = _content_checksum(export, commit)
            data = compose_json(
                ref, commit, content=content, epoch=epoch, input_hash=input_hash, version=version
            )
            info = tarfile.TarInfo("./compose.json")
            info.size, info.mtime, info.mode = len(data), epoch, 0o644
            tf.addfile(info, io.BytesIO(data))
        written.chmod(0o644)
        written.replace(dest)
    return dest
