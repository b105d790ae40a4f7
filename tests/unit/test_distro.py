"""The distros of ``ocitree compose``: every file loads, names and aliases, default refs,
package sets by architecture, the shipped signing keys and the repositories."""

from __future__ import annotations

import dataclasses
import json
import urllib.parse
from pathlib import Path

import pytest

from ocitree.compose import distro
from ocitree.errors import UserError

DISTROS_DIR = Path(distro.__file__).parent / "distros"
REAL = ["centos-9", "fedora-40", "rhel-8.7", "rhel-9.2", "rhel-9.4"]


def test_every_distro_file_loads() -> None:
    known = distro.known()
    names = [d.name for d in known]
    assert names == sorted(p.stem for p in DISTROS_DIR.glob("*.toml"))
    assert set(REAL) <= set(names)
    for d in known:
        assert len(set(d.packages)) == len(d.packages), d.name
        assert not set(d.exclude) & set(d.packages), d.name
        json.dumps(dataclasses.asdict(d))  # the input hash of compose
        hash(d)


@pytest.mark.parametrize("name", REAL)
def test_real_distros_have_kernel_dracut_and_both_arches(name: str) -> None:
    d = distro.find(name)
    assert {"kernel", "dracut", "rpm-ostree"} <= set(d.packages_for("x86_64"))
    assert d.arches == ("x86_64", "aarch64")
    for arch, own in d.packages_arch:
        assert len(set(own)) == len(own), (name, arch)
        assert not set(own) & set(d.packages), (name, arch)


@pytest.mark.parametrize(
    ("given", "name"),
    [
        ("rhel-8.7", "rhel-8.7"),
        ("rhel-87", "rhel-8.7"),
        ("RHEL_8.7", "rhel-8.7"),
        ("rhel-94", "rhel-9.4"),
        ("centos-stream-9", "centos-9"),
        ("fedora-40", "fedora-40"),
    ],
)
def test_find_by_name_and_alias(given: str, name: str) -> None:
    assert distro.find(given).name == name


def test_unknown_distro_lists_the_known_ones() -> None:
    with pytest.raises(UserError) as e:
        distro.find("rhel-7.9")
    assert "rhel-7.9" in e.value.message
    assert e.value.hint is not None
    for name in REAL:
        assert name in e.value.hint


@pytest.mark.parametrize(
    ("name", "arch", "ref"),
    [
        ("rhel-9.4", "x86_64", "rhel/9/x86_64/edge"),
        ("rhel-8.7", "aarch64", "rhel/8/aarch64/edge"),
        ("centos-9", "x86_64", "centos/9/x86_64/edge"),
        ("fedora-40", "x86_64", "fedora/40/x86_64/iot"),
        ("sample-1", "x86_64", "sample/1/x86_64/edge"),
    ],
)
def test_default_ref(name: str, arch: str, ref: str) -> None:
    assert distro.find(name).default_ref(arch) == ref


def test_arch_specific_packages_differ() -> None:
    d = distro.find("rhel-9.4")
    x86, arm = set(d.packages_for("x86_64")), set(d.packages_for("aarch64"))
    assert {"grub2-efi-x64", "shim-x64", "grub2-pc", "microcode_ctl", "iwl1000-firmware"} <= x86
    assert not {"grub2-efi-aa64", "shim-aa64"} & x86
    assert {"grub2-efi-aa64", "shim-aa64", "efibootmgr", "iwl7260-firmware"} <= arm
    assert not {"grub2-efi-x64", "shim-x64", "grub2-pc", "microcode_ctl"} & arm
    assert set(d.packages) <= x86 & arm
    f = distro.find("fedora-40")
    assert "uboot-images-armv8" in f.packages_for("aarch64")
    assert "uboot-images-armv8" not in f.packages_for("x86_64")


def test_unsupported_arch_is_refused() -> None:
    with pytest.raises(UserError) as e:
        distro.find("rhel-9.4").packages_for("ppc64le")
    assert "ppc64le" in e.value.message
    assert e.value.hint is not None and "x86_64" in e.value.hint


def test_distro_without_arch_packages_fits_every_arch() -> None:
    d = distro.find("sample-1")
    assert d.packages_for("ppc64le") == d.packages == ("sample-base",)


def test_version_conditions_of_images() -> None:
    rhel87, rhel92, rhel94 = (distro.find(n) for n in ("rhel-8.7", "rhel-9.2", "rhel-9.4"))
    centos, fedora = distro.find("centos-9"), distro.find("fedora-40")
    assert {"fdo-client", "fdo-owner-cli", "sos", "platform-python"} <= set(rhel87.packages)
    assert "ignition" not in rhel87.packages
    for d in (rhel92, rhel94, centos):
        assert {"ignition", "ignition-edge", "ssh-key-dir", "containernetworking-plugins"} <= set(
            d.packages
        ), d.name
    assert "dnsmasq" in rhel94.packages
    assert "dnsmasq" not in centos.packages
    assert {"fedora-release-iot", "ignition", "zezere-ignition"} <= set(fedora.packages)
    assert "bootupd" not in fedora.packages


def test_excludes() -> None:
    assert distro.find("rhel-8.7").exclude == ("rng-tools",)
    assert set(distro.find("rhel-9.4").exclude) == {"rng-tools", "bootupd"}
    assert distro.find("centos-9").exclude == ("rng-tools",)
    assert distro.find("fedora-40").exclude == ()


def test_repositories_expand_basearch_and_use_the_shipped_keys() -> None:
    repos = distro.repositories(distro.find("centos-9"), "aarch64", rpm_repos=(), repo_files=())
    assert [r.id for r in repos] == ["baseos", "appstream"]
    for r in repos:
        assert r.metalink is not None and r.metalink.endswith("&arch=aarch64")
        assert r.gpgcheck
        (url,) = r.gpgkey
        assert url.startswith("file:///")
        key = Path(urllib.parse.unquote(urllib.parse.urlparse(url).path))
        assert key.parent == distro.keys_dir()
        assert "-----BEGIN PGP PUBLIC KEY BLOCK-----" in key.read_text(encoding="ascii")


@pytest.mark.parametrize("name", REAL)
def test_every_gpgkey_is_shipped(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _entitle(tmp_path, monkeypatch)
    for arch in ("x86_64", "aarch64"):
        for r in distro.find(name).repos(arch):
            assert r.gpgcheck and r.gpgkey
            for url in r.gpgkey:
                path = Path(urllib.parse.unquote(urllib.parse.urlparse(url).path))
                assert path.is_file(), url
            assert arch in (r.baseurl or r.metalink or "")


def test_rhsm_without_entitlement_says_how(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(distro, "ENTITLEMENT_DIR", tmp_path / "entitlement")
    with pytest.raises(UserError) as e:
        distro.repositories(distro.find("rhel-9.4"), "x86_64", rpm_repos=(), repo_files=())
    assert "entitlement" in e.value.message
    assert e.value.hint is not None and "subscription-manager" in e.value.hint


def _entitle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    ent = tmp_path / "entitlement"
    ent.mkdir()
    (ent / "123.pem").write_text("cert\n")
    (ent / "123-key.pem").write_text("key\n")
    monkeypatch.setattr(distro, "ENTITLEMENT_DIR", ent)
    monkeypatch.setattr(distro, "RHSM_CA", tmp_path / "no-ca.pem")
    return ent


def test_rhsm_with_entitlement(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ent = _entitle(tmp_path, monkeypatch)
    repos = distro.repositories(distro.find("rhel-8.7"), "x86_64", rpm_repos=(), repo_files=())
    assert [r.baseurl for r in repos] == [
        "https://cdn.redhat.com/content/dist/rhel8/8.7/x86_64/baseos/os",
        "https://cdn.redhat.com/content/dist/rhel8/8.7/x86_64/appstream/os",
    ]
    for r in repos:
        assert r.sslclientcert == str(ent / "123.pem")
        assert r.sslclientkey == str(ent / "123-key.pem")


def test_rpm_repo_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(distro, "ENTITLEMENT_DIR", tmp_path / "entitlement")
    repos = distro.repositories(
        distro.find("rhel-9.4"),
        "x86_64",
        rpm_repos=["https://mirror.example/rhel9/"],
        repo_files=(),
    )
    assert [(r.id, r.baseurl) for r in repos] == [("cmdline-1", "https://mirror.example/rhel9/")]
    assert repos[0].sslclientcert is None


def test_repo_file_overrides_and_expands(tmp_path: Path) -> None:
    f = tmp_path / "mirror.repo"
    f.write_text("[mirror]\nbaseurl = https://mirror.example/$releasever/$basearch/\n")
    repos = distro.repositories(distro.find("rhel-9.4"), "aarch64", rpm_repos=(), repo_files=[f])
    assert [(r.id, r.baseurl) for r in repos] == [("mirror", "https://mirror.example/9.4/aarch64/")]


def test_duplicate_repo_ids_are_refused(tmp_path: Path) -> None:
    files = []
    for n in (1, 2):
        f = tmp_path / f"{n}.repo"
        f.write_text(f"[same]\nbaseurl = https://mirror{n}.example/\n")
        files.append(f)
    with pytest.raises(UserError, match="repository id same is given twice"):
        distro.repositories(distro.find("centos-9"), "x86_64", rpm_repos=(), repo_files=files)


def test_distro_without_repositories_wants_rpm_repo() -> None:
    with pytest.raises(UserError) as e:
        distro.repositories(distro.find("sample-1"), "x86_64", rpm_repos=(), repo_files=())
    assert e.value.hint is not None and "--rpm-repo" in e.value.hint


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('colour = "blue"\n', "unknown keys"),
        ('ref = "{os_id}/{flavour}"\n', "not a valid template"),
        ("exclude = [1]\n", "exclude must be a list"),
        ("packages_arch = [1]\n", "packages_arch must be a table"),
        ("[packages_arch]\nx86_64 = 'grub2'\n", "packages_arch.x86_64 must be a list"),
    ],
)
def test_bad_distro_files(extra: str, message: str) -> None:
    text = 'name = "x-1"\nos_id = "x"\nversion_id = "1"\n' + extra
    with pytest.raises(ValueError, match=message):
        distro._parse("x-1.toml", text)
