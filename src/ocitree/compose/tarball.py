"""osbuild's edge-commit artifact: a tar of ``repo/`` (an archive-mode repository holding
one ref) and ``compose.json``, the form ``composer-cli compose image`` downloads and the
seed's ``tar -xvf …; cd repo; python3 -m http.server`` serves.

``compose.json`` has ``ref``, ``ostree-commit``, ``rpm-ostree-inputhash`` and
``ostree-version``. The tar is reproducible: entries sorted, owned by 0:0 without names,
dated ``epoch``; it is written next to its destination and renamed into place.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import tempfile
from pathlib import Path

from ocitree.ostree.repo import Repo
from ocitree.run import run


def compose_json(ref: str, commit: str, *, input_hash: str, version: str | None) -> bytes:
    data = {
        "ref": ref,
        "ostree-commit": commit,
        "rpm-ostree-inputhash": input_hash,
        "ostree-version": version,
    }
    return json.dumps(data, indent=2, sort_keys=True).encode() + b"\n"


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
        with tarfile.open(written, mode="w", format=tarfile.PAX_FORMAT) as tf:
            for dirpath, dirnames, filenames in os.walk(export):
                dirnames.sort()
                base = Path(dirpath)
                rel = base.relative_to(export.parent)
                _add(tf, base, str(rel), epoch)
                for name in sorted(set(filenames) - {".lock"}):
                    _add(tf, base / name, str(rel / name), epoch)
            data = compose_json(ref, commit, input_hash=input_hash, version=version)
            info = tarfile.TarInfo("compose.json")
            info.size, info.mtime, info.mode = len(data), epoch, 0o644
            tf.addfile(info, io.BytesIO(data))
        written.chmod(0o644)
        written.replace(dest)
    return dest
