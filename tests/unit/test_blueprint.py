"""osbuild blueprints for ``ocitree build --blueprint``: the model, every error with its
line, and what applying one does to a build root."""

from __future__ import annotations

import os
import re
import stat
import tomllib
from collections.abc import Sequence
from pathlib import Path

import pytest

from ocitree.build.blueprint import (
    KARGS_FILE,
    TMPFILES_FILE,
    Blueprint,
    BlueprintError,
    Directory,
    File,
    Group,
    Package,
    Services,
    SshKey,
    User,
    apply,
    load,
    parse,
)
from ocitree.errors import UserError

HASH = "$6$salt$Wn0lZ1fBn5Qx0Qm7w0Q3fQe3l2o8yqg1o0mS1P2rQe4v6z7Y8b9c0d1e2f3g4h5i6j7k8l9m0n1o2p3q"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBlueprintTestKey alice@example"

FULL = f'''\
name = "microshift-layer"
description = "MicroShift on the edge base"
version = "0.1.0"

[[packages]]
name = "microshift"
version = "*"

[[packages]]
name = "cri-o"
version = "1.25.2-4"

[[modules]]
name = "openvswitch"

[customizations]
hostname = "edge-01"

[customizations.kernel]
append = "nosmt=force console=ttyS0,115200 quoted=\\"a b\\""

[customizations.services]
enabled = ["microshift", "crio.socket"]
disabled = ["postfix"]
masked = ["telnet.socket"]

[[customizations.directories]]
path = "/etc/microshift/manifests"
mode = "0750"
user = "alice"
group = 1200
ensure_parents = true

[[customizations.files]]
path = "/etc/microshift/config.yaml"
mode = "640"
user = 1200
group = "wheel"
data = """
dns:
  baseDomain: example.com
"""

[[customizations.files]]
path = "/usr/lib/systemd/system/extra.service"

[[customizations.group]]
name = "widget"
gid = 1130

[[customizations.group]]
name = "students"

[[customizations.user]]
name = "alice"
description = "Alice Admin"
password = "{HASH}"
key = "{KEY}"
home = "/srv/alice/"
shell = "/usr/bin/bash"
groups = ["widget", "wheel"]
uid = 1200
gid = 1200
expiredate = 20000

[[customizations.user]]
name = "bob"

[[customizations.sshkey]]
user = "root"
key = "ssh-rsa AAAAB3root root@example"

[customizations.timezone]
timezone = "Europe/Berlin"

[customizations.locale]
languages = ["de_DE.UTF-8", "en_US.UTF-8"]
keyboard = "de"
'''


def errors(text: str) -> list[tuple[int, str]]:
    with pytest.raises(BlueprintError) as info:
        parse(text, filename="layer.toml")
    return info.value.errors


def error(text: str) -> tuple[int, str]:
    found = errors(text)
    assert len(found) == 1, found
    return found[0]


# --------------------------------------------------------------------------- the model


def test_full_blueprint_parses_into_the_model() -> None:
    bp = parse(FULL, filename="layer.toml")
    assert (bp.name, bp.description, bp.version) == (
        "microshift-layer",
        "MicroShift on the edge base",
        "0.1.0",
    )
    assert bp.packages == (Package("microshift"), Package("cri-o", "1.25.2-4"))
    assert bp.modules == (Package("openvswitch"),)
    cz = bp.customizations
    assert cz.hostname == "edge-01"
    assert cz.kernel_append == ("nosmt=force", "console=ttyS0,115200", 'quoted="a b"')
    assert cz.services == Services(("microshift", "crio.socket"), ("postfix",), ("telnet.socket",))
    assert cz.directories == (Directory("/etc/microshift/manifests", 0o750, "alice", 1200, True),)
    assert cz.files == (
        File(
            "/etc/microshift/config.yaml",
            0o640,
            1200,
            "wheel",
            "dns:\n  baseDomain: example.com\n",
        ),
        File("/usr/lib/systemd/system/extra.service"),
    )
    assert cz.groups == (Group("widget", 1130), Group("students"))
    alice, bob = cz.users
    assert alice == User(
        "alice",
        "Alice Admin",
        HASH,
        KEY,
        "/srv/alice",
        "/usr/bin/bash",
        ("widget", "wheel"),
        1200,
        1200,
        20000,
    )
    assert bob == User("bob")
    assert cz.sshkeys == (SshKey("root", "ssh-rsa AAAAB3root root@example"),)
    assert cz.timezone == "Europe/Berlin"
    assert cz.languages == ("de_DE.UTF-8", "en_US.UTF-8") and cz.keyboard == "de"
    # Entries know where they are written, for errors found while applying.
    assert alice.at.line == FULL.splitlines().index("[[customizations.user]]") + 1
    assert alice.at.path == "customizations.user[0]"
    assert cz.files[1].at.path == "customizations.files[1]"


def test_model_is_frozen() -> None:
    bp = parse('name = "x"\n')
    with pytest.raises(AttributeError):
        bp.name = "y"  # type: ignore[misc]
    assert bp == Blueprint("x", filename="blueprint.toml")


def test_package_specs_for_the_installer() -> None:
    bp = parse(
        'name = "x"\npackages = [\n  { name = "a" },\n  { name = "b", version = "*" },\n'
        '  { name = "c", version = "1.2" },\n  { name = "d", version = "1.2-3.el9" },\n]\n'
    )
    assert [p.spec for p in bp.packages] == ["a", "b", "c = 1.2", "d = 1.2-3.el9"]


def test_load_reads_the_file_and_names_it_in_errors(tmp_path: Path) -> None:
    path = tmp_path / "layer.toml"
    path.write_text('name = "x"\n[customizations]\nhostname = 5\n')
    with pytest.raises(BlueprintError) as info:
        load(path)
    assert f"{path}:3: customizations.hostname: must be a string, not an integer" in str(info.value)
    with pytest.raises(UserError, match="cannot read the blueprint"):
        load(tmp_path / "missing.toml")


# --------------------------------------------------------------------------- errors


def test_every_error_is_reported_together_with_its_line() -> None:
    text = """\
name = "layer"
version = "one"
colour = "blue"

[[packages]]
name = "tmux"
version = ">= 2"

[customizations]
hostname = "bad_host!"
firewall = { ports = ["22:tcp"] }

[customizations.kernel]
name = "kernel-rt"
append = 3

[[customizations.files]]
path = "/etc/ok"

[[customizations.files]]
path = "etc/relative"
mode = 644
owner = "root"

[[customizations.user]]
name = "alice"
password = "secret"
uid = "1000"
"""
    found = errors(text)
    assert found == [
        (2, "version: 'one' is not a semver version like \"0.0.1\""),
        (3, "colour: unknown key (expected one of: customizations, description, modules, "
            "name, packages, version)"),
        (7, "packages[0].version: '>= 2' is not a version or version glob"),
        (10, "customizations.hostname: 'bad_host!' is not a valid host name"),
        (11, "customizations.firewall: not supported in a layer blueprint"),
        (14, "customizations.kernel.name: not supported in a layer blueprint (install the "
             "kernel package with [[packages]])"),
        (15, "customizations.kernel.append: must be a string, not an integer"),
        (21, "customizations.files[1].path: 'etc/relative' is not an absolute path"),
        (22, 'customizations.files[1].mode: must be an octal string like "0644", not an '
             "integer"),
        (23, "customizations.files[1].owner: unknown key (expected one of: data, group, "
             "mode, path, user)"),
        (27, "customizations.user[0].password: is not a crypt(3) hash ($6$..., $y$...): a "
             "plain-text password would be readable in the image; hash it (openssl passwd -6)"),
        (28, "customizations.user[0].uid: must be an integer, not a string"),
    ]  # fmt: skip
    with pytest.raises(BlueprintError) as info:
        parse(text, filename="layer.toml")
    message = str(info.value)
    assert message.startswith("12 errors in layer.toml\n")
    assert "\nlayer.toml:21: customizations.files[1].path: " in message


def test_missing_required_keys_point_at_their_table() -> None:
    text = (
        'description = "no name"\n'
        "[[customizations.files]]\n"
        'data = "x"\n'
        "[[customizations.user]]\n"
        "uid = 5\n"
        "[[customizations.sshkey]]\n"
        'user = "root"\n'
    )
    assert errors(text) == [
        (2, "customizations.files[0]: 'path' is required"),
        (4, "customizations.user[0]: 'name' is required"),
        (6, "customizations.sshkey[0]: 'key' is required"),
        (0, "'name' is required"),
    ]


@pytest.mark.parametrize(
    ("toml", "line", "message"),
    [
        ('packages = "tmux"', 2,
         "packages: must be an array of tables ([[packages]]), not a string"),
        ("packages = [1]", 2, "packages[0]: must be a table, not an integer"),
        ('customizations = "x"', 2, "customizations: must be a table, not a string"),
        ("[customizations]\nservices = []", 3,
         "customizations.services: must be a table, not an array"),
        ('[customizations.services]\nenabled = "sshd"', 3,
         "customizations.services.enabled: must be an array of strings, not a string"),
        ('[customizations.services]\nenabled = ["sshd", 2]', 3,
         "customizations.services.enabled[1]: must be a string, not an integer"),
        ('[customizations.services]\nenabled = ["a b"]', 3,
         "customizations.services.enabled[0]: 'a b' is not a systemd unit name"),
        ('[customizations.services]\nenabled = ["sshd"]\ndisabled = ["sshd"]', 4,
         "customizations.services.disabled: sshd is also enabled"),
        ('[[customizations.directories]]\npath = "/etc/d"\nensure_parents = "yes"', 4,
         "customizations.directories[0].ensure_parents: must be true or false, not a string"),
        ('[[customizations.directories]]\npath = "/etc/d"\nuser = true', 4,
         "customizations.directories[0].user: must be a user name or id, not a boolean"),
        ('[[customizations.directories]]\npath = "/etc/d"\ngroup = "no:pe"', 4,
         "customizations.directories[0].group: 'no:pe' is not a valid group name"),
        ('[[customizations.files]]\npath = "/etc/f"\nmode = "0999"', 4,
         "customizations.files[0].mode: '0999' is not an octal mode like \"0644\""),
        ('[[customizations.files]]\npath = "/etc/f"\nmode = "12345"', 4,
         "customizations.files[0].mode: '12345' is not an octal mode like \"0644\""),
        ('[[customizations.files]]\npath = "/etc/f"\ndata = 1979-05-27', 4,
         "customizations.files[0].data: must be a string, not a date/time"),
        ('[[customizations.files]]\npath = "/usr/etc/f"', 3,
         "customizations.files[0].path: /usr/etc/f is how /etc is stored: write /etc/f instead"),
        ('[[customizations.files]]\npath = "/var/lib/f"', 3,
         "customizations.files[0].path: /var/lib/f is not under /etc or /usr (what a layer "
         "may change)"),
        ('[[customizations.files]]\npath = "/etc/passwd"', 3,
         "customizations.files[0].path: /etc/passwd may not be written: use the user and "
         "group customizations"),
        ('[[customizations.files]]\npath = "/etc/../root/x"', 3,
         "customizations.files[0].path: '/etc/../root/x' is not a canonical path (no '.', "
         "'..', '//' or trailing '/')"),
        ('[[customizations.directories]]\npath = "/etc/d/"', 3,
         "customizations.directories[0].path: '/etc/d/' is not a canonical path (no '.', "
         "'..', '//' or trailing '/')"),
        ('[[customizations.files]]\npath = "/etc/x"\n[[customizations.files]]\npath = "/etc/x"',
         5, "customizations.files[1].path: /etc/x is listed twice"),
        ('[[customizations.directories]]\npath = "/etc/x"\n[[customizations.files]]\n'
         'path = "/etc/x"', 5, "customizations.files[0].path: /etc/x is also in "
         "customizations.directories"),
        ('[[customizations.group]]\nname = "g"\ngid = -1', 4,
         "customizations.group[0].gid: -1 is out of range"),
        ('[[customizations.group]]\nname = "g"\n[[customizations.group]]\nname = "g"', 5,
         "customizations.group[1].name: group g is listed twice"),
        ('[[customizations.user]]\nname = "a"\ngroups = "wheel"', 4,
         "customizations.user[0].groups: must be an array of strings, not a string"),
        ('[[customizations.user]]\nname = "a"\nhome = "home/a"', 4,
         "customizations.user[0].home: 'home/a' is not an absolute path"),
        ('[[customizations.user]]\nname = "a"\ndescription = "x:y"', 4,
         "customizations.user[0].description: must not contain ':' or a line break"),
        ('[[customizations.user]]\nname = "a"\nuid = 5\n[[customizations.user]]\n'
         'name = "b"\nuid = 5', 7, "customizations.user[1].uid: uid 5 is given twice"),
        ('[customizations.timezone]\ntimezone = "../../etc/shadow"', 3,
         "customizations.timezone.timezone: '../../etc/shadow' is not a time zone name like "
         '"Europe/Berlin"'),
        ('[customizations.timezone]\nntpservers = ["pool.ntp.org"]', 3,
         "customizations.timezone.ntpservers: not supported in a layer blueprint (write the "
         "NTP client's configuration with [[customizations.files]])"),
        ('[customizations.kernel]\nappend = "a=\\"b"', 3,
         "customizations.kernel.append: 'a=\"b' has an unbalanced '\"'"),
        ('[[packages]]\nname = "vim*"', 3,
         "packages[0].name: 'vim*': give an exact package name (no globs)"),
        ('[[packages]]\nname = "vim"\nrelease = "1"', 4,
         "packages[0].release: unknown key (expected one of: name, version)"),
        ('distro = "rhel-93"', 2,
         "distro: not supported in a layer blueprint (the base image is the distribution)"),
        ('[[groups]]\nname = "core"', 2, "groups: not supported in a layer blueprint (package "
         "groups need comps metadata: list the packages)"),
    ],
)  # fmt: skip
def test_single_errors(toml: str, line: int, message: str) -> None:
    assert error('name = "x"\n' + toml + "\n") == (line, message)


def test_invalid_toml_names_its_line() -> None:
    ((line, message),) = errors('name = "x"\n\n[customizations\nhostname = "a"\n')
    assert line == 3 and message.startswith("not valid TOML: ")


# --------------------------------------------------------------------------- locations


def test_inline_array_elements_have_their_own_lines() -> None:
    text = (
        'name = "x"\n'
        "packages = [\n"
        '  { name = "a" },\n'
        '  { name = "b", version = "< 1" },\n'
        "]\n"
        "[customizations]\n"
        'files = [{ path = "/etc/a" }, { path = "rel" }]\n'
    )
    assert [line for line, _ in errors(text)] == [4, 7]


def test_strings_that_look_like_tables_do_not_move_lines() -> None:
    text = (
        'name = "x"\n'
        "[[customizations.files]]\n"
        'path = "/etc/a"\n'
        'data = """\n'
        "[[customizations.files]]\n"
        "mode = 'not a key'\n"
        '"""\n'
        "[[customizations.files]]\n"
        'path = "/etc/b"  # a comment with "quotes" and [brackets]\n'
        'mode = "9"\n'
        "[customizations.services]\n"
        "enabled = [\n"
        '  "sshd",\n'
        '  "[not] = a header",\n'
        "]\n"
        "disabled = [1]\n"
    )
    assert errors(text) == [
        (10, "customizations.files[1].mode: '9' is not an octal mode like \"0644\""),
        (14, "customizations.services.enabled[1]: '[not] = a header' is not a systemd unit name"),
        (16, "customizations.services.disabled[0]: must be a string, not an integer"),
    ]


def test_dotted_and_quoted_keys_are_located() -> None:
    text = 'name = "x"\n[customizations]\nkernel.append = 1\n"hostname" = 2\n'
    assert errors(text) == [
        (3, "customizations.kernel.append: must be a string, not an integer"),
        (4, "customizations.hostname: must be a string, not an integer"),
    ]


# --------------------------------------------------------------------------- applying

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")

UNIT = (
    "[Unit]\nDescription=x\n[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n"
)


def make_root(tmp_path: Path) -> Path:
    """A running-system layout of an rpm-ostree image: users in /etc and /usr/lib."""
    root = tmp_path / "root"
    for d in ("etc/skel", "usr/lib/systemd/system", "usr/share/zoneinfo/Europe", "var", "bin"):
        (root / d).mkdir(parents=True)
    (root / "home").symlink_to("var/home")
    (root / "root").symlink_to("var/roothome")
    (root / "srv").symlink_to("var/srv")
    (root / "bin/sh").write_text("")
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (root / "etc/shadow").write_text("root:!locked::0:99999:7:::\n")
    (root / "etc/group").write_text("root:x:0:\n")
    (root / "etc/gshadow").write_text("root:::\n")
    (root / "usr/lib/group").write_text("root:x:0:\nwheel:x:10:\n")
    (root / "usr/lib/passwd").write_text("bin:x:1:1:bin:/bin:/sbin/nologin\n")
    (root / "etc/skel/.profile").write_text("# skel\n")
    (root / "etc/login.defs").write_text("UID_MIN 1000\nGID_MIN 1000\n")
    (root / "usr/share/zoneinfo/Europe/Berlin").write_bytes(b"TZif")
    for unit in ("microshift.service", "postfix.service", "telnet.socket", "crio.socket"):
        (root / "usr/lib/systemd/system" / unit).write_text(
            UNIT.replace("multi-user", "sockets") if unit.endswith(".socket") else UNIT
        )
    return root


class Recorder:
    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, specs: Sequence[str]) -> object:
        self.calls.append(list(specs))
        return ()


def owner(path: Path) -> tuple[int, int, int]:
    st = path.lstat()
    return st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)


@needs_root
def test_apply_does_every_customization(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    # A base layer's blueprint put kernel arguments there already: they stay.
    (root / KARGS_FILE.lstrip("/")).parent.mkdir(parents=True)
    (root / KARGS_FILE.lstrip("/")).write_text('kargs = ["quiet", "nosmt=force"]\n')
    bp = parse(FULL, filename="layer.toml")
    installer = Recorder()
    apply(bp, root, install=installer)

    assert installer.calls == [["microshift", "cri-o = 1.25.2-4", "openvswitch"]]
    # groups: widget with its gid, students with the first free one; wheel copied from
    # /usr/lib/group to take alice as a member.
    group = (root / "etc/group").read_text().splitlines()
    assert "widget:x:1130:alice" in group and "students:x:1000:" in group
    assert "wheel:x:10:alice" in group and "alice:x:1200:" in group
    assert "bob:x:1001:" in group  # bob's private group: gid = uid (1000) was taken
    gshadow = (root / "etc/gshadow").read_text().splitlines()
    assert "widget:!::alice" in gshadow and "students:!::" in gshadow
    passwd = (root / "etc/passwd").read_text().splitlines()
    assert "alice:x:1200:1200:Alice Admin:/srv/alice:/usr/bin/bash" in passwd
    assert "bob:x:1000:1001::/var/home/bob:/bin/sh" in passwd  # no bash in the image
    shadow = {
        ln.split(":")[0]: ln.split(":") for ln in (root / "etc/shadow").read_text().splitlines()
    }
    assert shadow["alice"][1] == HASH and shadow["alice"][7] == "20000"
    assert shadow["bob"][1] == "!"
    # homes: under /var (through the /srv and /home links), from /etc/skel, the key
    alice_home = root / "var/srv/alice"
    assert owner(alice_home) == (1200, 1200, 0o700)
    assert owner(alice_home / ".profile")[:2] == (1200, 1200)
    assert owner(alice_home / ".ssh") == (1200, 1200, 0o700)
    keys = alice_home / ".ssh/authorized_keys"
    assert keys.read_text() == KEY + "\n" and owner(keys) == (1200, 1200, 0o600)
    assert owner(root / "var/home/bob") == (1000, 1001, 0o700)
    assert not (root / "var/home/bob/.ssh").exists()
    # root's key, in /root -> var/roothome
    assert (root / "var/roothome/.ssh/authorized_keys").read_text() == (
        "ssh-rsa AAAAB3root root@example\n"
    )
    tmpfiles = (root / TMPFILES_FILE.lstrip("/")).read_text().splitlines()
    assert tmpfiles == [
        "d /var/srv/alice 0700 1200 1200 -",
        "d /var/srv/alice/.ssh 0700 1200 1200 -",
        "d /var/home/bob 0700 1000 1001 -",
        "d /var/roothome 0700 0 0 -",
        "d /var/roothome/.ssh 0700 0 0 -",
    ]
    # directories and files, owned by names the blueprint added
    d = root / "etc/microshift/manifests"
    assert owner(d) == (1200, 1200, 0o750) and owner(d.parent) == (0, 0, 0o755)
    f = root / "etc/microshift/config.yaml"
    assert f.read_text() == "dns:\n  baseDomain: example.com\n" and owner(f) == (1200, 10, 0o640)
    assert owner(root / "usr/lib/systemd/system/extra.service") == (0, 0, 0o644)
    # services
    wants = root / "etc/systemd/system/multi-user.target.wants/microshift.service"
    assert os.readlink(wants) == "/usr/lib/systemd/system/microshift.service"
    assert (root / "etc/systemd/system/sockets.target.wants/crio.socket").is_symlink()
    assert os.readlink(root / "etc/systemd/system/telnet.socket") == "/dev/null"
    # kernel arguments for bootc, merged with the base's
    kargs = tomllib.loads((root / KARGS_FILE.lstrip("/")).read_text())["kargs"]
    assert kargs == ["quiet", "nosmt=force", "console=ttyS0,115200", 'quoted="a b"']
    assert (root / "etc/hostname").read_text() == "edge-01\n"
    assert os.readlink(root / "etc/localtime") == "../usr/share/zoneinfo/Europe/Berlin"
    assert (root / "etc/locale.conf").read_text() == "LANG=de_DE.UTF-8\n"
    assert (root / "etc/vconsole.conf").read_text() == "KEYMAP=de\n"


@needs_root
def test_apply_disables_an_enabled_service(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    wants = root / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True)
    (wants / "postfix.service").symlink_to("/usr/lib/systemd/system/postfix.service")
    apply(
        parse('name = "x"\n[customizations.services]\ndisabled = ["postfix"]\n'),
        root,
        install=Recorder(),
    )
    assert not os.path.lexists(wants / "postfix.service")


@needs_root
def test_apply_without_packages_does_not_call_the_installer(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    installer = Recorder()
    apply(parse('name = "x"\n[customizations]\nhostname = "h"\n'), root, install=installer)
    assert installer.calls == []


@needs_root
def test_existing_user_gets_key_password_and_groups_only(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    text = (
        f'name = "x"\n[[customizations.user]]\nname = "root"\npassword = "{HASH}"\n'
        'groups = ["wheel"]\n'
    )
    apply(parse(text), root, install=Recorder())
    assert (root / "etc/shadow").read_text().splitlines()[0].split(":")[:3] == ["root", HASH, ""]
    assert (root / "etc/passwd").read_text() == "root:x:0:0:root:/root:/bin/bash\n"
    assert "wheel:x:10:root" in (root / "etc/group").read_text().splitlines()
    with pytest.raises(BlueprintError) as info:
        apply(
            parse('name = "x"\n\n[[customizations.user]]\nname = "root"\nuid = 7\n'),
            root,
            install=Recorder(),
        )
    assert info.value.errors == [
        (3, "customizations.user[0]: user root exists in the image: only key, password and "
            "groups can be given for it, not uid")
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[[customizations.files]]\npath = "/etc/new/file"',
         "customizations.files[0]: the directory of /etc/new/file does not exist: add it to "
         "[[customizations.directories]]"),
        ('[[customizations.files]]\npath = "/etc/skel"',
         "customizations.files[0]: /etc/skel is a directory in the image"),
        ('[[customizations.files]]\npath = "/etc/f"\nuser = "nobody"',
         "customizations.files[0]: no user 'nobody' in the image or the blueprint"),
        ('[[customizations.directories]]\npath = "/etc/skel"\nmode = "0700"',
         "customizations.directories[0]: /etc/skel exists in the image: mode, user and group "
         "are only for a new directory"),
        ('[[customizations.directories]]\npath = "/etc/a/b"',
         "customizations.directories[0]: the parent of /etc/a/b does not exist (set "
         "ensure_parents = true)"),
        ('[[customizations.user]]\nname = "a"\ngroups = ["nogroup"]',
         "customizations.user[0]: no group 'nogroup' in the image or the blueprint"),
        ('[[customizations.user]]\nname = "a"\nuid = 0',
         "customizations.user[0]: uid 0 is taken in the image"),
        ('[[customizations.user]]\nname = "root"\ngid = 4242',
         "customizations.user[0]: user root exists in the image: only key, password and groups "
         "can be given for it, not gid"),
        ('[[customizations.group]]\nname = "a"\n[[customizations.user]]\nname = "a"\ngid = 4242',
         "customizations.user[0]: no group with gid 4242 in the image or the blueprint"),
        ('[[customizations.group]]\nname = "wheel"\ngid = 11',
         "customizations.group[0]: group wheel exists in the image with gid 10"),
        ('[[customizations.sshkey]]\nuser = "nobody"\nkey = "k"',
         "customizations.sshkey[0]: no user 'nobody' in the image or the blueprint"),
        ('[customizations.services]\nenabled = ["missing"]',
         "customizations.services: systemctl enable missing: Failed to enable unit: Unit file "
         "missing.service does not exist."),
        ('[customizations.timezone]\ntimezone = "Mars/Olympus"',
         "customizations.timezone.timezone: the image has no time zone Mars/Olympus "
         "(/usr/share/zoneinfo/Mars/Olympus)"),
    ],
)  # fmt: skip
@needs_root
def test_apply_errors_name_the_entry(tmp_path: Path, toml: str, message: str) -> None:
    root = make_root(tmp_path)
    text = 'name = "x"\n' + toml + "\n"
    with pytest.raises(BlueprintError) as info:
        apply(parse(text, filename="layer.toml"), root, install=Recorder())
    ((line, got),) = info.value.errors
    assert got == message
    # the line of the entry's table, or of the key at fault
    path = re.sub(r"\[\d+\]", "", got.split(": ")[0])
    lines = text.splitlines()
    headers = {ln.strip("[]"): i for i, ln in enumerate(lines, 1) if ln.startswith("[")}
    expected = headers.get(path) or headers[path.rsplit(".", 1)[0]] + 1
    assert line == expected
    assert str(info.value).startswith(f"1 error in layer.toml\nlayer.toml:{line}: ")


@needs_root
def test_file_replaces_a_symlink_and_stays_in_the_root(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "etc/escape").symlink_to(outside)
    (root / "etc/link").symlink_to("/etc/passwd")
    text = (
        'name = "x"\n'
        '[[customizations.files]]\npath = "/etc/link"\ndata = "mine"\n'
        '[[customizations.files]]\npath = "/etc/escape/f"\ndata = "x"\n'
    )
    with pytest.raises(BlueprintError):
        apply(parse(text), root, install=Recorder())
    assert (root / "etc/link").read_text() == "mine" and not (root / "etc/link").is_symlink()
    assert (root / "etc/passwd").read_text().startswith("root:")
    assert not (outside / "f").exists()


def test_compose_blueprint_takes_distro_groups_and_version_globs() -> None:
    text = (
        'name = "edge"\nversion = "1.0.0"\ndistro = "rhel-8.7"\n'
        '[[packages]]\nname = "tmux"\nversion = "3.*"\n'
        '[[groups]]\nname = "core"\n'
    )
    bp = parse(text, compose=True)
    assert (bp.distro, bp.groups) == ("rhel-8.7", ("core",))
    assert bp.packages[0].spec == "tmux = 3.*"


def test_compose_blueprint_errors_for_distro_and_groups_have_lines() -> None:
    text = 'name = "e"\ndistro = "RHEL 8"\n[[groups]]\nname = "core"\n[[groups]]\nname = "core"\n'
    with pytest.raises(BlueprintError) as info:
        parse(text, compose=True)
    assert info.value.errors == [
        (2, "distro: 'RHEL 8' is not a distribution name like \"rhel-8.7\""),
        (5, "groups[1]: group core is listed twice"),
    ]


def test_seed_minimal_blueprint_is_accepted_for_compose() -> None:
    text = (
        'name = "minimal"\ndescription = "minimal rhel for edge blueprint"\n'
        'version = "1.0.0"\ndistro = "rhel-87"\n'
    )
    bp = parse(text, compose=True)
    assert (bp.name, bp.version, bp.distro, bp.packages) == ("minimal", "1.0.0", "rhel-87", ())
