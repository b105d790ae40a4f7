"""Package layering against real tools: RPMs built with rpmbuild, a repository made with
createrepo_c and served over HTTPS by a server that demands a client certificate (the
entitlement setup), libsolv resolving against the root's rpmdb, rpm installing."""

from __future__ import annotations

import importlib.util
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from ocitree.build import packages
from ocitree.build.packages import STAGING_DIR, find_rpmdb, install, read_installed
from ocitree.build.rpmrepo import RepoConfig, host_arch, read_repo_files
from ocitree.errors import UserError
from ocitree.run import run
from support.rpmrepo_server import Pki, RepoServer, make_pki, serve
from support.rpms import build_rpm, install_into_tree
from support.signing import signing

TOOLS = ("rpmbuild", "rpm", "rpmkeys", "rpmsign", "createrepo_c", "openssl", "gpg")

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        any(shutil.which(t) is None for t in TOOLS),
        reason=f"one of {', '.join(TOOLS)} is missing (Debian packages rpm, createrepo-c, "
        "openssl, gnupg)",
    ),
    pytest.mark.skipif(
        importlib.util.find_spec("rpm") is None,
        reason="the rpm Python module is missing (Debian package python3-rpm)",
    ),
    pytest.mark.skipif(
        importlib.util.find_spec("solv") is None,
        reason="the libsolv Python binding is missing (PyPI package solv)",
    ),
]

BUSYBOX = Path("/bin/busybox")
POST_MARK = "/var/lib/a-post-ran"
DB = "/usr/share/rpm"


def _build_scripted(
    workdir: Path, name: str, files: dict[str, str], post: str, requires: Sequence[str] = ()
) -> Path:
    """A noarch package with text ``files`` and a ``%post`` scriptlet (support.rpms has none)."""
    top = workdir / f"{name}-scripted"
    install_lines = []
    for path, text in files.items():
        install_lines.append(f"mkdir -p %{{buildroot}}{Path(path).parent}")
        install_lines.append(f"printf '%s' '{text}' > %{{buildroot}}{path}")
    spec = top / f"{name}.spec"
    top.mkdir(parents=True)
    spec.write_text(
        "\n".join(
            [
                f"Name: {name}",
                "Version: 1.0",
                "Release: 1",
                f"Summary: {name}",
                "License: MIT",
                "BuildArch: noarch",
                *(f"Requires: {r}" for r in requires),
                "%description",
                f"{name} with a scriptlet",
                "%install",
                *install_lines,
                "%post",
                post,
                "%files",
                *files,
                "",
            ]
        )
    )
    run(["rpmbuild", "-bb", "--define", f"_topdir {top / 'rpmbuild'}", spec])
    (out,) = (top / "rpmbuild" / "RPMS" / "noarch").glob(f"{name}-1.0-1.noarch.rpm")
    return out


@dataclass(frozen=True)
class World:
    pki: Pki
    server: RepoServer
    base_rpm: Path  # installed into every root: /bin/sh (busybox) and a data file
    signing_key: Path  # armored public key that signed the packages of /signed
    other_key: Path  # a key that signed nothing here


def _createrepo(directory: Path) -> None:
    run(["createrepo_c", "--quiet", directory])


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    if not BUSYBOX.is_file():
        pytest.skip("busybox-static is not installed (the test root's /bin/sh)")
    work = tmp_path_factory.mktemp("pkgs")
    build = work / "build"
    base = build_rpm(
        build,
        "base",
        "1",
        {"/bin/sh": BUSYBOX.read_bytes(), "/usr/share/base/base.txt": b"base\n"},
        arch=host_arch(),
    )
    serve_dir = work / "www"
    repo = serve_dir / "repo"
    repo.mkdir(parents=True)
    a = _build_scripted(
        build,
        "a",
        {"/usr/share/a/a.txt": "a payload"},
        f"mkdir -p {Path(POST_MARK).parent} && echo ran > {POST_MARK}",
    )
    b = build_rpm(build, "b", "1.0", {"/usr/bin/b": b"#!/bin/sh\necho b\n"}, requires=["a"])
    c = build_rpm(build, "c", "1.0", {"/usr/share/c/c.txt": b"c\n"}, requires=["missing-thing"])
    clash = build_rpm(build, "clash", "1.0", {"/usr/share/base/base.txt": b"not base\n"})
    for p in (a, b, c, clash):
        shutil.copy(p, repo / p.name)
    _createrepo(repo)
    # /signed: a package signed with a throwaway GPG key
    signed = serve_dir / "signed"
    signed.mkdir()
    d = build_rpm(build, "d", "1.0", {"/usr/share/d/d.txt": b"d\n"})
    shutil.copy(d, signed / d.name)
    with signing(work / "gpg", "127.0.0.1:1") as setup, signing(work / "gpg2", "x:1") as other:
        run(
            [
                "rpmsign", "--addsign", "--define", f"_gpg_name {setup.fingerprint}",
                "--define", "__gpg /usr/bin/gpg", signed / d.name,
            ],
            env=setup.env,
        )  # fmt: skip
        key = work / "signing-key.asc"
        shutil.copy(setup.pubkey, key)
        other_key = work / "other-key.asc"
        shutil.copy(other.pubkey, other_key)
    _createrepo(signed)
    pki = make_pki(work / "pki")
    with serve(serve_dir, pki) as server:
        yield World(pki, server, base, key, other_key)


def _repo_file(
    server: RepoServer,
    *,
    section: str = "test",
    path: str = "repo",
    client_cert: bool = True,
    gpgcheck: bool = False,
    gpgkey: str | None = None,
) -> str:
    lines = [
        f"[{section}]",
        f"name=Test repository {section}",
        f"baseurl={server.url}/{path}",
        "enabled=1",
        f"gpgcheck={int(gpgcheck)}",
        "sslverify=1",
        "sslcacert=/etc/rhsm/ca/test-ca.pem",
    ]
    if client_cert:
        lines += [
            "sslclientcert=/etc/pki/entitlement/cert.pem",
            "sslclientkey=/etc/pki/entitlement/cert-key.pem",
        ]
    if gpgkey:
        lines.append(f"gpgkey={gpgkey}")
    return "\n".join(lines) + "\n"


@dataclass
class Root:
    path: Path
    cache: Path

    def write_repo(self, text: str, name: str = "test.repo") -> None:
        d = self.path / "etc/yum.repos.d"
        d.mkdir(parents=True, exist_ok=True)
        for old in d.glob("*.repo"):
            old.unlink()
        (d / name).write_text(text)

    def repos(self) -> list[RepoConfig]:
        return read_repo_files(self.path)

    def install(
        self, *names: str, run_in_root: Callable[[Sequence[str]], int] | None = None
    ) -> packages.InstallResult:
        return install(
            self.path, names, repos=self.repos(), cache=self.cache, run_in_root=run_in_root
        )


@pytest.fixture
def root(world: World, tmp_path: Path) -> Root:
    """A tree with an rpmdb (base installed), the CA and entitlement cert, a repo file."""
    tree = tmp_path / "root"
    install_into_tree(tree, [world.base_rpm], dbpath=DB)
    (tree / "var/tmp").mkdir(parents=True)
    ent = tree / "etc/pki/entitlement"
    ent.mkdir(parents=True)
    shutil.copy(world.pki.client_cert, ent / "cert.pem")
    shutil.copy(world.pki.client_key, ent / "cert-key.pem")
    ca = tree / "etc/rhsm/ca"
    ca.mkdir(parents=True)
    shutil.copy(world.pki.ca_cert, ca / "test-ca.pem")
    r = Root(tree, tmp_path / "cache")
    r.write_repo(_repo_file(world.server))
    return r


def _rpmdb_names(tree: Path) -> set[str]:
    import rpm

    rpm.addMacro("_dbpath", DB)
    try:
        ts = rpm.TransactionSet(str(tree))
        names = {str(h[rpm.RPMTAG_NAME]) for h in ts.dbMatch()}
        ts.closeDB()
    finally:
        rpm.delMacro("_dbpath")
    return names


# --------------------------------------------------------------------------- installing


def test_install_resolves_dependency_over_client_cert_tls(root: Root, world: World) -> None:
    result = root.install("b")
    assert result.installed == ("a-1.0-1.noarch", "b-1.0-1.noarch")
    assert {"base", "a", "b"} <= _rpmdb_names(root.path)
    assert (root.path / "usr/share/a/a.txt").read_text() == "a payload"
    assert (root.path / "usr/bin/b").read_bytes() == b"#!/bin/sh\necho b\n"
    # a's %post ran inside the root (with the root's /bin/sh)
    assert (root.path / POST_MARK.lstrip("/")).read_text() == "ran\n"
    assert find_rpmdb(root.path) == (DB, "sqlite")
    assert {p.name for p in read_installed(root.path)} == {"base", "a", "b"}
    # the rpmdb stays where it was: nothing in the host's default location under the root
    assert not (root.path / "var/lib/rpm").exists()
    # installing again: nothing to do; the metadata comes from the cache
    before = len(world.server.requests)
    assert root.install("b").installed == ()
    again = world.server.requests[before:]
    assert again == ["/repo/repodata/repomd.xml"], again


def test_installed_package_satisfies_file_dependency(root: Root) -> None:
    # a's %post makes rpmbuild add "Requires(post): /bin/sh", which only base (installed)
    # provides, as a file: the installed set's files must count as provides.
    assert root.install("a").installed == ("a-1.0-1.noarch",)


def test_missing_dependency_is_named(root: Root) -> None:
    with pytest.raises(UserError) as e:
        root.install("c")
    assert "missing-thing" in e.value.message
    assert "c-1.0-1.noarch" in e.value.message
    assert "nothing provides missing-thing" in e.value.message
    assert "c" not in _rpmdb_names(root.path)


def test_unknown_package(root: Root) -> None:
    with pytest.raises(UserError) as e:
        root.install("no-such-package")
    assert "no package named no-such-package" in e.value.message
    assert "test" in e.value.message  # the repo ids searched
    assert e.value.hint


def test_server_refuses_without_client_certificate(root: Root, world: World) -> None:
    root.write_repo(_repo_file(world.server, client_cert=False))
    with pytest.raises(UserError) as e:
        root.install("b")
    text = str(e.value).lower()
    assert "tls" in text or "certificate" in text, e.value
    assert e.value.hint is not None and "sslclientcert" in e.value.hint


def test_server_refuses_foreign_client_certificate(root: Root, world: World) -> None:
    ent = root.path / "etc/pki/entitlement"
    shutil.copy(world.pki.foreign_cert, ent / "cert.pem")
    shutil.copy(world.pki.foreign_key, ent / "cert-key.pem")
    with pytest.raises(UserError) as e:
        root.install("b")
    assert e.value.hint is not None and "client certificate" in e.value.hint


def test_missing_certificate_file(root: Root) -> None:
    (root.path / "etc/pki/entitlement/cert.pem").unlink()
    with pytest.raises(UserError) as e:
        root.install("b")
    assert "/etc/pki/entitlement/cert.pem" in e.value.message
    assert "does not exist" in e.value.message


def test_untrusted_server_certificate(root: Root, world: World) -> None:
    # the CA file names another CA: the server's certificate must not be accepted
    shutil.copy(world.pki.foreign_cert, root.path / "etc/rhsm/ca/test-ca.pem")
    with pytest.raises(UserError) as e:
        root.install("b")
    assert "not trusted" in e.value.message
    assert e.value.hint is not None and "sslcacert" in e.value.hint


def test_gpgcheck_refuses_unsigned_package(root: Root, world: World) -> None:
    key_dir = root.path / "etc/pki/rpm-gpg"
    key_dir.mkdir(parents=True)
    shutil.copy(world.signing_key, key_dir / "RPM-GPG-KEY-test")
    root.write_repo(
        _repo_file(world.server, gpgcheck=True, gpgkey="file:///etc/pki/rpm-gpg/RPM-GPG-KEY-test")
    )
    with pytest.raises(UserError) as e:
        root.install("b")
    assert "is not signed" in e.value.message
    assert "gpgcheck" in e.value.message
    assert not {"a", "b"} & _rpmdb_names(root.path)


def _signed_repo(root: Root, world: World, key: Path, name: str) -> None:
    """The repository of signed packages, checked with ``key`` copied into the image."""
    key_dir = root.path / "etc/pki/rpm-gpg"
    key_dir.mkdir(parents=True)
    shutil.copy(key, key_dir / name)
    root.write_repo(
        _repo_file(
            world.server,
            section="signed",
            path="signed",
            gpgcheck=True,
            gpgkey=f"file:///etc/pki/rpm-gpg/{name}",
        )
    )


def test_gpgcheck_accepts_signed_package(root: Root, world: World) -> None:
    _signed_repo(root, world, world.signing_key, "RPM-GPG-KEY-test")
    assert root.install("d").installed == ("d-1.0-1.noarch",)
    assert (root.path / "usr/share/d/d.txt").read_bytes() == b"d\n"


def test_gpgcheck_refuses_package_signed_by_another_key(root: Root, world: World) -> None:
    _signed_repo(root, world, world.other_key, "RPM-GPG-KEY-other")
    with pytest.raises(UserError) as e:
        root.install("d")
    assert "does not verify" in e.value.message
    assert "NOKEY" in e.value.message
    assert "d" not in _rpmdb_names(root.path)


def test_rpm_failure_reports_rpms_last_line(root: Root) -> None:
    # clash has a file that base owns: libsolv cannot know, rpm refuses
    with pytest.raises(UserError) as e:
        root.install("clash")
    assert "conflicts with file from package base" in e.value.message


def test_image_rpm_runs_inside_the_root(root: Root) -> None:
    """With run_in_root and an rpm in the image, the transaction is handed to it."""
    tree = root.path
    (tree / "usr/bin").mkdir(parents=True, exist_ok=True)
    (tree / "usr/bin/rpm").write_text("#!/bin/sh\n")  # the image "has" rpm
    calls: list[list[str]] = []

    def run_in_root(argv: Sequence[str]) -> int:
        calls.append(list(argv))
        staged = [a for a in argv if a.startswith(f"/{STAGING_DIR}/")]
        assert staged and all((tree / s.lstrip("/")).is_file() for s in staged)
        # stand in for the image's rpm: the host's, rooted at the tree
        opts = [a for a in argv[1:] if a not in staged]
        files = [tree / s.lstrip("/") for s in staged]
        argv2 = ["rpm", "--root", str(tree), "--define", "_db_backend sqlite", *opts]
        return run([*argv2, *files], check=False).returncode

    result = root.install("b", run_in_root=run_in_root)
    assert result.installed == ("a-1.0-1.noarch", "b-1.0-1.noarch")
    (argv,) = calls
    assert argv[:5] == ["rpm", "--dbpath", DB, "-Uvh", "--nosignature"]
    assert sorted(Path(a).name for a in argv[5:]) == ["a-1.0-1.noarch.rpm", "b-1.0-1.noarch.rpm"]
    assert not (tree / STAGING_DIR).exists()  # the copies are gone
    assert (tree / "var/tmp").is_dir()  # what was there stays
    assert {"a", "b"} <= _rpmdb_names(tree)

    with pytest.raises(UserError) as e:
        root.install("clash", run_in_root=lambda argv: 1)
    assert "exit code 1" in e.value.message
    assert not (tree / STAGING_DIR).exists()


def test_extra_repo_from_command_line(root: Root, world: World) -> None:
    # --repo DIR (a host directory, plain file://): no TLS involved
    (root.path / "etc/yum.repos.d/test.repo").unlink()
    repos = read_repo_files(root.path, extra=[str(world.server.directory / "repo")])
    assert [r.id for r in repos] == ["cmdline-1"]
    result = install(root.path, ["b"], repos=repos, cache=root.cache)
    assert result.installed == ("a-1.0-1.noarch", "b-1.0-1.noarch")


# --------------------------------------------------------------------------- repo files


def test_repo_files_expand_and_resolve_under_root(tmp_path: Path) -> None:
    tree = tmp_path / "root"
    (tree / "usr/lib").mkdir(parents=True)
    (tree / "usr/lib/os-release").write_text('NAME="RHEL"\nVERSION_ID="9.2"\n')
    (tree / "usr/etc/pki/entitlement").mkdir(parents=True)
    (tree / "usr/etc/pki/entitlement/1.pem").write_text("cert")
    repos_d = tree / "etc/yum.repos.d"
    repos_d.mkdir(parents=True)
    (repos_d / "redhat.repo").write_text(
        "[rhocp-4.12-for-rhel-$releasever-$basearch-rpms]\n"
        "name = Red Hat OpenShift $releasever\n"
        "baseurl = https://cdn.example.invalid/content/dist/layered/rhel9/$basearch/rhocp/4.12/os\n"
        "enabled = 1\n"
        "gpgcheck = 1\n"
        "gpgkey = file:///etc/pki/rpm-gpg/RPM-GPG-KEY-redhat-release\n"
        "  https://example.invalid/key2\n"
        "sslverify = 0\n"
        "sslclientcert = /etc/pki/entitlement/1.pem\n"
        "sslclientkey = /etc/pki/entitlement/1-key.pem\n"
        "priority = 10\n"
        "\n"
        "[off]\nbaseurl=file:///srv/repo\nenabled=0\n"
    )
    repos = read_repo_files(tree, basearch="aarch64")
    assert [r.id for r in repos] == ["rhocp-4.12-for-rhel-$releasever-$basearch-rpms", "off"]
    r = repos[0]
    assert r.name == "Red Hat OpenShift 9"
    assert r.baseurl.endswith("/rhel9/aarch64/rhocp/4.12/os")
    assert r.enabled and r.gpgcheck and not r.sslverify
    assert r.priority == 10
    assert r.gpgkey == (
        (tree / "etc/pki/rpm-gpg/RPM-GPG-KEY-redhat-release").as_uri(),
        "https://example.invalid/key2",
    )
    # /etc is /usr/etc in an ostree tree when /etc has no such file
    assert r.sslclientcert == str(tree / "usr/etc/pki/entitlement/1.pem")
    assert r.sslclientkey == str(tree / "etc/pki/entitlement/1-key.pem")
    assert r.sslcacert is None
    off = repos[1]
    assert not off.enabled
    assert off.baseurl == (tree / "srv/repo").as_uri()
    assert read_repo_files(tree, releasever="8", basearch="x86_64")[0].name == (
        "Red Hat OpenShift 8"
    )


def test_repo_file_errors(tmp_path: Path) -> None:
    repos_d = tmp_path / "etc/yum.repos.d"
    repos_d.mkdir(parents=True)
    (repos_d / "bad.repo").write_text("[x]\nbaseurl=http://h/\nenabled=maybe\n")
    with pytest.raises(UserError, match="not a boolean"):
        read_repo_files(tmp_path)
    (repos_d / "bad.repo").write_text("[x]\nname=no url\n")
    with pytest.raises(UserError, match="no baseurl"):
        read_repo_files(tmp_path)
    (repos_d / "bad.repo").write_text("not ini at all\n")
    with pytest.raises(UserError, match=r"cannot read repo file /etc/yum\.repos\.d/bad\.repo"):
        read_repo_files(tmp_path)
    with pytest.raises(UserError, match="no such directory"):
        read_repo_files(tmp_path / "nothing", extra=[str(tmp_path / "nope")])
