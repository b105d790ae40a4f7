"""Acceptance: the seed's build (``../shared/seed/000_12de822f7fa18b4d.txt``), made to work.

The seed's Containerfile installs MicroShift FROM an encapsulated RHEL for Edge image
with ``podman build``, which failed: semodule's rename of ``/etc/selinux/targeted/active``
gave "Invalid cross-device link" on overlayfs, and the scriptlets' ``systemctl`` calls
found no systemd. Here ``ocitree build`` runs the same Containerfile against stand-in
packages that keep MicroShift 4.12's scriptlets (support.microshift), served over HTTPS
by a server that demands the entitlement client certificate, on two bases:

- ``busybox``: the generated sample tree plus busybox (quick, no network). Busybox's sh
  has no brace expansion, so its RUN spells out the three ``rm`` paths (with
  ``/etc/{pki,rhsm,yum.repos.d}`` it would silently delete nothing). It has no rpm: the
  host's ``rpm --root`` runs the transaction.
- ``debian``: a Debian 12 minbase made with debootstrap (support.debian_base, cached per
  machine), with its real ``/bin/sh`` (bash, as on RHEL), ``systemctl`` and ``rpm``:
  the seed's RUN line verbatim, and the image's rpm runs the transaction.

Both bases carry RHEL's ``99-default-disable.preset`` (``disable *``): ``%systemd_post``
then enables nothing, which is why the seed's RUN enables microshift itself.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from integration.conftest import Committed
from ocitree.build.packages import tidy_rpmdb
from ocitree.cli.main import main
from ocitree.device.sysroot import Device
from ocitree.ostree.repo import Repo
from ocitree.run import run
from support import microshift
from support.debian_base import SELINUX_FILES, build_debian_base
from support.gentree import commit_tree
from support.images import config, content_objects, layer_members, manifest, ocitree
from support.microshift import Package, build_package
from support.rpmrepo_server import Pki, RepoServer, make_pki, serve
from support.sysroots import install_commit, make_sysroot

TOOLS = ("rpmbuild", "rpm", "createrepo_c", "openssl", "ostree", "bwrap")

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        any(shutil.which(t) is None for t in TOOLS),
        reason=f"one of {', '.join(TOOLS)} is missing (Debian packages rpm, createrepo-c, "
        "openssl, ostree, bubblewrap)",
    ),
    pytest.mark.skipif(
        importlib.util.find_spec("rpm") is None or importlib.util.find_spec("solv") is None,
        reason="the rpm Python module (python3-rpm) or libsolv's binding (solv) is missing",
    ),
]

TAG = "microshift"
RPMDB = "/usr/share/rpm"
SELINUX_STORE = "etc/selinux/targeted"
PULL_SECRET = b'{"auths": {"cloud.openshift.com": {"auth": "cHVsbC1zZWNyZXQtOGU0YjE3"}}}\n'
PRESET = b"# RHEL: units are enabled explicitly, or by an earlier preset file\ndisable *\n"
PRESET_PATH = "usr/lib/systemd/system-preset/99-default-disable.preset"
# The seed's step. Busybox's sh does not brace-expand: there the paths are spelled out.
RUN_SEED = (
    "RUN rpm-ostree install microshift && \\\n"
    "    systemctl enable microshift && \\\n"
    "    rm -rf /etc/{pki,rhsm,yum.repos.d} && \\\n"
    "    ostree container commit\n"
)
RUN_SPELLED_OUT = RUN_SEED.replace(
    "/etc/{pki,rhsm,yum.repos.d}", "/etc/pki /etc/rhsm /etc/yum.repos.d"
)
BUSYBOX_APPLETS = (
    "sh", "sed", "cp", "mv", "rm", "mkdir", "echo", "cat", "test", "[", "true", "sleep",
    "printf", "ls",
)  # fmt: skip


@dataclass(frozen=True)
class Base:
    kind: str
    image: Path  # OCI layout
    tag: str
    repo: Path  # holds the base commit, to install a device from
    commit: str
    osname: str

    @property
    def reference(self) -> str:
        return f"oci:{self.image}:{self.tag}"


@dataclass(frozen=True)
class Cdn:
    """The entitlement-protected repository the seed's repo files point at."""

    pki: Pki
    server: RepoServer
    url: str  # the repository's baseurl


@dataclass(frozen=True)
class Built:
    base: Base
    out: Path  # OCI layout with the built image
    build_only: dict[str, bytes]  # context files the RUN deleted: in no blob
    repo: Path  # the build's repo, holding the commit
    commit: str
    checkout: Path


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def cdn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cdn]:
    work = tmp_path_factory.mktemp("cdn")
    microshift.make_repo(work / "build", work / "www/rhocp-4.12")
    pki = make_pki(work / "pki")
    with serve(work / "www", pki) as server:
        yield Cdn(pki, server, f"{server.url}/rhocp-4.12")


def _rpmdb_with_userland(tree: Path, workdir: Path, provides: tuple[str, ...]) -> None:
    """An rpmdb whose one package stands for the base's userland (it provides /bin/sh)."""
    pkg = Package("base-userland", "1", "1", "noarch", provides=provides)
    rpm: list[str | Path] = ["rpm", "--root", tree, "--dbpath", RPMDB]
    rpm += ["--define", "_db_backend sqlite"]
    run([*rpm, "--initdb"])
    path = build_package(workdir, pkg)
    run([*rpm, "-i", "--justdb", "--nodeps", "--noscripts", "--nosignature", path])
    tidy_rpmdb(tree)  # as a composed base has it: the database alone


def _busybox_base(tmp_path_factory: pytest.TempPathFactory, sample: Committed) -> Base:
    busybox = shutil.which("busybox")
    if busybox is None:
        pytest.skip("busybox (busybox-static) is not installed")
    work = tmp_path_factory.mktemp("busybox-base")
    tree = work / "tree"
    shutil.copytree(sample.tree.path, tree, symlinks=True)
    shutil.copy(busybox, tree / "usr/bin/busybox")
    for name in BUSYBOX_APPLETS:
        (tree / "usr/bin" / name).symlink_to("busybox")
    (tree / "usr/lib/systemd/system").mkdir(parents=True)
    (tree / PRESET_PATH).parent.mkdir(parents=True)
    (tree / PRESET_PATH).write_bytes(PRESET)
    for rel, data in SELINUX_FILES.items():
        path = tree / "usr" / SELINUX_STORE / "active" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    _rpmdb_with_userland(tree, work / "rpms", ("/bin/sh", "busybox"))
    commit = commit_tree(tree, work / "repo", sample.ref, mode="bare")
    image = f"oci:{work / 'image'}:base"
    assert main(["-q", "encapsulate", "--repo", str(work / "repo"), sample.ref, image]) == 0
    return Base("busybox", work / "image", "base", work / "repo", commit, "sample")


def _debian_base(tmp_path_factory: pytest.TempPathFactory) -> Base:
    work = tmp_path_factory.mktemp("debian-base")
    deb = build_debian_base(work, preset=PRESET)
    return Base("debian", deb.image, deb.tag, deb.repo, deb.commit, "debian")


@pytest.fixture(
    scope="module",
    params=[
        # Under pytest-xdist, one worker per base: the module's fixtures are made once.
        pytest.param("busybox", marks=pytest.mark.xdist_group("seed-build-busybox")),
        pytest.param(
            "debian", marks=[pytest.mark.slow, pytest.mark.xdist_group("seed-build-debian")]
        ),
    ],
)
def base(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Base:
    if request.param == "busybox":
        return _busybox_base(tmp_path_factory, request.getfixturevalue("sample"))
    return _debian_base(tmp_path_factory)


def _context(ctx: Path, base: Base, cdn: Cdn) -> dict[str, bytes]:
    """The seed's build context: etc/ with the repo file, entitlement and pull secret."""
    build_only = {
        "etc/yum.repos.d/microshift.repo": microshift.repo_file(cdn.url).encode(),
        "etc/pki/entitlement/cert.pem": cdn.pki.client_cert.read_bytes(),
        "etc/pki/entitlement/key.pem": cdn.pki.client_key.read_bytes(),
        "etc/rhsm/ca/ca.pem": cdn.pki.ca_cert.read_bytes(),
    }
    for rel, data in {**build_only, "etc/crio/openshift-pull-secret": PULL_SECRET}.items():
        (ctx / rel).parent.mkdir(parents=True, exist_ok=True)
        (ctx / rel).write_bytes(data)
    run_line = RUN_SEED if base.kind == "debian" else RUN_SPELLED_OUT
    (ctx / "Containerfile").write_text(f"FROM {base.reference}\nCOPY etc /etc\n{run_line}")
    return build_only


@pytest.fixture(scope="module")
def built(base: Base, cdn: Cdn, tmp_path_factory: pytest.TempPathFactory) -> Built:
    work = tmp_path_factory.mktemp(f"seed-build-{base.kind}")
    ctx = work / "ctx"
    build_only = _context(ctx, base, cdn)
    out = work / "out"
    argv = ["build", "-t", f"oci:{out}:{TAG}", "--cache-dir", str(work / "cache"), str(ctx)]
    assert main(argv) == 0, "ocitree build failed: its output is above"
    # The build's own repo has the commit the image carries (the device test checks that
    # a device pulling the image gets its tree).
    commit = config(out, TAG)["config"]["Labels"]["ostree.commit"]
    repo = work / "cache/repo"
    checkout = work / "checkout"
    run(["ostree", f"--repo={repo}", "checkout", commit, checkout])
    return Built(base, out, build_only, repo, commit, checkout)


# --------------------------------------------------------------------------- helpers


def _image_rpm_names(root: Path, *dbpath: str) -> set[str]:
    """``rpm -qa`` by the image's own rpm where it has one, else by the host's ``rpm
    --root``; either way with ``root`` read-only, as /usr is on a device (and because
    ``root`` is a checkout hardlinked to repo objects, which sqlite would write to)."""
    if (root / "usr/bin/rpm").exists():
        sandbox: list[str | Path] = ["bwrap", "--ro-bind", root, "/"]
        rpm: list[str | Path] = ["rpm", *dbpath]
    else:
        sandbox = ["bwrap", "--ro-bind", "/", "/", "--ro-bind", root, root]
        rpm = ["rpm", "--root", root, "--dbpath", RPMDB]
    sandbox += ["--proc", "/proc", "--dev", "/dev", "--unshare-all", "--"]
    out = run([*sandbox, *rpm, "-qa", "--qf", "%{NAME}\\n"]).stdout.decode()
    return set(out.split())


def _enabled(etc: Path, unit: str) -> bool:
    link = etc / "systemd/system/multi-user.target.wants" / unit
    return link.is_symlink() and str(link.readlink()) == f"/usr/lib/systemd/system/{unit}"


def _blob_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        return gzip.decompress(data)
    if data[:4] == b"\x28\xb5\x2f\xfd":
        import zstandard

        return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    return data


def _needles(data: bytes) -> list[bytes]:
    """Distinctive 32-byte slices of ``data`` (from the middle of a PEM body, not its
    armour lines), and the whole file if it is small."""
    body = data.strip()
    picks = [body[i : i + 32] for i in (len(body) // 4, len(body) // 2, 3 * len(body) // 4)]
    return [*picks, *([body] if len(body) < 2048 else [])]


# --------------------------------------------------------------------------- the tests


def test_seed_build_installs_microshift_with_its_scriptlets(built: Built) -> None:
    co = built.checkout
    etc = co / "usr/etc"
    assert not (co / "etc").exists()
    names = _image_rpm_names(co, "--dbpath", RPMDB)
    assert set(microshift.PACKAGE_NAMES) <= names, names
    # ...in the base's rpmdb, where the base keeps it, and nowhere else.
    assert (co / RPMDB.lstrip("/") / "rpmdb.sqlite").is_file()
    assert not any((co / d).exists() for d in ("var/lib/rpm", "usr/lib/sysimage/rpm"))
    assert (co / "usr/bin/microshift").read_bytes().startswith(b"#!/bin/sh\n")
    # Enabled by the RUN's systemctl; %systemd_post's preset left it alone (disable *).
    assert _enabled(etc, "microshift.service")
    assert not _enabled(etc, "microshift-ovs-init.service")
    # microshift-selinux's %post: libsemanage's commit renamed the base's directories.
    store = co / "usr" / SELINUX_STORE
    assert (store / "active/modules/200/microshift/cil").read_bytes() == microshift.MODULE_BYTES
    assert (store / "active/modules/100/base/cil").is_file()
    assert (store / "previous/modules/100/base/cil").is_file()
    assert not (store / "previous/modules/200").exists() and not (store / "tmp").exists()
    # microshift-networking's %post: sed -i on openvswitch's config file.
    assert (etc / "sysconfig/openvswitch").read_text() == microshift.OVS_SYSCONFIG_EDITED
    assert (etc / "crio/openshift-pull-secret").read_bytes() == PULL_SECRET
    assert (etc / "crio/crio.conf").is_file() and (etc / "microshift/config.yaml").is_file()
    for gone in ("pki", "rhsm", "yum.repos.d"):
        assert not (etc / gone).exists(), gone


def test_scriptlet_systemctl_calls_are_served(built: Built) -> None:
    """rpm's scriptlets run with PATH=/sbin:/bin:/usr/sbin:/usr/bin: their systemctl is
    served only because the build puts its shim there: over the image's own systemctl
    (debian, whose rpm runs in the sandbox), or, where the image has no rpm (busybox),
    into the root for the host's `rpm --root` run."""
    # microshift-networking's %post: `systemctl enable --now --quiet openvswitch || true`
    assert _enabled(built.checkout / "usr/etc", "openvswitch.service")


def test_seed_build_leaks_no_entitlement_secret_into_any_blob(built: Built) -> None:
    blobs = sorted((built.out / "blobs/sha256").iterdir())
    assert len(blobs) >= 3
    needles = [(rel, needle) for rel, data in built.build_only.items() for needle in _needles(data)]
    for blob in blobs:
        data = _blob_bytes(blob)
        for rel, needle in needles:
            assert needle not in data, f"{blob.name} holds bytes of {rel}"
    # ...and it does hold what the step kept (the scan reads the payloads).
    assert any(PULL_SECRET in _blob_bytes(b) for b in blobs)


def _layer_objects(
    layout: Path, layers: list[dict[str, object]], known: dict[str, set[str]]
) -> list[set[str]]:
    """The content objects of each layer; ``known`` caches them by digest."""
    out = []
    for la in layers:
        digest = str(la["digest"])
        if digest not in known:
            known[digest] = set(content_objects(layer_members(layout, digest)))
        out.append(known[digest])
    return out


def _components(layer: dict[str, object]) -> set[str]:
    notes = layer.get("annotations") or {}
    assert isinstance(notes, dict)
    return {c for c in str(notes.get("ostree.components", "")).split(",") if c}


def _tree_files(repo: Path, commit: str) -> dict[str, str]:
    r = Repo(repo)
    return {e.path: e.checksum for e in r.iter_tree(r.commit(commit)) if e.kind != "dir"}


def test_seed_build_keeps_unchanged_base_layers_byte_identical(built: Built) -> None:
    base = built.base
    old_layers = manifest(base.image, base.tag)["layers"]
    new_layers = manifest(built.out, TAG)["layers"]
    assert len(new_layers) >= len(old_layers)
    known: dict[str, set[str]] = {}
    old_objs = _layer_objects(base.image, old_layers, known)
    new_objs = _layer_objects(built.out, new_layers, known)
    old_files = _tree_files(base.repo, base.commit)
    new_files = _tree_files(built.repo, built.commit)
    # the rpmdb alone: its journal would be a new (empty) file of every build
    assert not [p for p in new_files if p.startswith("usr/share/rpm/rpmdb.sqlite-")]
    gone = {c for p, c in old_files.items() if new_files.get(p) != c}
    added = {c for p, c in new_files.items() if old_files.get(p) != c}
    touched = {0}  # the commit layer
    touched |= {i for i, objs in enumerate(old_objs) if objs & gone}
    touched |= {i for i, objs in enumerate(new_objs) if objs & added}
    kept = 0
    for i in range(1, len(old_layers)):
        # Components stay in their layer; new ones go to the reserved (empty) layer.
        assert _components(old_layers[i]) <= _components(new_layers[i]), i
        if i in touched:
            continue
        assert new_objs[i] == old_objs[i], i
        assert new_layers[i]["digest"] == old_layers[i]["digest"], (
            f"layer {i} ({_components(old_layers[i])}) has the same content but new bytes"
        )
        kept += 1
    # Only what the step changed is new: the rpmdb's layer, the SELinux store's, the
    # systemd links', the reserved one. Everything else is shared with the base.
    changed = [i for i in range(1, len(old_layers)) if i in touched]
    assert len(changed) <= 4 and kept == len(old_layers) - 1 - len(changed), (
        [sorted(_components(old_layers[i])) for i in changed],
    )
    # The new packages' files are in the base's reserved layer or in new layers.
    reserved = {i for i, la in enumerate(old_layers) if i and not _components(la)}
    microshift_bin = new_files["usr/bin/microshift"]
    (where,) = [i for i, objs in enumerate(new_objs) if microshift_bin in objs]
    assert where in reserved or where >= len(old_layers), where


def test_device_rebased_to_the_built_image_has_microshift(
    built: Built, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = built.base
    with make_sysroot(tmp_path, base.osname, size="1G") as sysroot:
        install_commit(sysroot, base.repo, base.commit, osname=base.osname, kargs=["quiet"])
        imgref = f"ostree-unverified-image:oci:{built.out}:{TAG}"
        r = ocitree(capsys, "rebase", imgref, "--sysroot", str(sysroot))
        assert r.code == 0, r.err
        r = ocitree(capsys, "status", "--sysroot", str(sysroot), "--json")
        deployments = json.loads(r.out)["deployments"]
        assert deployments[0]["image_reference"] == imgref
        # Deployed is the merge commit a pull writes over the image's commit: same tree.
        deployed = Repo(sysroot / "ostree/repo").commit(deployments[0]["checksum"])
        ours = Repo(built.repo).commit(built.commit)
        assert (deployed.root_tree, deployed.root_meta) == (ours.root_tree, ours.root_meta)
        dev = Device(sysroot)
        root = dev.deployment_path(dev.deployments()[0])
        etc = root / "etc"
        assert _enabled(etc, "microshift.service")
        assert (root / "usr/bin/microshift").read_bytes().startswith(b"#!/bin/sh\n")
        assert (etc / "crio/openshift-pull-secret").read_bytes() == PULL_SECRET
        assert (etc / "sysconfig/openvswitch").read_text() == microshift.OVS_SYSCONFIG_EDITED
        store = etc / "selinux/targeted"
        assert (store / "active/modules/200/microshift/cil").is_file()
        assert not (etc / "pki/entitlement").exists()
        # The deployment's /etc/rpm/macros.ocitree points the image's rpm at /usr/share/rpm.
        dbpath = () if base.kind == "debian" else ("--dbpath", RPMDB)
        assert set(microshift.PACKAGE_NAMES) <= _image_rpm_names(root, *dbpath)


def _run_selinux_post(etc: Path, module_dir: Path) -> tuple[int, str]:
    """microshift-selinux's %post as rpm runs it ($1 = 1), with ``etc`` as /etc."""
    module = f"/module/{Path(microshift.MODULE_FILE).name}"
    script = microshift.SELINUX_POST.replace(microshift.MODULE_FILE, module)
    argv: list[str | Path] = [
        "bwrap", "--ro-bind", "/usr", "/usr", "--symlink", "usr/bin", "/bin",
        "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64",
        "--bind", etc, "/etc", "--ro-bind", module_dir, "/module",
        "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--unshare-all", "--",
        "/bin/sh", "-c", script, "microshift-selinux", "1",
    ]  # fmt: skip
    proc = run(argv, check=False)
    return proc.returncode, proc.stderr.decode(errors="replace")


def test_selinux_stand_in_fails_on_overlayfs_as_semodule_did(tmp_path: Path) -> None:
    """The stand-in is faithful: where the seed's podman build had overlayfs, its
    renames of the base's directories fail as libsemanage's did; on a plain directory,
    as ocitree's build root is, they succeed."""
    module_dir = tmp_path / "module"
    module_dir.mkdir()
    (module_dir / Path(microshift.MODULE_FILE).name).write_bytes(microshift.MODULE_BYTES)
    lower = tmp_path / "lower"
    for rel, data in SELINUX_FILES.items():
        p = lower / "etc/selinux/targeted/active" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    plain = tmp_path / "plain"
    shutil.copytree(lower, plain)
    code, err = _run_selinux_post(plain / "etc", module_dir)
    assert code == 0, err
    assert (plain / "etc/selinux/targeted/active/modules/200/microshift/cil").is_file()
    assert (plain / "etc/selinux/targeted/previous/modules/100/base/cil").is_file()

    merged, upper, work = (tmp_path / n for n in ("merged", "upper", "work"))
    for d in (merged, upper, work):
        d.mkdir()
    opts = f"lowerdir={lower},upperdir={upper},workdir={work},redirect_dir=off"
    if run(["mount", "-t", "overlay", "overlay", "-o", opts, merged], check=False).returncode:
        pytest.skip("cannot mount overlayfs here")
    try:
        code, err = _run_selinux_post(merged / "etc", module_dir)
    finally:
        run(["umount", merged])
    assert code == 1
    assert (
        "Error while renaming /etc/selinux/targeted/active to /etc/selinux/targeted/previous" in err
    )
    assert "Invalid cross-device link" in err
