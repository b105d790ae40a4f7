"""Helpers shared by the benchmarks: work dirs, timing, medians, result lines."""

from __future__ import annotations

import os
import shlex
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ocitree.run import Arg, run

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = ROOT / ".venv" / "bin"
FIXTURES = ROOT / "tests" / "fixtures"
MIB = 1 << 20
WORK_PARENT = Path("/var/tmp")


@contextmanager
def workdir(prefix: str = "ocitree-bench-") -> Iterator[Path]:
    """A fresh directory under /var/tmp (not /tmp, which may be a small tmpfs), removed after."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=WORK_PARENT))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@dataclass(frozen=True)
class Timed:
    seconds: float
    stdout: bytes
    stderr: bytes


def timed(argv: Sequence[Arg], *, env: dict[str, str] | None = None) -> Timed:
    """Run a command to completion (through ocitree.run.run) and time it, wall clock."""
    start = time.perf_counter()
    proc = run(argv, env=env)
    seconds = time.perf_counter() - start
    return Timed(seconds, proc.stdout or b"", proc.stderr or b"")


def shell(pipeline: str) -> list[str]:
    """argv that runs a shell pipeline (the baselines are pipelines) with pipefail."""
    return ["bash", "-c", "set -o pipefail; " + pipeline]


def q(path: Arg) -> str:
    return shlex.quote(os.fspath(path))


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def figure(name: str, value: str, target: str) -> None:
    """One result line: ``name: value (target …)``."""
    print(f"{name}: {value} ({target})", flush=True)


def info(text: str) -> None:
    """An informational line (not a figure), indented."""
    print(f"  {text}", flush=True)


def fmt_seconds(values: Sequence[float]) -> str:
    runs = ", ".join(f"{v:.2f}" for v in values)
    return f"median {median(values):.2f} s of [{runs}]"
