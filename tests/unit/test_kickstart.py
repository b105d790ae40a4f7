"""``ocitree kickstart``: both install modes, MicroShift's LVM layout, blueprint accounts,
credentials in %pre/%post, and bad input. Every kickstart written is parsed again here
with pykickstart's own parser, as ksvalidator does."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import warnings
from pathlib import Path
from typing import Any

import pytest
from pykickstart.errors import KickstartDeprecationWarning, KickstartParseWarning
from pykickstart.parser import KickstartParser
from pykickstart.version import makeVersion, stringToVersion

from ocitree.build.blueprint import parse
from ocitree.cli.main import main
from ocitree.errors import UserError
from ocitree.installer.kickstart import (
    CommitSource,
    ContainerSource,
    KickstartOptions,
    KickstartValidationError,
    parse_size,
    read_auth_file,
    render,
    supported_versions,
    validate,
)

HASH = "$6$salt$Wn0lZ1fBn5Qx0Qm7w0Q3fQe3l2o8yqg1o0mS1P2rQe4v6z7Y8b9c0d1e2f3g4h5i6j7k8l9m0n1o2p"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKickstartTestKey alice@example"
KEY2 = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABKickstart bob key"
COMMIT = CommitSource("http://10.0.2.2:8000/repo/", "rhel/9/x86_64/edge", gpg_verify=False)
IMAGE = ContainerSource("quay.io/example/microshift:4.15")
# A value the shell would expand outside a quoted here-document.
AUTH = {"auths": {"registry.example.com:5000": {"auth": "dXNlcjokKGlkKWAke0hPTUV9YA=="}}}
SECRET = {"auths": {"quay.io": {"auth": "$(touch pwned) `id` ${HOME}", "email": "a@b"}}}

LAYOUT = """\
zerombr
clearpart --all --initlabel
part /boot/efi --fstype=efi --size=200
part /boot --fstype=xfs --size=800
part pv.01 --grow
volgroup rhel pv.01
logvol / --vgname=rhel --fstype=xfs --size=10240 --name=root
"""

BLUEPRINT = f'''\
name = "edge-installer"
version = "0.0.1"

[[packages]]
name = "microshift"

[customizations]
hostname = "edge-01.example.com"

[[customizations.group]]
name = "operators"
gid = 1500

[[customizations.user]]
name = "alice"
description = "Alice Admin"
password = "{HASH}"
key = "{KEY}"
groups = ["wheel", "operators"]
uid = 1200
home = "/var/home/alice"
shell = "/bin/bash"

[[customizations.user]]
name = "bob"
expiredate = 20000

[[customizations.sshkey]]
user = "bob"
key = "{KEY2}"

[customizations.services]
enabled = ["microshift.service", "sshd"]
disabled = ["cups.service"]
masked = ["bluetooth.service"]

[customizations.timezone]
timezone = "Europe/Berlin"

[customizations.locale]
languages = ["de_DE.UTF-8", "en_US.UTF-8"]
keyboard = "de"

[customizations.kernel]
append = "console=ttyS0 quiet"
'''


def ksparse(text: str, version: str = "RHEL9") -> Any:
    """pykickstart's parser as ksvalidator runs it, warnings being errors."""
    handler = makeVersion(stringToVersion(version))
    parser = KickstartParser(handler, errorsAreFatal=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", KickstartParseWarning)
        warnings.simplefilter("error", KickstartDeprecationWarning)
        parser.readKickstartFromString(text)
    assert parser.errorsCount == 0
    return handler


def lines_of(text: str) -> list[str]:
    return text.splitlines()


def script(text: str, kind: str) -> str:
    """The body of the one %pre or %post section."""
    found = re.findall(rf"^%{kind}( [^\n]*)?\n(.*?)^%end$", text, re.S | re.M)
    assert len(found) == 1, f"expected one %{kind}"
    return str(found[0][1])


def opts(**kw: Any) -> KickstartOptions:
    kw.setdefault("source", COMMIT)
    return KickstartOptions(**kw)


# --------------------------------------------------------------------------- commit install


@pytest.mark.parametrize("version", ["RHEL8", "RHEL9", "RHEL10", "F40", "rhel9"])
def test_commit_install(version: str) -> None:
    text = render(opts(version=version))
    handler = ksparse(text, version.upper())
    assert (
        "ostreesetup --osname=rhel --url=http://10.0.2.2:8000/repo/ --ref=rhel/9/x86_64/edge "
        "--nogpg" in lines_of(text)
    )
    assert handler.ostreesetup.url == "http://10.0.2.2:8000/repo/"
    assert handler.ostreesetup.nogpg
    assert LAYOUT in text  # MicroShift's layout, line for line and in this order
    for line in ("text", "reboot", "rootpw --lock", "lang en_US.UTF-8", "timezone UTC --utc"):
        assert line in lines_of(text)
    assert "network --bootproto=dhcp --device=link --activate --onboot=on" in lines_of(text)
    assert "%post" not in text and "%pre" not in text  # nothing to write: no scripts


def test_commit_install_gpg_remote_and_file_url() -> None:
    source = CommitSource("file:///run/install/repo/ostree/repo", "rhel/9/x86_64/edge",
                          osname="edge-os", remote="edge")  # fmt: skip
    text = render(opts(source=source))
    ksparse(text)
    assert (
        "ostreesetup --osname=edge-os --remote=edge --url=file:///run/install/repo/ostree/repo "
        "--ref=rhel/9/x86_64/edge" in lines_of(text)
    )


def test_layout_root_size_volume_group_disk_reqpart() -> None:
    text = render(opts(root_size_mib=parse_size("20G"), volume_group="data", disk="vda"))
    handler = ksparse(text)
    assert "volgroup data pv.01" in lines_of(text)
    assert "logvol / --vgname=data --fstype=xfs --size=20480 --name=root" in lines_of(text)
    assert "ignoredisk --only-use=vda" in lines_of(text)
    (lv,) = handler.logvol.lvList
    assert (lv.vgname, lv.size, lv.name, lv.grow) == ("data", 20480, "root", False)
    (pv,) = [p for p in handler.partition.partitions if p.mountpoint == "pv.01"]
    assert pv.grow

    text = render(opts(reqpart=True))
    ksparse(text)
    assert "reqpart --add-boot" in lines_of(text)
    assert not any(ln.startswith("part /boot") for ln in lines_of(text))


@pytest.mark.parametrize(
    ("text", "mib"),
    [("10G", 10240), ("10GiB", 10240), ("10240", 10240), ("2048M", 2048), ("1T", 1048576)],
)
def test_parse_size(text: str, mib: int) -> None:
    assert parse_size(text) == mib


@pytest.mark.parametrize("text", ["ten", "10X", "-5G", "1.5G", "", "100"])
def test_parse_size_bad(text: str) -> None:
    with pytest.raises(UserError):
        parse_size(text)


# --------------------------------------------------------------------------- image install


@pytest.mark.parametrize("version", ["RHEL9", "RHEL10", "F38", "F42"])
def test_container_install(version: str) -> None:
    source = ContainerSource("quay.io/example/microshift:4.15", verify_signatures=False)
    text = render(opts(source=source, version=version))
    handler = ksparse(text, version)
    assert (
        "ostreecontainer --url=quay.io/example/microshift:4.15 --transport=registry "
        "--no-signature-verification" in lines_of(text)
    )
    assert handler.ostreecontainer.url == "quay.io/example/microshift:4.15"
    assert "ostreesetup" not in text
    assert LAYOUT in text


def test_container_oci_transport_and_stateroot() -> None:
    source = ContainerSource("/run/install/repo/os:latest", transport="oci", stateroot="rhel")
    text = render(opts(source=source))
    handler = ksparse(text)
    assert handler.ostreecontainer.transport == "oci"
    assert handler.ostreecontainer.stateroot == "rhel"


@pytest.mark.parametrize("version", ["RHEL8", "F37", "F28"])
def test_version_without_ostreecontainer(version: str) -> None:
    with pytest.raises(UserError, match="no ostreecontainer command") as e:
        render(opts(source=IMAGE, version=version))
    assert e.value.hint is not None and "RHEL9" in e.value.hint
    ksparse(render(opts(version=version)), version)  # a commit install is fine there


def test_unknown_version() -> None:
    with pytest.raises(UserError, match="unknown kickstart version 'RHEL99'") as e:
        render(opts(version="RHEL99"))
    assert e.value.hint is not None and "RHEL9" in e.value.hint and "RHEL10" in e.value.hint
    with pytest.raises(UserError):  # has no ostreesetup at all
        render(opts(version="F20"))
    assert "RHEL8" in supported_versions() and "F20" not in supported_versions()


# --------------------------------------------------------------------------- blueprint


def test_blueprint_accounts_and_services() -> None:
    bp = parse(BLUEPRINT, filename="installer.toml")
    text = render(opts(blueprint=bp))
    handler = ksparse(text)
    lines = lines_of(text)
    assert "group --name=operators --gid=1500" in lines
    assert (
        "user --name=alice --gecos='Alice Admin' --uid=1200 --homedir=/var/home/alice "
        f"--shell=/bin/bash --groups=wheel,operators --iscrypted --password='{HASH}'" in lines
    )
    assert "user --name=bob" in lines
    assert f"sshkey --username=alice '{KEY}'" in lines
    assert f"sshkey --username=bob '{KEY2}'" in lines
    assert "services --enabled=microshift.service,sshd --disabled=cups.service" in lines
    assert (
        "network --bootproto=dhcp --device=link --activate --onboot=on "
        "--hostname=edge-01.example.com" in lines
    )
    assert "timezone Europe/Berlin --utc" in lines
    assert "lang de_DE.UTF-8 --addsupport=en_US.UTF-8" in lines
    assert "keyboard --vckeymap=de" in lines
    assert "bootloader --append='console=ttyS0 quiet'" in lines
    # what pykickstart (and so anaconda) reads
    alice, bob = handler.user.userList
    assert (alice.name, alice.password, alice.isCrypted) == ("alice", HASH, True)
    assert (alice.groups, alice.uid, alice.gecos) == (["wheel", "operators"], 1200, "Alice Admin")
    assert bob.name == "bob" and not bob.password
    assert [(k.username, k.key) for k in handler.sshkey.sshUserList] == [
        ("alice", KEY),
        ("bob", KEY2),
    ]
    assert handler.services.enabled == ["microshift.service", "sshd"]
    assert handler.services.disabled == ["cups.service"]
    assert handler.network.network[0].hostname == "edge-01.example.com"
    assert handler.bootloader.appendLine == "console=ttyS0 quiet"
    post = script(text, "post")
    assert "chage -E 20000 bob" in post.splitlines()
    assert "systemctl mask bluetooth.service" in post.splitlines()


def test_command_line_overrides_blueprint() -> None:
    bp = parse(BLUEPRINT)
    text = render(opts(blueprint=bp, hostname="other", timezone="UTC", lang="en_GB.UTF-8"))
    ksparse(text)
    assert "--hostname=other" in text and "edge-01" not in text
    assert "timezone UTC --utc" in lines_of(text)
    assert "lang en_GB.UTF-8" in lines_of(text)


def test_blueprint_root_user_and_root_password() -> None:
    bp = parse(f'name = "r"\n[[customizations.user]]\nname = "root"\npassword = "{HASH}"\n'
               f'key = "{KEY}"\n')  # fmt: skip
    text = render(opts(blueprint=bp))
    handler = ksparse(text)
    assert f"rootpw --iscrypted '{HASH}'" in lines_of(text)
    assert "rootpw --lock" not in text and "user --name=root" not in text
    assert handler.rootpw.password == HASH and handler.rootpw.isCrypted
    assert f"sshkey --username=root '{KEY}'" in lines_of(text)
    assert opts(blueprint=bp).has_secrets

    text = render(opts(root_password="$y$j9T$abc$def"))
    assert "rootpw --iscrypted '$y$j9T$abc$def'" in lines_of(text)
    with pytest.raises(UserError, match="root password hash"):
        render(opts(root_password="plaintext"))


# --------------------------------------------------------------------------- credentials


def write_json(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data, indent=2))
    return path


def test_credentials_in_post_commit_install(tmp_path: Path) -> None:
    auth = read_auth_file(write_json(tmp_path / "auth.json", AUTH))
    secret = read_auth_file(write_json(tmp_path / "ps.json", SECRET), "pull secret")
    text = render(opts(auth_json=auth, pull_secret=secret))
    ksparse(text)
    assert "%pre" not in text  # ostreesetup pulls over HTTP: no registry auth at install
    post = script(text, "post")
    for path in ("/etc/ostree/auth.json", "/etc/crio/openshift-pull-secret"):
        assert f"cat > {path} <<'OCITREE_EOF'" in post  # quoted: nothing is expanded
        assert f"chmod 0600 {path}" in post and f"chown root:root {path}" in post
    assert post.index("umask 077") < post.index("cat > ")


def test_container_install_auth_in_pre_and_post(tmp_path: Path) -> None:
    auth = read_auth_file(write_json(tmp_path / "auth.json", AUTH))
    text = render(opts(source=IMAGE, auth_json=auth))
    ksparse(text)
    assert "/etc/ostree/auth.json <<'OCITREE_EOF'" in script(text, "pre")
    assert "/etc/ostree/auth.json <<'OCITREE_EOF'" in script(text, "post")
    assert "openshift-pull-secret" not in text
    assert text.index("%pre") < text.index("%post")


@pytest.mark.skipif(os.geteuid() != 0, reason="the script chowns to root")
def test_post_script_writes_files_verbatim_0600(tmp_path: Path) -> None:
    """Run the %post with sh, its /etc moved under tmp_path: files are byte-exact (no
    expansion of $(...), `...` or ${...}) and mode 0600."""
    auth = read_auth_file(write_json(tmp_path / "auth.json", AUTH))
    secret = read_auth_file(write_json(tmp_path / "ps.json", SECRET), "pull secret")
    text = render(opts(source=IMAGE, auth_json=auth, pull_secret=secret))
    root = tmp_path / "root"
    for kind in ("pre", "post"):
        body = script(text, kind).replace(" /etc/", f" {root}/etc/")
        subprocess.run(["sh", "-c", body], check=True, cwd=tmp_path)
    assert not (tmp_path / "pwned").exists()  # cwd of the script
    written = {
        "ostree/auth.json": (auth, AUTH),
        "crio/openshift-pull-secret": (secret, SECRET),
    }
    for rel, (raw, data) in written.items():
        path = root / "etc" / rel
        assert path.read_text() == raw
        assert json.loads(path.read_text()) == data
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert path.stat().st_uid == 0


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", 'no "auths" object'),
        ('{"auths": []}', 'no "auths" object'),
        # str.splitlines() breaks at U+2028: pykickstart would see a line "%end"
        ('{"auths": {"x": {"auth": "a\u2028%end\u2028reboot"}}}', "line separator"),
    ],
)
def test_bad_auth_file(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "auth.json"
    path.write_text(content)
    with pytest.raises(UserError, match=message):
        read_auth_file(path)


def test_missing_auth_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="cannot read"):
        read_auth_file(tmp_path / "nope.json")


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (opts(source=CommitSource("ftp://h/repo", "a")), "invalid ostree repository URL"),
        (opts(source=CommitSource("http:///repo", "a")), "invalid ostree repository URL"),
        (opts(source=CommitSource("http://h/r p", "a")), "invalid ostree repository URL"),
        (opts(source=CommitSource("http://h/repo", "a//b")), "invalid ostree ref"),
        (opts(source=CommitSource("http://h/repo", "a", osname="x y")), "invalid osname"),
        (opts(source=ContainerSource("Quay.io/UPPER/Case:1")), "invalid image"),
        (opts(source=ContainerSource("relative/dir", transport="oci")), "invalid oci path"),
        (opts(source=ContainerSource("q.io/a", transport="dir")), "unknown transport"),
        (opts(volume_group="-bad"), "invalid volume group"),
        (opts(hostname="bad_host!"), "invalid host name"),
        (opts(timezone="Europe/../etc"), "invalid time zone"),
        (opts(root_size_mib=100), "too small"),
        (opts(version="F22", reqpart=True), "no reqpart"),
    ],
)
def test_bad_options(options: KickstartOptions, message: str) -> None:
    with pytest.raises(UserError, match=message):
        render(options)


def test_validate_names_the_line() -> None:
    text = "text\nreboot\nostreesetup --osname=rhel --url=ftp://h/repo --ref=a\n"
    with pytest.raises(KickstartValidationError, match=r"line 3 \('ostreesetup"):
        validate(text, "RHEL9")
    with pytest.raises(KickstartValidationError, match="line 2"):
        validate("text\nnosuchcommand\n", "RHEL9")
    assert not issubclass(KickstartValidationError, UserError)  # our output is at fault


# --------------------------------------------------------------------------- the CLI


def ocitree(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = main(["kickstart", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_stdout_and_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--ostree-url", "http://10.0.2.2:8000/repo/", "--ref", "rhel/9/x86_64/edge"]
    code, out, _ = ocitree(capsys, *args, "--nogpg")
    assert code == 0
    assert out == render(opts())
    ks = tmp_path / "edge.ks"
    code, _, _ = ocitree(capsys, *args, "--nogpg", "--root-size", "16G", "-o", ks)
    assert code == 0
    assert stat.S_IMODE(ks.stat().st_mode) == 0o644  # no secrets in it
    ksparse(ks.read_text())
    assert "--size=16384 --name=root" in ks.read_text()
    assert not [p for p in tmp_path.iterdir() if p.name != "edge.ks"]  # no temporary left


def test_cli_container_with_secrets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    auth = write_json(tmp_path / "auth.json", AUTH)
    secret = write_json(tmp_path / "ps.json", SECRET)
    bp = tmp_path / "installer.toml"
    # the blueprint of the compose, as is: its distro and package groups do not matter here
    bp.write_text('distro = "rhel-9.4"\n' + BLUEPRINT + '\n[[groups]]\nname = "core"\n')
    ks = tmp_path / "ms.ks"
    code, out, err = ocitree(
        capsys, "--container", "docker://quay.io/example/microshift:4.15", "--version", "RHEL10",
        "--auth-file", auth, "--pull-secret", secret, "--blueprint", bp, "-o", ks,
    )  # fmt: skip
    assert code == 0, err
    assert out == ""
    assert stat.S_IMODE(ks.stat().st_mode) == 0o600
    text = ks.read_text()
    handler = ksparse(text, "RHEL10")
    assert handler.ostreecontainer.url == "quay.io/example/microshift:4.15"
    assert handler.ostreecontainer.transport == "registry"
    assert "--hostname=edge-01.example.com" in text
    assert "packages" in err and "ignored" in err  # the blueprint's packages are the image's

    code, _, _ = ocitree(capsys, "--container", f"oci:{tmp_path}/layout:1", "-o", ks)
    assert code == 0
    assert ksparse(ks.read_text()).ostreecontainer.transport == "oci"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--ostree-url", "http://h/repo", "--ref", "a", "--root-size", "ten"], "invalid size"),
        (["--ostree-url", "http://h/repo", "--ref", "a", "--root-size", "10"], "too small"),
        (["--ostree-url", "gopher://h/repo", "--ref", "a"], "invalid ostree repository URL"),
        (["--ostree-url", "http://h/repo", "--ref", "a b"], "invalid ostree ref"),
        (["--ostree-url", "http://h/repo", "--ref", "a", "--osname", "a/b"], "invalid osname"),
        (["--ostree-url", "http://h/repo", "--ref", "a", "--version", "RHEL99"], "unknown"),
        (["--container", "q.io/a:1", "--version", "RHEL8"], "no ostreecontainer"),
        (["--container", "q.io/a:1", "--ref", "x"], "cannot be combined with --ref"),
        (["--container", "oci:/x", "--transport", "registry"], "not a registry reference"),
        (["--ostree-url", "http://h/repo"], "give --ostree-url URL --ref REF"),
        (["--ostree-url", "http://h/repo", "--ref", "a", "--transport", "oci"], "need --container"),
        ([], "give --ostree-url URL --ref REF"),
        (["--container", "q.io/a:1", "--auth-file", "/nonexistent.json"], "cannot read"),
        (["--container", "q.io/a:1", "--blueprint", "/nonexistent.toml"], "cannot read"),
    ],
)
def test_cli_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    ks = tmp_path / "out.ks"
    code, out, err = ocitree(capsys, *argv, "-o", ks)
    assert code == 1
    assert out == ""
    assert err.startswith("ocitree: error: ") and err.count("\n") == 1
    assert message in err
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_cli_unknown_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ks = tmp_path / "out.ks"
    with pytest.raises(SystemExit) as e:
        main(["kickstart", "--container", "q.io/a:1", "--no-such-option", "-o", str(ks)])
    assert e.value.code == 2
    assert "unrecognized arguments: --no-such-option" in capsys.readouterr().err
    assert not ks.exists()


def test_cli_replaces_output_atomically(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ks = tmp_path / "out.ks"
    ks.write_text("old")
    code, _, _ = ocitree(capsys, "--container", "q.io/a:1", "--vg", "bad vg", "-o", ks)
    assert code == 1 and ks.read_text() == "old"  # a failure leaves the old file alone
    code, _, _ = ocitree(capsys, "--container", "q.io/a:1", "-o", ks)
    assert code == 0 and ks.read_text().startswith("# Written by ocitree kickstart")


def test_cli_user_password_hash_makes_the_file_private(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bp = tmp_path / "users.toml"
    bp.write_text(f'name = "x"\n[[customizations.user]]\nname = "alice"\npassword = "{HASH}"\n')
    ks = tmp_path / "out.ks"
    argv = ["--ostree-url", "http://h/repo", "--ref", "a", "--blueprint", bp, "-o", ks]
    code, _, err = ocitree(capsys, *argv)
    assert code == 0, err
    assert HASH in ks.read_text()
    assert stat.S_IMODE(ks.stat().st_mode) == 0o600


def test_cli_output_to_a_directory_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for target in (tmp_path, tmp_path / "missing" / "out.ks"):
        code, out, err = ocitree(capsys, "--container", "q.io/a:1", "-o", target)
        assert code == 1 and out == ""
        assert err.startswith("ocitree: error: cannot write") and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []
