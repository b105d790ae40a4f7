"""``ocitree build``: the seed's kind of build, without leaking build-only secrets."""

from __future__ import annotations

import gzip
import json
import shutil
import tempfile
from pathlib import Path

import pytest

from integration.conftest import Committed
from ocitree.ostree.repo import Repo, RepoMode
from ocitree.run import run
from support.gentree import commit_tree
from support.images import manifest, ocitree, pull_layout
from support.registry import Registry

pytestmark = pytest.mark.integration

KEY = b"-----BEGIN KEY----- entitlement-key-bytes-7f3a91 -----END KEY-----\n"
REPO_FILE = b"[rhel]\nbaseurl=https://cdn.example/rhel-repo-url-55e1\nsslclientkey=x\n"
TOKEN = b"one-step-only-token-c0ffee\n"
SCRATCH = b"written-then-deleted-9d2b\n"
UNIT = (
    "[Unit]\nDescription=demo\n[Service]\nExecStart=/usr/bin/true\n"
    "[Install]\nWantedBy=multi-user.target\n"
)

CONTAINERFILE = """\
FROM {base}
ARG GREETING=hello
ENV APPDIR=/usr/lib/app
COPY etc /etc
RUN --mount=type=secret,id=token test -f /run/secrets/token \\
    && echo "$GREETING from $APPDIR" > /usr/lib/greeting \\
    && systemctl enable demo.service \\
    && (systemctl is-active --quiet demo || echo inactive > /usr/lib/demo-state) \\
    && cat /run/secrets/token > /dev/null \\
    && printf 'written-then-deleted-9d2b\\n' > /usr/lib/scratch
RUN rm -rf /etc/pki /etc/yum.repos.d /usr/lib/scratch && ostree container commit
LABEL org.opencontainers.image.version=2.0
"""


@pytest.fixture(scope="module")
def base_image(tmp_path_factory: pytest.TempPathFactory, sample: Committed) -> Path:
    busybox = shutil.which("busybox")
    if busybox is None or shutil.which("bwrap") is None:
        pytest.skip("busybox (busybox-static) or bwrap (bubblewrap) not installed")
    base = tmp_path_factory.mktemp("build-base")
    tree = base / "tree"
    shutil.copytree(sample.tree.path, tree, symlinks=True)
    shutil.copy(busybox, tree / "usr/bin/busybox")
    for name in ("sh", "echo", "rm", "test", "cat", "printf", "true", "mkdir"):
        (tree / "usr/bin" / name).symlink_to("busybox")
    units = tree / "usr/lib/systemd/system"
    units.mkdir(parents=True)
    (units / "demo.service").write_text(UNIT)
    commit_tree(tree, base / "repo", sample.ref, mode="bare")
    from ocitree.cli.main import main

    assert (
        main(
            [
                "-q",
                "encapsulate",
                "--repo",
                str(base / "repo"),
                sample.ref,
                f"oci:{base / 'img'}:v1",
            ]
        )
        == 0
    )
    return base / "img"


def _context(tmp_path: Path, base: Path) -> Path:
    ctx = tmp_path / "ctx"
    for rel, data in (
        ("etc/pki/entitlement/key.pem", KEY),
        ("etc/yum.repos.d/rhel.repo", REPO_FILE),
        ("etc/crio/openshift-pull-secret", b'{"auths": {}}\n'),
    ):
        (ctx / rel).parent.mkdir(parents=True, exist_ok=True)
        (ctx / rel).write_bytes(data)
    (ctx / "Containerfile").write_text(CONTAINERFILE.format(base=f"oci:{base}:v1"))
    (tmp_path / "token").write_bytes(TOKEN)
    return ctx


def test_build_squashes_steps_and_leaks_no_secret(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], base_image: Path
) -> None:
    ctx = _context(tmp_path, base_image)
    out = tmp_path / "out"
    r = ocitree(
        capsys,
        "build",
        "-t",
        f"oci:{out}:built",
        "--secret",
        f"id=token,src={tmp_path / 'token'}",
        "--cache-dir",
        tmp_path / "cache",
        ctx,
    )
    assert r.code == 0, r.err
    built = manifest(out, "built")
    base = manifest(base_image, "v1")
    # Every byte of every blob: no build-only secret, no deleted intermediate file.
    for layer in built["layers"]:
        data = gzip.decompress((out / "blobs/sha256" / layer["digest"][7:]).read_bytes())
        for secret in (KEY, REPO_FILE.splitlines()[1], TOKEN.strip(), SCRATCH.strip()):
            assert secret not in data, (layer["digest"], secret)
    # Unchanged base layers are byte-identical: nothing new to push or pull.
    base_digests = {layer["digest"] for layer in base["layers"][1:]}
    kept = [layer for layer in built["layers"][1:] if layer["digest"] in base_digests]
    assert len(kept) >= len(base["layers"]) - 3
    info = json.loads(ocitree(capsys, "inspect", "--json", f"oci:{out}:built").out)
    assert info["version"] == "2.0" and info["bootable"]
    # What a device gets.
    repo = Repo.create(tmp_path / "device", RepoMode.BARE)
    pulled = pull_layout(out, "built", repo)
    co = tmp_path / "co"
    run(["ostree", f"--repo={tmp_path / 'device'}", "checkout", pulled.commit, co])
    assert (co / "usr/lib/greeting").read_text() == "hello from /usr/lib/app\n"
    assert (co / "usr/lib/demo-state").read_text() == "inactive\n"
    link = co / "usr/etc/systemd/system/multi-user.target.wants/demo.service"
    assert link.is_symlink() and str(link.readlink()) == "/usr/lib/systemd/system/demo.service"
    assert (co / "usr/etc/crio/openshift-pull-secret").exists()
    assert not (co / "usr/etc/pki").exists() and not (co / "usr/etc/yum.repos.d").exists()
    assert not (co / "usr/lib/scratch").exists() and not (co / "etc").exists()
    # A plain container image too: podman runs it, skopeo reads it.
    labels = json.loads(run(["skopeo", "inspect", f"oci:{out}:built"]).stdout)["Labels"]
    assert labels["ostree.commit"] == info["commit"]
    if shutil.which("podman"):
        # podman refuses a runroot path longer than 50 characters.
        runroot = Path(tempfile.mkdtemp(prefix="ocitree-pr-", dir="/tmp"))
        storage = [
            f"--root={tmp_path / 'podman'}",
            f"--runroot={runroot}",
            "--storage-driver=vfs",
        ]
        greeting = run(
            [
                "podman",
                *storage,
                "run",
                "--rm",
                "--runtime=/usr/bin/runc",
                "--ulimit=nofile=1024:1024",
                "--ulimit=nproc=1024:1024",
                "--network=none",
                f"oci:{out}:built",
                "cat",
                "/usr/lib/greeting",
            ]
        )
        shutil.rmtree(runroot, ignore_errors=True)
        assert greeting.stdout.decode().splitlines()[-1] == "hello from /usr/lib/app"


def test_build_errors_are_clear(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], base_image: Path
) -> None:
    ctx = _context(tmp_path, base_image)
    r = ocitree(
        capsys, "build", "-t", f"oci:{tmp_path / 'o'}", "--cache-dir", tmp_path / "cache", ctx
    )
    assert r.code == 1 and "no --secret id=token given" in r.err
    assert "Containerfile:5: RUN failed" in r.err and not (tmp_path / "o").exists()
    (ctx / "Containerfile").write_text(
        f"FROM oci:{base_image}:v1\nRUN exit 3\nHEALTHCHECK NONE\nRUN false\n"
    )
    r = ocitree(
        capsys, "build", "-t", f"oci:{tmp_path / 'o'}", "--cache-dir", tmp_path / "cache", ctx
    )
    assert r.code == 1 and ":3:" in r.err
    (ctx / "Containerfile").write_text(f"FROM oci:{base_image}:v1\nRUN exit 3\n")
    r = ocitree(
        capsys, "build", "-t", f"oci:{tmp_path / 'o'}", "--cache-dir", tmp_path / "cache", ctx
    )
    assert r.code == 1 and "Containerfile:2: RUN failed with exit code 3" in r.err
    assert not (tmp_path / "o").exists()


def _blob_gets(registry: Registry, since: int) -> dict[str, int]:
    gets: dict[str, int] = {}
    for e in registry.access_log(since):
        if e.method == "GET" and "/blobs/sha256:" in e.path and 200 <= e.status < 300:
            digest = e.path.rsplit("/", 1)[-1]
            gets[digest] = gets.get(digest, 0) + 1
    return gets


def test_build_to_a_registry_reuses_the_base_layers_it_has(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], base_image: Path, registry: Registry
) -> None:
    """A base the registry lacks (an oci: layout): its kept layers are copied into the
    push. A base in the registry: they are not downloaded again to be pushed (each base
    blob is read once, by the pull)."""
    base_layers = {la["digest"] for la in manifest(base_image, "v1")["layers"]}
    base_ref = registry.ref("os:v1")
    for base, dest in ((f"oci:{base_image}:v1", "other:v2"), (base_ref, "os:v2")):
        if base == base_ref:
            r = ocitree(capsys, "push", f"oci:{base_image}:v1", base_ref, "--tls-verify=false")
            assert r.code == 0, r.err
        ctx = _context(tmp_path / dest.replace(":", "-"), base_image)
        (ctx / "Containerfile").write_text(
            CONTAINERFILE.format(base=base.removeprefix("docker://"))
        )
        since = registry.log_position()
        r = ocitree(
            capsys, "build", "-f", ctx / "Containerfile", "-t", registry.ref(dest),
            "--tls-verify=false", "--secret", f"id=token,src={ctx.parent / 'token'}",
            "--cache-dir", tmp_path / "cache", ctx,
        )  # fmt: skip
        assert r.code == 0, r.err
        copied = "the registry lacks base layers" in r.err
        assert copied == (base != base_ref), r.err
        gets = _blob_gets(registry, since)
        assert all(gets.get(d, 0) <= 1 for d in base_layers), gets
        # the image is whole in the registry: every layer can be copied out
        out = tmp_path / f"copy-{dest.replace(':', '-')}"
        run(["skopeo", "copy", "--src-tls-verify=false", registry.ref(dest), f"oci:{out}:x"])
        layers = {la["digest"] for la in manifest(out, "x")["layers"]}
        assert layers & base_layers  # base layers kept as they are
