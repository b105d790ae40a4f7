"""Commands a build step may call that need ocitree, not the image: ``systemctl``,
``rpm-ostree install``, ``ostree container commit`` (and ``dnf install`` where the image
has no dnf).

Each is a small POSIX sh script in the step's ``/run/.ocitree/bin`` (first on PATH, and
bind-mounted over the image's own binary where it has one, because rpm scriptlets set
their own PATH). The script writes its arguments to ``/run/.ocitree/rpc`` and waits;
the build process, outside the sandbox, carries the request out on the build root and
writes back the output and exit code. So the real work runs with ocitree's code and the
host's tools, whatever the image has.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ocitree.build.sandbox import Mount
from ocitree.errors import UserError
from ocitree.log import logger

SHIM_DIR = "/run/.ocitree"
_POLL = 0.02


@dataclass(frozen=True)
class Reply:
    exit_code: int
    stdout: str = ""
    stderr: str = ""


Handler = Callable[[Path, list[str], str], Reply]  # (root, argv, cwd) -> Reply

_SCRIPT = """#!/bin/sh
# ocitree build shim for {tool}: the build process outside the sandbox runs it.
{passthrough}d={shim_dir}/rpc
r="$d/$$"
rm -f "$r".* 2>/dev/null
{{ printf '%s\\n' {tool}; pwd; for a in "$@"; do printf '%s\\n' "$a"; done; }} > "$r.args"
: > "$r.ready"
while [ ! -f "$r.rc" ]; do sleep 0.02 2>/dev/null || sleep 1 2>/dev/null || :; done
out() {{ while IFS= read -r l || [ -n "$l" ]; do printf '%s\\n' "$l"; done < "$1"; }}
if [ -s "$r.out" ]; then out "$r.out"; fi
if [ -s "$r.err" ]; then out "$r.err" >&2; fi
read rc < "$r.rc"
rm -f "$r".* 2>/dev/null
exit "$rc"
"""

# ostree: only "container commit" is ours; anything else goes to the image's own ostree.
_OSTREE_PASSTHROUGH = """if [ "$1" != container ] || [ "$2" != commit ]; then
  if [ -x {shim_dir}/real/ostree ]; then exec {shim_dir}/real/ostree "$@"; fi
  echo "ostree: only 'ostree container commit' is available in this build" >&2; exit 1
fi
"""

_BIN_DIRS = ("usr/bin", "usr/sbin", "bin", "sbin")


def shim_script(tool: str) -> str:
    passthrough = _OSTREE_PASSTHROUGH.format(shim_dir=SHIM_DIR) if tool == "ostree" else ""
    return _SCRIPT.format(tool=tool, shim_dir=SHIM_DIR, passthrough=passthrough)


class ShimServer:
    """Serves the shims' requests for one build (see the module docstring)."""

    def __init__(self, root: Path, workdir: Path, handlers: Mapping[str, Handler] = {}) -> None:
        self.root = root
        self.dir = workdir
        self.handlers: dict[str, Handler] = {}
        (self.dir / "bin").mkdir(parents=True, exist_ok=True)
        (self.dir / "rpc").mkdir(exist_ok=True)
        (self.dir / "real").mkdir(exist_ok=True)
        self.calls: list[list[str]] = []
        self.errors: list[BaseException] = []
        self._lock = threading.Lock()
        for tool, handler in handlers.items():
            self.add(tool, handler)

    def add(self, tool: str, handler: Handler) -> None:
        """Serve ``tool`` with ``handler`` from the next step on."""
        self.handlers[tool] = handler
        path = self.dir / "bin" / tool
        path.write_text(shim_script(tool))
        path.chmod(0o755)

    def mounts(self) -> list[Mount]:
        """The shim directory, and the shims over the image's own binaries."""
        out = [Mount(self.dir, SHIM_DIR, readonly=False)]
        for tool in self.handlers:
            for d in _BIN_DIRS:
                target = self.root / d / tool
                if d in ("bin", "sbin") and (self.root / d).is_symlink():
                    continue  # the same file as usr/bin, usr/sbin
                if target.is_file() and not target.is_symlink():
                    if tool == "ostree":
                        out.append(Mount(target, f"{SHIM_DIR}/real/ostree"))
                    out.append(Mount(self.dir / "bin" / tool, f"/{d}/{tool}"))
        return out

    @contextlib.contextmanager
    def serving(self) -> Iterator[None]:
        stop = threading.Event()

        workers: list[threading.Thread] = []

        def loop() -> None:
            while not stop.is_set():
                for ready in self._take_ready():
                    # Each request on its own thread: a package install runs rpm, whose
                    # scriptlets call systemctl while the install request is open.
                    t = threading.Thread(target=self._serve, args=ready, daemon=True)
                    t.start()
                    workers.append(t)
                time.sleep(_POLL)

        thread = threading.Thread(target=loop, name="ocitree-shims", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
            for t in workers:
                t.join()
        if self.errors:
            raise self.errors[0]

    def _take_ready(self) -> list[tuple[Path, list[str]]]:
        taken = []
        for ready in sorted((self.dir / "rpc").glob("*.ready")):
            base = ready.with_suffix("")
            args_file = base.with_suffix(".args")
            lines = args_file.read_text().split("\n")[:-1]
            ready.unlink()
            args_file.unlink()
            taken.append((base, lines))
        return taken

    def _serve(self, base: Path, lines: list[str]) -> None:
        tool, cwd, argv = lines[0], lines[1], lines[2:]
        with self._lock:
            self.calls.append([tool, *argv])
        try:
            reply = self._dispatch(tool, argv, cwd)
        except Exception as e:  # the shim must get an answer; the build reports it
            with self._lock:
                self.errors.append(e)
            reply = Reply(1, stderr=f"{tool}: internal error: {e}\n")
        base.with_suffix(".out").write_text(reply.stdout)
        base.with_suffix(".err").write_text(reply.stderr)
        tmp = base.with_suffix(".rc-tmp")
        tmp.write_text(f"{reply.exit_code}\n")
        tmp.rename(base.with_suffix(".rc"))

    def _dispatch(self, tool: str, argv: Sequence[str], cwd: str) -> Reply:
        handler = self.handlers.get(tool)
        if handler is None:
            return Reply(127, stderr=f"{tool}: not available in this build\n")
        logger.info("  %s %s", tool, " ".join(argv))
        try:
            return handler(self.root, list(argv), cwd)
        except UserError as e:  # the step sees the failure as the command's own
            return Reply(1, stderr=f"{tool}: {e}\n")
