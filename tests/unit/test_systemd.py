"""The offline systemctl: enable/disable/preset/mask symlinks in a build root, no-op verbs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ocitree.build.systemd import SystemctlResult, systemctl

LIB = "usr/lib/systemd/system"
ETC = "etc/systemd/system"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    (r / LIB).mkdir(parents=True)
    (r / ETC).mkdir(parents=True)
    (r / "lib").symlink_to("usr/lib")  # as on Fedora: lib -> usr/lib
    return r


def unit(root: Path, name: str, install: str = "", where: str = LIB) -> Path:
    path = root / where / name
    path.parent.mkdir(parents=True, exist_ok=True)
    body = f"[Unit]\nDescription={name}\n\n[Service]\nExecStart=/usr/bin/true\n"
    if install:
        body += f"\n[Install]\n{install}\n"
    path.write_text(body)
    return path


def preset(root: Path, name: str, text: str, where: str = "usr/lib/systemd/system-preset") -> None:
    d = root / where
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_text(text)


def run(root: Path, *argv: str) -> SystemctlResult:
    return systemctl(root, argv)


def link(root: Path, rel: str) -> str | None:
    p = root / rel
    return os.readlink(p) if p.is_symlink() else None


def all_links(root: Path) -> dict[str, str]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root / ETC):
        for n in filenames + dirnames:
            p = Path(dirpath) / n
            if p.is_symlink():
                out[str(p.relative_to(root))] = os.readlink(p)
    return out


MULTI_USER = "WantedBy=multi-user.target"


# enable


def test_enable_microshift(root: Path) -> None:
    unit(root, "microshift.service", MULTI_USER)
    r = run(root, "enable", "microshift.service")
    assert r.exit_code == 0, r.stderr
    assert link(root, f"{ETC}/multi-user.target.wants/microshift.service") == (
        "/usr/lib/systemd/system/microshift.service"
    )
    assert r.stdout == ""
    assert r.stderr == (
        "Created symlink /etc/systemd/system/multi-user.target.wants/microshift.service"
        " → /usr/lib/systemd/system/microshift.service.\n"
    )
    assert run(root, "is-enabled", "microshift").stdout == "enabled\n"


def test_enable_is_idempotent(root: Path) -> None:
    unit(root, "microshift.service", MULTI_USER)
    assert run(root, "enable", "microshift").exit_code == 0
    before = all_links(root)
    again = run(root, "enable", "microshift.service")
    assert again.exit_code == 0
    assert again.stderr == ""
    assert all_links(root) == before


def test_enable_accepts_an_equivalent_existing_link(root: Path) -> None:
    unit(root, "a.service", MULTI_USER)
    wants = root / ETC / "multi-user.target.wants"
    wants.mkdir()
    (wants / "a.service").symlink_to("/lib/systemd/system/a.service")
    r = run(root, "enable", "a")
    assert r.exit_code == 0 and r.stderr == ""
    assert link(root, f"{ETC}/multi-user.target.wants/a.service") == "/lib/systemd/system/a.service"


def test_enable_now_quiet_without_suffix(root: Path) -> None:
    unit(root, "openvswitch.service", MULTI_USER)
    r = run(root, "enable", "--now", "--quiet", "openvswitch")
    assert r == SystemctlResult(0, "", "")
    assert link(root, f"{ETC}/multi-user.target.wants/openvswitch.service") is not None


def test_options_anywhere(root: Path) -> None:
    unit(root, "a.service", MULTI_USER)
    r = run(root, "--no-reload", "enable", "a", "-q", "--root=/whatever", "--system", "--no-block")
    assert r == SystemctlResult(0, "", "")
    assert link(root, f"{ETC}/multi-user.target.wants/a.service") is not None


def test_required_upheld_and_several_targets(root: Path) -> None:
    unit(
        root,
        "b.service",
        "WantedBy=multi-user.target graphical.target\nRequiredBy=x.target\nUpheldBy=y.target",
    )
    assert run(root, "enable", "b").exit_code == 0
    target = "/usr/lib/systemd/system/b.service"
    assert all_links(root) == {
        f"{ETC}/multi-user.target.wants/b.service": target,
        f"{ETC}/graphical.target.wants/b.service": target,
        f"{ETC}/x.target.requires/b.service": target,
        f"{ETC}/y.target.upholds/b.service": target,
    }


def test_unit_in_etc_overrides_usr(root: Path) -> None:
    unit(root, "c.service", "WantedBy=a.target")
    unit(root, "c.service", "WantedBy=b.target", where=ETC)
    assert run(root, "enable", "c").exit_code == 0
    assert all_links(root) == {f"{ETC}/b.target.wants/c.service": "/etc/systemd/system/c.service"}


def test_unit_found_through_lib_symlink_only(tmp_path: Path) -> None:
    r = tmp_path / "root"
    (r / "usr/lib/systemd/system").mkdir(parents=True)
    (r / "lib").symlink_to("/usr/lib")  # absolute: inside the root, not the host's /usr/lib
    unit(r, "d.service", MULTI_USER)
    assert run(r, "enable", "d").exit_code == 0
    assert link(r, f"{ETC}/multi-user.target.wants/d.service") == (
        "/usr/lib/systemd/system/d.service"
    )


def test_enable_unit_without_install(root: Path) -> None:
    unit(root, "static.service")
    r = run(root, "enable", "static.service")
    assert r.exit_code == 0
    assert "no installation config" in r.stderr
    assert all_links(root) == {}
    assert run(root, "enable", "-q", "static.service").stderr == ""
    assert run(root, "is-enabled", "static").stdout == "static\n"


def test_enable_unknown_unit(root: Path) -> None:
    unit(root, "a.service", MULTI_USER)
    r = run(root, "enable", "a", "nope")
    assert r.exit_code == 1
    assert r.stderr == "Failed to enable unit: Unit file nope.service does not exist.\n"
    assert all_links(root) == {}  # nothing done when one fails


def test_enable_conflicting_link_needs_force(root: Path) -> None:
    unit(root, "a.service", MULTI_USER)
    wants = root / ETC / "multi-user.target.wants"
    wants.mkdir()
    (wants / "a.service").symlink_to("/opt/other.service")
    r = run(root, "enable", "a")
    assert r.exit_code == 1
    assert "already exists and is a symlink to /opt/other.service" in r.stderr
    assert run(root, "enable", "--force", "a").exit_code == 0
    assert link(root, f"{ETC}/multi-user.target.wants/a.service") == (
        "/usr/lib/systemd/system/a.service"
    )


# aliases and Also=


def test_alias_and_also(root: Path) -> None:
    unit(root, "net.service", f"{MULTI_USER}\nAlias=dbus-org.net.service\nAlso=net.socket")
    unit(root, "net.socket", "WantedBy=sockets.target")
    r = run(root, "enable", "net")
    assert r.exit_code == 0, r.stderr
    assert all_links(root) == {
        f"{ETC}/multi-user.target.wants/net.service": "/usr/lib/systemd/system/net.service",
        f"{ETC}/dbus-org.net.service": "/usr/lib/systemd/system/net.service",
        f"{ETC}/sockets.target.wants/net.socket": "/usr/lib/systemd/system/net.socket",
    }
    assert run(root, "is-enabled", "dbus-org.net.service").stdout == "alias\n"
    assert run(root, "is-enabled", "net.socket").stdout == "enabled\n"

    r = run(root, "disable", "net")
    assert r.exit_code == 0
    assert all_links(root) == {}
    assert 'Removed "/etc/systemd/system/dbus-org.net.service".' in r.stderr.splitlines()
    assert not (root / ETC / "multi-user.target.wants").exists()  # emptied, removed


def test_enable_through_alias_name(root: Path) -> None:
    unit(root, "real.service", MULTI_USER)
    (root / LIB / "other-name.service").symlink_to("real.service")
    assert run(root, "enable", "other-name").exit_code == 0
    assert all_links(root) == {
        f"{ETC}/multi-user.target.wants/real.service": "/usr/lib/systemd/system/real.service"
    }


def test_also_missing_unit_fails(root: Path) -> None:
    unit(root, "a.service", "Also=gone.socket")
    r = run(root, "enable", "a")
    assert r.exit_code == 1
    assert "gone.socket does not exist" in r.stderr


def test_also_only_is_indirect(root: Path) -> None:
    unit(root, "a.service", "Also=a.socket")
    unit(root, "a.socket", "WantedBy=sockets.target")
    assert run(root, "is-enabled", "a").stdout == "indirect\n"
    r = run(root, "enable", "a")
    assert r.exit_code == 0 and "no installation config" not in r.stderr
    assert link(root, f"{ETC}/sockets.target.wants/a.socket") is not None


def test_also_cycle(root: Path) -> None:
    unit(root, "a.service", f"{MULTI_USER}\nAlso=b.service")
    unit(root, "b.service", f"{MULTI_USER}\nAlso=a.service")
    assert run(root, "enable", "a").exit_code == 0
    assert len(all_links(root)) == 2


# templates


def test_template_with_default_instance(root: Path) -> None:
    unit(root, "getty@.service", "WantedBy=getty.target\nDefaultInstance=tty1")
    assert run(root, "enable", "getty@.service").exit_code == 0
    assert all_links(root) == {
        f"{ETC}/getty.target.wants/getty@tty1.service": "/usr/lib/systemd/system/getty@.service"
    }
    assert run(root, "is-enabled", "getty@.service").stdout == "enabled\n"

    assert run(root, "enable", "getty@tty2").exit_code == 0
    assert link(root, f"{ETC}/getty.target.wants/getty@tty2.service") == (
        "/usr/lib/systemd/system/getty@.service"
    )
    assert run(root, "is-enabled", "getty@tty2.service").stdout == "enabled\n"
    assert run(root, "is-enabled", "getty@tty3.service").stdout == "disabled\n"

    assert run(root, "disable", "getty@tty2.service").exit_code == 0
    assert set(all_links(root)) == {f"{ETC}/getty.target.wants/getty@tty1.service"}

    assert run(root, "disable", "getty@.service").exit_code == 0
    assert all_links(root) == {}


def test_template_without_default_instance(root: Path) -> None:
    unit(root, "serial@.service", "WantedBy=getty.target\nAlias=console@.service")
    r = run(root, "enable", "serial@.service")
    assert r.exit_code == 0
    assert all_links(root) == {f"{ETC}/console@.service": "/usr/lib/systemd/system/serial@.service"}
    assert run(root, "enable", "serial@ttyS0.service").exit_code == 0
    assert link(root, f"{ETC}/getty.target.wants/serial@ttyS0.service") == (
        "/usr/lib/systemd/system/serial@.service"
    )
    assert link(root, f"{ETC}/console@ttyS0.service") == "/usr/lib/systemd/system/serial@.service"


def test_template_specifiers(root: Path) -> None:
    unit(root, "vm@.service", "WantedBy=machine@%i.target\nDefaultInstance=one")
    assert run(root, "enable", "vm@.service").exit_code == 0
    assert set(all_links(root)) == {f"{ETC}/machine@one.target.wants/vm@one.service"}


# disable


def test_disable(root: Path) -> None:
    unit(root, "microshift.service", MULTI_USER)
    unit(root, "other.service", MULTI_USER)
    run(root, "enable", "microshift", "other")
    r = run(root, "disable", "--now", "microshift.service")
    assert r.exit_code == 0
    assert r.stderr == (
        'Removed "/etc/systemd/system/multi-user.target.wants/microshift.service".\n'
    )
    assert set(all_links(root)) == {f"{ETC}/multi-user.target.wants/other.service"}
    assert run(root, "is-enabled", "microshift").stdout == "disabled\n"
    again = run(root, "disable", "microshift")
    assert again.exit_code == 0 and again.stderr == ""


def test_disable_removes_manual_links_but_keeps_masks_and_files(root: Path) -> None:
    unit(root, "a.service", MULTI_USER)
    unit(root, "b.service", MULTI_USER, where=ETC)
    wants = root / ETC / "custom.target.wants"
    wants.mkdir()
    (wants / "a.service").symlink_to("../../../../usr/lib/systemd/system/a.service")
    (root / ETC / "manual-alias.service").symlink_to("/usr/lib/systemd/system/a.service")
    (root / ETC / "b-alias.service").symlink_to("/usr/lib/systemd/system/b.service")
    assert run(root, "disable", "a", "b").exit_code == 0
    assert all_links(root) == {f"{ETC}/b-alias.service": "/usr/lib/systemd/system/b.service"}
    assert (root / ETC / "b.service").is_file()


def test_disable_unknown_unit(root: Path) -> None:
    r = run(root, "disable", "nope")
    assert r.exit_code == 1
    assert r.stderr == "Failed to disable unit: Unit file nope.service does not exist.\n"


def test_reenable(root: Path) -> None:
    unit(root, "a.service", "WantedBy=b.target")
    run(root, "enable", "a")
    (root / LIB / "a.service").write_text(f"[Install]\n{MULTI_USER}\n")
    assert run(root, "reenable", "a").exit_code == 0
    assert set(all_links(root)) == {f"{ETC}/multi-user.target.wants/a.service"}


# presets


def test_preset_systemd_post_style(root: Path) -> None:
    unit(root, "microshift.service", MULTI_USER)
    unit(root, "chatty.service", MULTI_USER)
    preset(root, "50-microshift.preset", "# MicroShift\nenable microshift.service\n")
    preset(root, "99-default.preset", "disable *\n")
    r = run(root, "--no-reload", "preset", "microshift.service")
    assert r.exit_code == 0, r.stderr
    assert link(root, f"{ETC}/multi-user.target.wants/microshift.service") == (
        "/usr/lib/systemd/system/microshift.service"
    )
    run(root, "enable", "chatty")
    assert run(root, "preset", "chatty.service").exit_code == 0
    assert link(root, f"{ETC}/multi-user.target.wants/chatty.service") is None


def test_preset_first_match_wins_in_file_name_order(root: Path) -> None:
    unit(root, "a.service", MULTI_USER)
    preset(root, "90-b.preset", "enable a.service\n")
    preset(root, "10-a.preset", "disable a.*\n")
    run(root, "preset", "a")
    assert all_links(root) == {}


def test_preset_in_etc_hides_same_name_in_usr(root: Path) -> None:
    unit(root, "a.service", MULTI_USER)
    preset(root, "90-default.preset", "disable *\n")
    preset(root, "90-default.preset", "enable *\n", where="etc/systemd/system-preset")
    run(root, "preset", "a")
    assert len(all_links(root)) == 1


def test_preset_without_rules_enables(root: Path) -> None:
    unit(root, "a.service", MULTI_USER)
    assert run(root, "preset", "a").exit_code == 0
    assert len(all_links(root)) == 1


def test_preset_modes(root: Path) -> None:
    unit(root, "a.service", MULTI_USER)
    preset(root, "99-default.preset", "disable *\n")
    run(root, "enable", "a")
    assert run(root, "preset", "--preset-mode=enable-only", "a").exit_code == 0
    assert len(all_links(root)) == 1
    assert run(root, "preset", "--preset-mode", "disable-only", "a").exit_code == 0
    assert all_links(root) == {}


def test_preset_template_instances(root: Path) -> None:
    unit(root, "getty@.service", "WantedBy=getty.target\nDefaultInstance=tty1")
    preset(root, "50-getty.preset", "enable getty@.service tty3 tty4\n")
    assert run(root, "preset", "getty@.service").exit_code == 0
    assert set(all_links(root)) == {
        f"{ETC}/getty.target.wants/getty@tty3.service",
        f"{ETC}/getty.target.wants/getty@tty4.service",
    }


def test_preset_all(root: Path) -> None:
    unit(root, "on.service", MULTI_USER)
    unit(root, "off.service", MULTI_USER)
    unit(root, "static.service")
    unit(root, "hidden.service", MULTI_USER)
    (root / ETC / "hidden.service").symlink_to("/dev/null")
    preset(root, "50-on.preset", "enable on.service\nenable hidden.service\n")
    preset(root, "99-default.preset", "disable *\n")
    run(root, "enable", "off")
    r = run(root, "preset-all")
    assert r.exit_code == 0, r.stderr
    assert all_links(root) == {
        f"{ETC}/multi-user.target.wants/on.service": "/usr/lib/systemd/system/on.service",
        f"{ETC}/hidden.service": "/dev/null",
    }
    again = run(root, "preset-all")
    assert again.exit_code == 0 and again.stderr == ""


def test_masked_preset_file_is_ignored(root: Path) -> None:
    unit(root, "a.service", MULTI_USER)
    preset(root, "99-default.preset", "disable *\n")
    d = root / "etc/systemd/system-preset"
    d.mkdir(parents=True)
    (d / "99-default.preset").symlink_to("/dev/null")
    run(root, "preset", "a")
    assert len(all_links(root)) == 1


# mask


def test_mask_unmask(root: Path) -> None:
    unit(root, "crio.service", MULTI_USER)
    r = run(root, "mask", "crio")
    assert r.exit_code == 0
    assert r.stderr == "Created symlink /etc/systemd/system/crio.service → /dev/null.\n"
    assert link(root, f"{ETC}/crio.service") == "/dev/null"
    assert run(root, "mask", "crio").stderr == ""  # idempotent
    is_enabled = run(root, "is-enabled", "crio")
    assert (is_enabled.exit_code, is_enabled.stdout) == (1, "masked\n")
    enable = run(root, "enable", "crio")
    assert enable.exit_code == 1 and "is masked" in enable.stderr
    assert run(root, "disable", "crio").exit_code == 0
    assert link(root, f"{ETC}/crio.service") == "/dev/null"  # disable does not unmask

    r = run(root, "unmask", "crio.service")
    assert r.exit_code == 0
    assert r.stderr == 'Removed "/etc/systemd/system/crio.service".\n'
    assert not (root / ETC / "crio.service").exists()
    assert run(root, "unmask", "crio.service").exit_code == 0


def test_mask_unknown_unit_is_fine(root: Path) -> None:
    assert run(root, "mask", "nothere.timer").exit_code == 0
    assert link(root, f"{ETC}/nothere.timer") == "/dev/null"


def test_mask_refuses_a_unit_file_in_etc(root: Path) -> None:
    unit(root, "local.service", MULTI_USER, where=ETC)
    r = run(root, "mask", "local")
    assert r.exit_code == 1
    assert "already exists" in r.stderr
    assert (root / ETC / "local.service").is_file()


def test_unmask_leaves_other_files(root: Path) -> None:
    unit(root, "local.service", MULTI_USER, where=ETC)
    assert run(root, "unmask", "local").exit_code == 0
    assert (root / ETC / "local.service").is_file()


# is-enabled, is-active, no-op verbs


def test_is_enabled_values(root: Path) -> None:
    unit(root, "on.service", MULTI_USER)
    unit(root, "off.service", MULTI_USER)
    unit(root, "static.service")
    unit(root, "masked.service", MULTI_USER)
    run(root, "enable", "on")
    run(root, "mask", "masked")
    cases = {
        "on": ("enabled", 0),
        "off": ("disabled", 1),
        "static": ("static", 0),
        "masked": ("masked", 1),
        "missing": ("not-found", 4),
    }
    for name, (state, code) in cases.items():
        r = run(root, "is-enabled", name)
        assert (r.stdout, r.exit_code) == (state + "\n", code), name
    both = run(root, "is-enabled", "off", "on")
    assert (both.stdout, both.exit_code) == ("disabled\nenabled\n", 0)
    quiet = run(root, "is-enabled", "--quiet", "on")
    assert (quiet.stdout, quiet.exit_code) == ("", 0)


def test_is_active_and_is_failed(root: Path) -> None:
    assert run(root, "is-active", "--quiet", "crio") == SystemctlResult(3, "", "")
    assert run(root, "is-active", "crio", "kubelet") == SystemctlResult(
        3, "inactive\ninactive\n", ""
    )
    assert run(root, "is-failed", "crio") == SystemctlResult(1, "inactive\n", "")


@pytest.mark.parametrize(
    "argv",
    [
        ["restart", "--quiet", "crio"],
        ["start", "crio.service"],
        ["stop", "--no-block", "x"],
        ["daemon-reload"],
        ["try-restart", "a", "b"],
        ["reload-or-restart", "a"],
        ["reset-failed"],
        ["kill", "a"],
    ],
)
def test_noop_verbs(root: Path, argv: list[str]) -> None:
    assert run(root, *argv) == SystemctlResult(0, "", "")
    assert all_links(root) == {}


@pytest.mark.parametrize("verb", ["status", "list-units", "list-unit-files", "edit"])
def test_unsupported_verbs(root: Path, verb: str) -> None:
    r = run(root, verb, "a")
    assert r == SystemctlResult(1, "", f"systemctl: '{verb}' is not supported in an image build\n")


def test_no_verb_is_list_units(root: Path) -> None:
    assert run(root).exit_code == 1


@pytest.mark.parametrize("flag", ["--user", "--global"])
def test_user_and_global_unsupported(root: Path, flag: str) -> None:
    unit(root, "a.service", MULTI_USER)
    r = run(root, flag, "enable", "a")
    assert r.exit_code == 1
    assert flag in r.stderr
    assert all_links(root) == {}


def test_unknown_option(root: Path) -> None:
    assert run(root, "--bogus", "enable", "a").exit_code == 1
    assert run(root, "-x", "enable", "a").exit_code == 1


def test_too_few_arguments(root: Path) -> None:
    r = run(root, "enable")
    assert r.exit_code == 1 and "Too few arguments" in r.stderr


def test_set_and_get_default(root: Path) -> None:
    unit(root, "multi-user.target")
    unit(root, "graphical.target")
    assert run(root, "set-default", "graphical.target").exit_code == 0
    assert run(root, "set-default", "multi-user.target").exit_code == 0
    assert link(root, f"{ETC}/default.target") == "/usr/lib/systemd/system/multi-user.target"
    assert run(root, "get-default").stdout == "multi-user.target\n"


# path safety


@pytest.mark.parametrize(
    "name", ["../x.service", "a/b.service", "/etc/passwd", "..", "x..service", ""]
)
@pytest.mark.parametrize("verb", ["enable", "disable", "mask", "unmask", "preset", "is-enabled"])
def test_bad_unit_names(root: Path, verb: str, name: str) -> None:
    r = run(root, verb, name)
    assert r.exit_code == 1
    assert "invalid unit name" in r.stderr
    assert all_links(root) == {}


@pytest.mark.parametrize(
    "install",
    [
        "WantedBy=../../../../evil.target",
        "WantedBy=a/b.target",
        "Alias=../../x.service",
        "Alias=other.socket",
        "Also=../x.service",
        "WantedBy=%H.target",
    ],
)
def test_bad_names_in_unit_files(root: Path, tmp_path: Path, install: str) -> None:
    unit(root, "bad.service", install)
    r = run(root, "enable", "bad")
    assert r.exit_code == 1, r.stderr
    assert all_links(root) == {}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["root"]


def test_writes_stay_in_root_through_absolute_symlinks(tmp_path: Path) -> None:
    r = tmp_path / "root"
    outside = tmp_path / "outside"
    (outside / "systemd/system").mkdir(parents=True)
    (r / LIB).mkdir(parents=True)
    (r / "etc").symlink_to(outside)  # absolute host path: means root/<that path> inside
    unit(r, "a.service", MULTI_USER)
    res = run(r, "enable", "a")
    assert res.exit_code == 0, res.stderr
    assert list((outside / "systemd/system").iterdir()) == []
    inside = r / str(outside).lstrip("/") / "systemd/system/multi-user.target.wants/a.service"
    assert os.readlink(inside) == "/usr/lib/systemd/system/a.service"


def test_units_are_not_read_from_the_host(tmp_path: Path) -> None:
    host_units = tmp_path / "host-units"
    host_units.mkdir()
    unit(tmp_path, "hostonly.service", MULTI_USER, where="host-units")
    r = tmp_path / "root"
    (r / "usr/lib/systemd").mkdir(parents=True)
    (r / "usr/lib/systemd/system").symlink_to(host_units)
    res = run(r, "enable", "hostonly")
    assert res.exit_code == 1
    assert "does not exist" in res.stderr


def test_symlink_loop(root: Path) -> None:
    (root / ETC / "multi-user.target.wants").symlink_to("multi-user.target.wants")
    unit(root, "a.service", MULTI_USER)
    r = run(root, "enable", "a")
    assert r.exit_code == 1
    assert "too many levels of symbolic links" in r.stderr


def test_missing_root(tmp_path: Path) -> None:
    r = run(tmp_path / "nope", "enable", "a")
    assert r.exit_code == 1 and "does not exist" in r.stderr
