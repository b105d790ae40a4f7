"""``ocitree serve`` as a real process: ``ostree pull`` from it, refused paths, the request
log, and a clean stop on SIGTERM and SIGINT."""

from __future__ import annotations

import http.client
import re
import signal
import subprocess
import sys
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from integration.conftest import Committed
from ocitree.run import run
from support.gentree import commit_tree

pytestmark = pytest.mark.integration

STOP_TIMEOUT = 60  # only guards against a hang
SERVE = (sys.executable, "-m", "ocitree", "serve")


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    @property
    def port(self) -> int:
        port = urllib.parse.urlsplit(self.url).port
        assert port is not None
        return port

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> tuple[int, str]:
        """Send ``sig``; return the exit code and the log (stderr)."""
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout=STOP_TIMEOUT)
        return code, self.log.read_text()

    def get(self, path: str, method: str = "GET") -> tuple[int, bytes]:
        """A request with ``path`` sent as it is (no client-side normalisation)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port)
        try:
            conn.request(method, path)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()


def _start(repo: Path, log: Path, *extra: str) -> Server:
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [*SERVE, "--bind", "127.0.0.1", "--port", "0", *extra, str(repo)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=err,
        )
    assert proc.stdout is not None
    url = proc.stdout.readline().decode().strip()
    if not url:
        proc.kill()
        proc.wait()
        pytest.fail(f"ocitree serve printed no URL: {log.read_text()}")
    assert url.startswith("http://127.0.0.1:") and url.endswith("/")
    return Server(proc, url, log)


Starter = Callable[..., Server]


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Starter]:
    """Starts ``ocitree serve REPO`` processes; kills any still running at the end."""
    servers: list[Server] = []

    def starter(repo: Path, *extra: str) -> Server:
        server = _start(repo, tmp_path / f"serve-{len(servers)}.log", *extra)
        servers.append(server)
        return server

    yield starter
    for server in servers:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait()
        if server.proc.stdout is not None:
            server.proc.stdout.close()


def test_ostree_pull_from_it(start: Starter, sample: Committed, tmp_path: Path) -> None:
    server = start(sample.repo)
    new = tmp_path / "pulled"
    run(["ostree", f"--repo={new}", "init", "--mode=archive"])
    run(["ostree", f"--repo={new}", "remote", "add", "--no-gpg-verify", "origin", server.url])
    run(["ostree", f"--repo={new}", "pull", "origin", sample.ref])
    pulled = run(["ostree", f"--repo={new}", "rev-parse", f"origin:{sample.ref}"])
    assert pulled.stdout.decode().strip() == sample.commit
    run(["ostree", f"--repo={new}", "fsck"])

    code, log = server.stop()
    assert code == 0
    lines = log.splitlines()
    assert f"GET /refs/heads/{sample.ref} 200 65" in lines
    assert "GET /summary 404 14" in lines  # the fixture repo has none
    assert any(line.startswith(f"GET /objects/{sample.commit[:2]}/") for line in lines)
    filez = [
        m for line in lines if (m := re.fullmatch(r"GET /objects/../.{62}\.filez 200 (\d+)", line))
    ]
    assert filez and all(int(m[1]) > 0 for m in filez)
    assert lines[-1] == "stopped"


def test_refuses_paths_out_of_the_repo(start: Starter, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "usr/bin").mkdir(parents=True)
    (tree / "usr/bin/hello").write_text("#!/bin/sh\necho hello\n")
    repo = tmp_path / "repo"
    commit_tree(tree, repo, "small/ref")
    outside = tmp_path / "secret"
    outside.mkdir()
    (outside / "key").write_text("not for clients\n")
    (repo / "leak").symlink_to(outside / "key")
    (repo / "objects" / "zz").symlink_to(outside)
    (repo / "inside").symlink_to("config")  # a symlink within the repository is fine

    server = start(repo)
    assert server.get("/config") == (200, (repo / "config").read_bytes())
    assert server.get("/inside") == (200, (repo / "config").read_bytes())
    assert server.get("/refs/heads/small/ref")[0] == 200
    for path in (
        "/../secret/key",
        "/refs/../../secret/key",
        "/%2e%2e/secret/key",
        "/refs/%2E%2E/%2e%2e/secret/key",
        "/leak",
        "/objects/zz/key",
    ):
        status, body = server.get(path)
        assert status in (403, 404), path
        assert b"not for clients" not in body
    assert server.get("/objects")[0] == 404  # no directory listings
    assert server.get("/")[0] == 404
    assert server.get("/no/such/file")[0] == 404
    assert server.get("/config", method="HEAD")[0] == 200
    assert server.get("/config", method="POST")[0] == 501

    code, log = server.stop(signal.SIGINT)
    assert code == 0
    assert "GET /../secret/key 403 14" in log.splitlines()
    assert "GET /leak 403 14" in log.splitlines()


def test_sigterm_stops_cleanly_with_a_client_connected(start: Starter, sample: Committed) -> None:
    server = start(sample.repo)
    conn = http.client.HTTPConnection("127.0.0.1", server.port)
    conn.request("GET", "/config")
    assert conn.getresponse().read()  # the keep-alive connection stays open
    try:
        code, log = server.stop(signal.SIGTERM)
    finally:
        conn.close()
    assert code == 0
    assert "SIGTERM: stopping" in log


def test_refuses_a_repo_not_in_archive_mode(tmp_path: Path) -> None:
    repo = tmp_path / "bare"
    run(["ostree", f"--repo={repo}", "init", "--mode=bare-user"])
    proc = run([*SERVE, "--port", "0", str(repo)], check=False)
    assert proc.returncode == 1
    err = proc.stderr.decode()
    assert "bare-user-mode repository" in err
    assert "pull-local" in err
    assert proc.stdout == b""


def test_refuses_a_directory_that_is_no_repo(tmp_path: Path) -> None:
    proc = run([*SERVE, str(tmp_path)], check=False)
    assert proc.returncode == 1
    assert "is not an ostree repository" in proc.stderr.decode()
