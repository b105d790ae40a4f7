"""``ocitree compose``: Sample Linux (real RPMs, rpmbuild) from a blueprint to a commit
that ``ostree admin deploy`` boots, and trees made by other tools (``--from-rootfs``)."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import shutil
import tarfile
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from ocitree.build.blueprint import BlueprintError
from ocitree.build.packages import resolve
from ocitree.build.rpmrepo import repo_from_argument
from ocitree.cli.main import main
from ocitree.compose.compose import ComposeOptions, ComposeResult, compose
from ocitree.errors import UserError
from ocitree.ostree.repo import Repo
from ocitree.ostree.serve import make_server
from ocitree.run import find_tool, run
from support.distro import kver
from support.sysroots import deployment_root, make_sysroot

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        importlib.util.find_spec("rpm") is None or importlib.util.find_spec("solv") is None,
        reason="the rpm Python module (python3-rpm) or the solv binding (PyPI solv) is missing",
    ),
]

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOcitreeComposeKey core@edge"
HASH = "$6$saltsalt$3Jt2YAZbYl1QdzSGBw0M3ldeXmhPVD0tSu5KiB4vVJmVIxgqLMEv6tK9jEYj/YmXTz7x"
BLUEPRINT = f'''\
name = "edge"
description = "Sample Linux for the edge"
version = "1.0.0"
distro = "sample-1"

[[groups]]
name = "core"

[[groups]]
name = "agent"

[[packages]]
name = "sample-tools"
version = "1.0*"

[customizations]
hostname = "edge-01"

[[customizations.user]]
name = "core"
password = "{HASH}"
key = "{KEY}"
groups = ["wheel"]

[customizations.services]
enabled = ["sample-agent.service"]
'''
REF = "sample/1/x86_64/edge"


def _options(tmp: Path, repo_dir: Path, text: str = BLUEPRINT, **kw: object) -> ComposeOptions:
    bp = tmp / "blueprint.toml"
    bp.write_text(text)
    return ComposeOptions(
        blueprint=bp,
        repo=tmp / "repo",
        rpm_repos=(str(repo_dir),),
        cache_dir=tmp / "cache",
        **kw,  # type: ignore[arg-type]
    )


@pytest.fixture(scope="module")
def composed(
    sample_distro: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[ComposeOptions, ComposeResult]:
    tmp = tmp_path_factory.mktemp("compose")
    opts = _options(tmp, sample_distro, tarball=tmp / "edge-commit.tar")
    return opts, compose(opts)


def _cat(repo: Path, commit: str, path: str) -> str:
    return run(["ostree", f"--repo={repo}", "cat", commit, path]).stdout.decode()


def _ls(repo: Path, commit: str) -> dict[str, str]:
    out = run(["ostree", f"--repo={repo}", "ls", "-R", commit]).stdout.decode()
    entries = {}
    for line in out.splitlines():
        fields = line.split(None, 4)
        path = fields[4]
        entries[path.split(" -> ")[0]] = line
    return entries


def test_layout_is_what_rpm_ostree_makes(composed: tuple[ComposeOptions, ComposeResult]) -> None:
    opts, result = composed
    assert result.ref == REF
    assert result.kernel == kver()
    entries = _ls(opts.repo, result.commit)
    links = {
        "/home": "var/home", "/root": "var/roothome", "/opt": "var/opt", "/srv": "var/srv",
        "/mnt": "var/mnt", "/media": "run/media", "/usr/local": "../var/usrlocal",
        "/ostree": "sysroot/ostree", "/bin": "usr/bin",
        "/usr/lib/sysimage/rpm": "../../share/rpm",
    }  # fmt: skip
    for link, target in links.items():
        assert entries[link].startswith("l") and entries[link].endswith(f"-> {target}"), link
    assert entries["/tmp"].startswith("d01777")
    for d in ("/dev", "/proc", "/sys", "/run", "/sysroot", "/boot"):
        assert not [p for p in entries if p.startswith(d + "/")], f"{d} must be empty"
    # each device makes its own machine id; the build's placeholder is gone
    assert _cat(opts.repo, result.commit, "/usr/etc/machine-id") == ""
    var = [p for p in entries if p.startswith("/var/")]
    assert var == [], "/var must be empty in a commit"
    assert "/etc" not in entries
    modules = f"/usr/lib/modules/{kver()}"
    assert {f"{modules}/vmlinuz", f"{modules}/initramfs.img"} <= set(entries)
    assert not [p for p in entries if p.startswith("/boot/")]
    assert "/usr/share/rpm/rpmdb.sqlite" in entries
    assert not [p for p in entries if p.startswith("/usr/share/rpm/rpmdb.sqlite-")]
    # the %post of sample-tools ran in the root, with the root's own shell
    assert "/usr/etc/sample/post-ran" in entries
    assert _cat(opts.repo, result.commit, "/usr/etc/hostname") == "edge-01\n"
    passwd = _cat(opts.repo, result.commit, "/usr/etc/passwd")
    assert "core:x:1000:1000::/var/home/core:" in passwd
    assert "wheel:x:10:core" in _cat(opts.repo, result.commit, "/usr/etc/group")
    wants = "/usr/etc/systemd/system/multi-user.target.wants/sample-agent.service"
    assert wants in entries


def test_version_globs_and_groups_choose_the_packages(
    composed: tuple[ComposeOptions, ComposeResult],
) -> None:
    _, result = composed
    names = {n.rsplit("-", 2)[0]: n for n in result.packages}
    assert names["sample-tools"].startswith("sample-tools-1.0-1.")  # 1.1 exists; 1.0* asked
    assert "sample-agent" in names  # from the group agent
    assert {"filesystem", "setup", "sample-shell", "sample-release", "kernel"} <= set(names)


def test_var_becomes_tmpfiles_entries_and_nothing_is_lost(
    composed: tuple[ComposeOptions, ComposeResult],
) -> None:
    opts, result = composed
    conf = _cat(opts.repo, result.commit, "/usr/lib/tmpfiles.d/ocitree-var.conf")
    lines = conf.splitlines()
    assert "d /var/lib/sample 0755 root root -" in lines
    assert "L /var/lib/rpm - - - - ../../usr/share/rpm" in lines
    assert "L /var/run - - - - ../run" in lines
    state = "C /var/lib/sample/state - - - - /usr/share/factory/var/lib/sample/state"
    assert state in lines
    keys = "/var/home/core/.ssh/authorized_keys"
    assert f"C {keys} - - - - /usr/share/factory{keys}" in lines
    assert KEY in _cat(opts.repo, result.commit, f"/usr/share/factory{keys}")
    macros = _cat(opts.repo, result.commit, "/usr/lib/rpm/macros.d/macros.ocitree")
    assert "%_dbpath /usr/share/rpm" in macros


def test_commit_metadata(composed: tuple[ComposeOptions, ComposeResult]) -> None:
    opts, result = composed
    commit = Repo(opts.repo).commit(result.commit)
    meta = commit.metadata
    assert meta["version"] == "1.0.0"
    assert meta["ostree.bootable"] is True
    assert meta["ostree.linux"] == kver()
    assert meta["rpmostree.inputhash"] == result.input_hash
    pkglist = {p[0]: p for p in meta["rpmostree.rpmdb.pkglist"]}
    assert pkglist["sample-tools"][1:4] == ("0", "1.0", "1")
    assert commit.parent is None
    assert commit.timestamp == result.timestamp > 0
    refs = run(["ostree", f"--repo={opts.repo}", "rev-parse", REF]).stdout.decode().strip()
    assert refs == result.commit


def test_same_inputs_give_the_same_commit_and_tarball(
    composed: tuple[ComposeOptions, ComposeResult], tmp_path: Path
) -> None:
    opts, first = composed
    again = replace(opts, repo=tmp_path / "repo", tarball=tmp_path / "again.tar")
    second = compose(again)
    assert (second.commit, second.input_hash) == (first.commit, first.input_hash)
    assert opts.tarball is not None
    assert opts.tarball.read_bytes() == (tmp_path / "again.tar").read_bytes()
    # into the same repository once more: the same commit, still without a parent
    assert compose(replace(opts, tarball=None)).commit == first.commit


def test_the_epoch_is_the_inputs_not_the_day(
    composed: tuple[ComposeOptions, ComposeResult],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Everything dated in the tree (rpm's install times, the user's password date) takes
    the epoch compose chose, not the clock: giving that epoch explicitly changes
    nothing."""
    opts, first = composed
    shadow = _cat(opts.repo, first.commit, "/usr/etc/shadow")
    core = next(line for line in shadow.splitlines() if line.startswith("core:"))
    assert core.split(":")[2] == str(first.timestamp // 86400)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", str(first.timestamp))
    again = compose(replace(opts, repo=tmp_path / "repo", tarball=None))
    assert again.commit == first.commit


def test_tarball_is_osbuilds_edge_commit(
    composed: tuple[ComposeOptions, ComposeResult], tmp_path: Path
) -> None:
    opts, result = composed
    assert opts.tarball is not None
    with tarfile.open(opts.tarball) as tf:
        names = tf.getnames()
        assert "./repo/config" in names and "./compose.json" in names
        assert {m.uid for m in tf.getmembers()} == {0}
    run(["tar", "-xf", opts.tarball, "-C", tmp_path])
    info = json.loads((tmp_path / "compose.json").read_text())
    content = run(["ostree", f"--repo={opts.repo}", "show", result.commit]).stdout.decode()
    assert info == {
        "ref": REF,
        "ostree-commit": result.commit,
        "ostree-content-checksum": content.split("ContentChecksum:")[1].split()[0],
        "ostree-timestamp": "2023-11-14T22:13:20Z",  # the sample packages' build time
        "rpm-ostree-inputhash": result.input_hash,
        "ostree-version": "1.0.0",
    }
    repo = tmp_path / "repo"
    assert run(["ostree", f"--repo={repo}", "rev-parse", REF]).stdout.decode().strip() == (
        result.commit
    )
    run(["ostree", f"--repo={repo}", "fsck"])


def test_commit_deploys_and_tmpfiles_seed_var(
    composed: tuple[ComposeOptions, ComposeResult], tmp_path: Path
) -> None:
    """Installed as the kickstart's ``ostreesetup --url`` does: pulled over HTTP from
    ``ocitree serve``, deployed with ``ostree admin deploy``."""
    opts, result = composed
    server = make_server(opts.repo, port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with make_sysroot(tmp_path, "sample") as sysroot:
            repo = sysroot / "ostree/repo"
            run(
                ["ostree", f"--repo={repo}", "remote", "add", "--no-gpg-verify", "edge", server.url]
            )
            run(["ostree", f"--repo={repo}", "pull", "edge", REF])
            run(["ostree", "admin", "deploy", f"--sysroot={sysroot}", "--os=sample", f"edge:{REF}"])
            _check_deployment(sysroot, result)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def _check_deployment(sysroot: Path, result: ComposeResult) -> None:
    deployed = deployment_root(sysroot, "sample", result.commit)
    assert (deployed / "etc/hostname").read_text() == "edge-01\n"
    assert (deployed / "usr/lib/os-release").is_file()
    entries = list((sysroot / "boot/loader/entries").glob("*.conf"))
    assert len(entries) == 1
    assert "Sample Linux" in entries[0].read_text()
    status = run(["ostree", "admin", "status", f"--sysroot={sysroot}"]).stdout.decode()
    assert result.commit in status and "Version: 1.0.0" in status
    tmpfiles = shutil.which("systemd-tmpfiles")
    if tmpfiles is None:
        return  # the deployment itself is checked; seeding /var needs systemd-tmpfiles
    # What the first boot does: /var is made from the tmpfiles.d entries alone.
    run([tmpfiles, f"--root={deployed}", "--create"])
    state = deployed / "var/lib/sample/state"
    assert state.is_file() and state.read_bytes() != b""
    keys = deployed / "var/home/core/.ssh/authorized_keys"
    assert KEY in keys.read_text()
    assert (keys.stat().st_uid, oct(keys.stat().st_mode & 0o777)) == (1000, "0o600")
    assert (deployed / "var/lib/rpm").readlink() == Path("../../usr/share/rpm")


# --------------------------------------------------------------------------- bad input


def test_unresolvable_package_names_what_is_missing(sample_distro: Path, tmp_path: Path) -> None:
    text = BLUEPRINT.replace(
        "[customizations]\n", '[[packages]]\nname = "microshift"\n\n[customizations]\n', 1
    )
    opts = _options(tmp_path, sample_distro, text)
    with pytest.raises(UserError, match="no package named microshift"):
        compose(opts)
    assert not opts.repo.exists()


def test_version_glob_without_a_match_lists_the_versions(
    sample_distro: Path, tmp_path: Path
) -> None:
    opts = _options(tmp_path, sample_distro, BLUEPRINT.replace('"1.0*"', '"2.*"'))
    with pytest.raises(
        UserError, match=r"no version of sample-tools matches 2\.\*.*1\.0-1, 1\.1-1"
    ):
        compose(opts)
    assert not opts.repo.exists()


def test_blueprint_errors_are_all_reported_with_lines(sample_distro: Path, tmp_path: Path) -> None:
    text = (
        'name = "edge"\ndistro = "sample-1"\ncolour = "blue"\n'
        '[[packages]]\nname = "sample-tools"\nversion = ">= 1"\n'
        "[customizations]\nhostname = 7\n"
    )
    opts = _options(tmp_path, sample_distro, text)
    with pytest.raises(BlueprintError) as info:
        compose(opts)
    assert [line for line, _ in info.value.errors] == [3, 6, 8]
    assert not opts.repo.exists() and not opts.cache_dir.exists()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('name = "x"\ndistro = "plan9-4"\n', "unknown distro 'plan9-4'"),
        ('name = "x"\n', "the blueprint names no distro"),
        ('name = "x"\ndistro = "sample-1"\n[[groups]]\nname = "gnome"\n', "no package group gnome"),
    ],
)
def test_bad_distro_or_group(sample_distro: Path, tmp_path: Path, text: str, message: str) -> None:
    opts = _options(tmp_path, sample_distro, text)
    with pytest.raises(UserError, match=message):
        compose(opts)
    assert not opts.repo.exists()


def test_unknown_distro_in_the_blueprint_has_its_line(sample_distro: Path, tmp_path: Path) -> None:
    opts = _options(tmp_path, sample_distro, 'name = "x"\n\ndistro = "plan9-4"\n')
    with pytest.raises(UserError, match=r"blueprint.toml:3: distro: unknown distro 'plan9-4'"):
        compose(opts)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"rpm_repos": ("/nonexistent/rpms",)}, "--rpm-repo /nonexistent/rpms: no such directory"),
        ({"tarball": Path("/nonexistent/dir/edge.tar")}, "--tarball /nonexistent/dir/edge.tar"),
    ],
)
def test_bad_options_change_nothing_on_disk(
    sample_distro: Path, tmp_path: Path, change: dict[str, object], message: str
) -> None:
    opts = replace(_options(tmp_path, sample_distro), **change)  # type: ignore[arg-type]
    with pytest.raises(UserError, match=message):
        compose(opts)
    assert not opts.repo.exists() and not opts.cache_dir.exists()


def test_a_distro_without_repositories_asks_for_them(tmp_path: Path) -> None:
    opts = replace(_options(tmp_path, tmp_path), rpm_repos=())
    with pytest.raises(UserError, match="sample-1 has no published repositories") as info:
        compose(opts)
    assert "--rpm-repo" in (info.value.hint or "")


def test_cli_prints_the_commit_as_json(
    composed: tuple[ComposeOptions, ComposeResult],
    sample_distro: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    opts, result = composed
    argv = [
        "-q", "compose", str(opts.blueprint), "--repo", str(tmp_path / "repo"),
        "--rpm-repo", str(sample_distro), "--cache-dir", str(opts.cache_dir), "--json",
    ]  # fmt: skip
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["commit"], out["ref"], out["kernel"]) == (result.commit, REF, kver())


# --------------------------------------------------------------------------- --from-rootfs

ROOTFS_KVER = "6.6.0-other"


def _rootfs(base: Path, *, initramfs: bool = True, dracut: bool = False) -> Path:
    """A tree as another tool leaves it: real /etc, /home, /var, the kernel in /boot."""
    root = base / "rootfs"
    (root / "usr/bin").mkdir(parents=True)
    shutil.copy(find_tool("busybox", package="busybox-static"), root / "usr/bin/busybox")
    for name in ("sh", "cat", "echo"):
        (root / "usr/bin" / name).symlink_to("busybox")
    (root / "bin").symlink_to("usr/bin")
    (root / "usr/lib").mkdir()
    (root / "usr/lib/os-release").write_text('ID=other\nVERSION_ID="2.5"\nNAME="Other"\n')
    (root / "etc").mkdir()
    (root / "etc/os-release").symlink_to("../usr/lib/os-release")
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc/group").write_text("root:x:0:\n")
    (root / "boot").mkdir()
    (root / "boot" / f"vmlinuz-{ROOTFS_KVER}").write_bytes(b"kernel\n" * 100)
    (root / "boot" / f"config-{ROOTFS_KVER}").write_text("CONFIG_X=y\n")
    if initramfs:
        (root / "boot" / f"initramfs-{ROOTFS_KVER}.img").write_bytes(b"initramfs\n" * 100)
    if dracut:
        # the tree's own dracut, run inside the tree: writes the file it is asked for
        script = '#!/bin/sh\nfor out; do :; done\necho "made by dracut $*" > "$out"\n'
        (root / "usr/bin/dracut").write_text(script)
        (root / "usr/bin/dracut").chmod(0o755)
    (root / "home/alice").mkdir(parents=True)
    (root / "home/alice/notes.txt").write_text("keep me\n")
    (root / "var/lib/other").mkdir(parents=True)
    (root / "var/lib/other/data").write_text("state\n")
    (root / "var/log").mkdir()
    (root / "var/log/install.log").write_text("dropped\n")
    (root / "var/lib/systemd").mkdir()
    (root / "var/lib/systemd/random-seed").write_bytes(b"\x01" * 32)
    (root / "opt/vendor/bin").mkdir(parents=True)
    (root / "opt/vendor/bin/tool").write_text("#!/bin/sh\n")
    (root / "tmp").mkdir()
    (root / "tmp/leftover").write_text("x\n")
    for p in root.rglob("*"):
        os.utime(p, (1_600_000_000, 1_600_000_000), follow_symlinks=False)
    return root


def _tar(root: Path, dest: Path, extra: tarfile.TarInfo | None = None) -> Path:
    with tarfile.open(dest, "w") as tf:
        tf.add(root, arcname=".")
        if extra is not None:
            tf.addfile(extra, io.BytesIO(b"x" * extra.size) if extra.isreg() else None)
    return dest


def _rootfs_options(tmp: Path, source: Path) -> ComposeOptions:
    bp = tmp / "bp.toml"
    bp.write_text('name = "other"\nversion = "2.5.0"\n[customizations]\nhostname = "o1"\n')
    return ComposeOptions(
        blueprint=bp, repo=tmp / "repo", from_rootfs=source, cache_dir=tmp / "cache"
    )


def test_from_rootfs_tarball(tmp_path: Path) -> None:
    dev = tarfile.TarInfo("./dev/null")
    dev.type, dev.devmajor, dev.devminor = tarfile.CHRTYPE, 1, 3
    source = _tar(_rootfs(tmp_path), tmp_path / "rootfs.tar", dev)
    opts = _rootfs_options(tmp_path, source)
    result = compose(opts)
    assert result.ref == "other/2/x86_64/edge"  # from the tree's os-release
    assert result.kernel == ROOTFS_KVER and result.packages == ()
    assert result.timestamp == 1_600_000_000  # the newest file of the tarball
    entries = _ls(opts.repo, result.commit)
    modules = f"/usr/lib/modules/{ROOTFS_KVER}"
    assert {f"{modules}/vmlinuz", f"{modules}/initramfs.img", f"{modules}/config"} <= set(entries)
    assert "/usr/share/factory/var/home/alice/notes.txt" in entries
    assert "/usr/share/factory/var/lib/other/data" in entries
    assert "/usr/share/factory/var/log/install.log" not in entries
    assert "/usr/share/factory/var/lib/systemd/random-seed" not in entries  # per machine
    assert "/dev/null" not in entries and "/tmp/leftover" not in entries
    # /opt of the tree is in /usr (updates reach it), linked from /var/opt
    assert "/usr/lib/opt/vendor/bin/tool" in entries
    assert entries["/opt"].endswith("-> var/opt")
    conf = _cat(opts.repo, result.commit, "/usr/lib/tmpfiles.d/ocitree-var.conf")
    assert "L /var/opt/vendor - - - - /usr/lib/opt/vendor" in conf.splitlines()
    assert "d /var/lib/other 0755 root root -" in conf.splitlines()
    assert _cat(opts.repo, result.commit, "/usr/etc/hostname") == "o1\n"
    assert "rpmostree.rpmdb.pkglist" not in Repo(opts.repo).commit(result.commit).metadata
    # the same tarball again: the same commit
    again = compose(replace(opts, repo=tmp_path / "repo2", cache_dir=tmp_path / "cache2"))
    assert again.commit == result.commit


@pytest.mark.parametrize("shipped", [False, True], ids=["no-initramfs", "packaged-initramfs"])
def test_from_rootfs_directory_makes_the_initramfs_with_the_trees_dracut(
    tmp_path: Path, shipped: bool
) -> None:
    """With dracut in the tree, the initramfs is always made with ostree's module; one
    the kernel's scriptlets made (without it) is replaced."""
    root = _rootfs(tmp_path, initramfs=shipped, dracut=True)
    opts = _rootfs_options(tmp_path, root)
    result = compose(opts)
    made = _cat(opts.repo, result.commit, f"/usr/lib/modules/{ROOTFS_KVER}/initramfs.img")
    assert made.startswith("made by dracut --no-hostonly --reproducible --add ostree --force")
    assert (root / "home/alice/notes.txt").is_file()  # the source tree is left alone


def test_from_rootfs_without_initramfs_or_dracut_is_refused(tmp_path: Path) -> None:
    opts = _rootfs_options(tmp_path, _rootfs(tmp_path, initramfs=False))
    with pytest.raises(UserError, match="ships no initramfs and the tree has no dracut"):
        compose(opts)
    assert not opts.repo.exists()


def test_from_rootfs_tar_entry_escaping_the_root_is_refused(tmp_path: Path) -> None:
    evil = tarfile.TarInfo("../escaped")
    evil.size = 1
    source = _tar(_rootfs(tmp_path), tmp_path / "rootfs.tar", evil)
    opts = _rootfs_options(tmp_path, source)
    with pytest.raises(UserError, match="leaves the destination"):
        compose(opts)
    assert not (tmp_path / "escaped").exists() and not opts.repo.exists()


@pytest.mark.parametrize(
    "link",
    ["var", "etc", "usr/share/factory", "boot", "var/home", "usr/lib/modules"],
)
def test_links_in_the_tree_never_lead_the_layout_out_of_it(tmp_path: Path, link: str) -> None:
    """A tree whose directories are links (to outside, absolute) is refused, and what
    the links point at is untouched."""
    outside = tmp_path / "outside"
    (outside / "lib/other").mkdir(parents=True)
    (outside / "lib/other/precious").write_text("host file\n")
    root = _rootfs(tmp_path)
    target = root / link
    if target.is_dir():
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(outside)
    if link == "var/home":
        (root / "home/alice").rename(root / "alice")  # /home moves into /var/home
    before = sorted(str(p.relative_to(outside)) for p in outside.rglob("*"))
    opts = _rootfs_options(tmp_path, root)
    with pytest.raises(UserError, match="is a symbolic link in the tree"):
        compose(opts)
    assert sorted(str(p.relative_to(outside)) for p in outside.rglob("*")) == before
    assert (outside / "lib/other/precious").read_text() == "host file\n"
    assert not opts.repo.exists()


def test_distro_excludes_are_never_installed(sample_distro: Path, tmp_path: Path) -> None:
    """A distro's exclude list (rng-tools on RHEL) keeps a package out even when a
    request needs it: the resolver says so rather than installing it."""
    repos = [repo_from_argument(str(sample_distro))]
    root = tmp_path / "root"
    root.mkdir()
    chosen = resolve(root, ["sample-base"], repos=repos, cache=tmp_path / "c", installed=[])
    assert any(c.nevra.startswith("sample-shell-") for c in chosen)
    with pytest.raises(UserError, match="sample-shell"):
        resolve(
            root, ["sample-base"], repos=repos, cache=tmp_path / "c", installed=[],
            exclude=["sample-shell"],
        )  # fmt: skip


def test_from_rootfs_refuses_packages_and_what_is_no_tree(tmp_path: Path) -> None:
    root = _rootfs(tmp_path)
    opts = _rootfs_options(tmp_path, root)
    opts.blueprint.write_text('name = "o"\n[[packages]]\nname = "vim"\n')
    with pytest.raises(UserError, match="--from-rootfs takes the tree as it is"):
        compose(opts)
    not_tar = tmp_path / "rootfs.txt"
    not_tar.write_text("hello\n")
    opts = _rootfs_options(tmp_path, not_tar)
    with pytest.raises(UserError, match="neither a directory nor a tar archive"):
        compose(opts)
    assert not opts.repo.exists() and not opts.cache_dir.exists()


def test_accounts_move_to_usr_lib_where_the_tree_has_nss_altfiles(tmp_path: Path) -> None:
    """rpm-ostree's layout: accounts in /usr/lib/passwd and /usr/lib/group (every commit
    replaces them), root and the wheel group in /etc, nsswitch reading both."""
    root = _rootfs(tmp_path)
    (root / "usr/lib64").mkdir(exist_ok=True)
    (root / "usr/lib64/libnss_altfiles.so.2").write_bytes(b"\x7fELF stand-in\n")
    (root / "etc/passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\ndaemon:x:2:2::/:/sbin/nologin\n"
    )
    (root / "etc/group").write_text("root:x:0:\ndaemon:x:2:\nwheel:x:10:\n")
    (root / "etc/nsswitch.conf").write_text("passwd: files sss\ngroup:  files\nhosts: files dns\n")
    opts = _rootfs_options(tmp_path, root)
    opts.blueprint.write_text(
        'name = "o"\n[[customizations.user]]\nname = "alice"\ngroups = ["wheel"]\n'
    )
    commit = compose(opts).commit
    assert _cat(opts.repo, commit, "/usr/etc/passwd") == "root:x:0:0:root:/root:/bin/sh\n"
    lib_passwd = _cat(opts.repo, commit, "/usr/lib/passwd")
    assert lib_passwd.startswith("daemon:x:2:2:") and "\nalice:x:1000:1000:" in lib_passwd
    assert _cat(opts.repo, commit, "/usr/etc/group") == "root:x:0:\nwheel:x:10:alice\n"
    assert "daemon:x:2:" in _cat(opts.repo, commit, "/usr/lib/group")
    assert _cat(opts.repo, commit, "/usr/etc/nsswitch.conf") == (
        "passwd: files altfiles sss\ngroup:  files altfiles\nhosts: files dns\n"
    )
    assert "alice:" in _cat(opts.repo, commit, "/usr/etc/shadow")  # shadow stays in /etc
