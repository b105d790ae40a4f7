"""The Containerfile parser: the supported subset, Docker's expansion rules, and every error."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

import pytest

from ocitree.build.containerfile import (
    BindMount,
    Cmd,
    Containerfile,
    ContainerfileError,
    Copy,
    Env,
    From,
    Label,
    Run,
    SecretMount,
    Step,
    Workdir,
    parse,
)
from ocitree.errors import UserError

NO_ARGS: Mapping[str, str] = MappingProxyType({})

SEED = (
    "FROM quay.io/miabbott/rhel-for-edge:8.7\n"
    "COPY etc /etc\n"
    "RUN rpm-ostree install microshift && \\\n"
    "    systemctl enable microshift && \\\n"
    "    rm -rf /etc/{pki,rhsm,yum.repos.d} && \\\n"
    "    ostree container commit\n"
)


def steps(text: str, build_args: Mapping[str, str] = NO_ARGS) -> tuple[Step, ...]:
    return parse(text, build_args=build_args).steps


def only(text: str) -> Step:
    """The single step of ``FROM base`` + ``text`` (whose first line is line 2)."""
    (step,) = steps("FROM base\n" + text)
    return step


def errors(text: str) -> list[tuple[int, str]]:
    with pytest.raises(ContainerfileError) as info:
        parse(text)
    return info.value.errors


def error(text: str) -> str:
    """The single error of ``FROM base`` + ``text`` (whose first line is line 2)."""
    found = errors("FROM base\n" + text)
    assert len(found) == 1, found
    return found[0][1]


# --- the seed and the overall shape ----------------------------------------------------------


def test_seed_containerfile() -> None:
    cf = parse(SEED)
    assert cf == Containerfile(
        base=From(1, "quay.io/miabbott/rhel-for-edge:8.7"),
        steps=(
            Copy(2, ("etc",), "/etc"),
            Run(
                3,
                script="rpm-ostree install microshift &&     systemctl enable microshift &&"
                "     rm -rf /etc/{pki,rhsm,yum.repos.d} &&     ostree container commit",
            ),
        ),
        args={},
    )


def test_instruction_names_are_case_insensitive_and_blank_lines_and_comments_are_skipped() -> None:
    cf = parse("# a comment\n\nfrom base\n\n   # indented comment\nRun true\nworkDIR /x\n")
    assert cf.base == From(3, "base")
    assert cf.steps == (Run(6, script="true"), Workdir(7, "/x"))


def test_crlf_and_byte_order_mark() -> None:
    cf = parse("\ufeffFROM base\r\nRUN a \\\r\n  b\r\n")
    assert cf.steps == (Run(2, script="a   b"),)


# --- FROM ----------------------------------------------------------------------------------


def test_from_with_stage_name() -> None:
    assert parse("FROM registry.example/os:1 AS builder\n").base == From(1, "registry.example/os:1")
    assert parse("FROM base as b\n").base == From(1, "base")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("FROM --platform=linux/arm64 base\n", "--platform is not supported"),
        ("FROM a b\n", "expected FROM image [AS name]"),
        ("FROM a AS\n", "expected FROM image [AS name]"),
        ("FROM a FROM b\n", "expected FROM image [AS name]"),
        ("FROM a AS 9x\n", "invalid stage name"),
        ("FROM\n", "FROM requires at least one argument"),
        ("FROM $NOTHING\n", "invalid image name ''"),
    ],
)
def test_from_errors(text: str, message: str) -> None:
    [(line, found)] = errors(text)
    assert line == 1
    assert message in found


def test_second_from_is_an_error() -> None:
    found = errors("FROM a\nRUN x\nFROM b\nRUN y\n")
    assert found == [
        (3, "a second FROM: multi-stage builds are not supported (the base image is set on line 1)")
    ]


def test_no_from() -> None:
    assert errors("") == [(0, "no FROM instruction: a Containerfile starts with FROM image")]
    assert errors("ARG A=1\n# only a comment\n")[0][0] == 0


def test_instruction_before_from_is_reported_once() -> None:
    found = errors("ARG X=1\nRUN a\nRUN b\nFROM base\n")
    assert found == [(2, "RUN before FROM: only ARG may come before FROM")]


# --- ARG -----------------------------------------------------------------------------------


def test_arg_before_from_is_only_for_from() -> None:
    cf = parse("ARG TAG=8.7\nARG REPO=quay.io/os\nFROM ${REPO}:$TAG\nRUN echo $TAG\n")
    assert cf.base.image == "quay.io/os:8.7"
    assert cf.args == {}
    assert cf.steps == (Run(4, script="echo $TAG"),)  # not expanded; TAG not in the env


def test_arg_redeclared_after_from_takes_the_global_value() -> None:
    cf = parse("ARG TAG=8.7\nFROM base:$TAG\nARG TAG\nRUN echo\n")
    assert cf.args == {"TAG": "8.7"}
    assert cf.steps == (Run(4, script="echo", env=(("TAG", "8.7"),)),)


def test_build_args_override_defaults_before_and_after_from() -> None:
    text = "ARG TAG=1\nFROM base:$TAG\nARG TAG\nARG MODE=debug\nARG UNSET\nWORKDIR /$MODE\n"
    cf = parse(text, build_args={"TAG": "2", "MODE": "release"})
    assert cf.base.image == "base:2"
    assert cf.args == {"TAG": "2", "MODE": "release"}
    assert cf.steps == (Workdir(6, "/release"),)
    assert cf.unused_build_args == ()


def test_arg_without_value_is_unset() -> None:
    cf = parse("FROM base\nARG A\nWORKDIR /${A-unset}\n")
    assert cf.args == {}
    assert cf.steps == (Workdir(3, "/unset"),)


def test_arg_several_on_a_line_with_quotes_and_expansion() -> None:
    cf = parse('FROM base\nARG A=1\nARG B="two words" C=${A}0\n')
    assert cf.args == {"A": "1", "B": "two words", "C": "10"}


def test_unused_build_args_and_proxy_args() -> None:
    cf = parse(
        "FROM base\nARG USED\nRUN true\n",
        build_args={"USED": "1", "STRAY": "2", "https_proxy": "http://proxy:3128"},
    )
    assert cf.unused_build_args == ("STRAY",)
    (run,) = cf.steps
    assert isinstance(run, Run)
    assert dict(run.env) == {"USED": "1", "https_proxy": "http://proxy:3128"}


def test_arg_errors() -> None:
    assert error("ARG 1BAD=x\n") == "invalid ARG name '1BAD'"
    assert error("ARG\n") == "ARG requires at least one argument"


# --- ENV and LABEL -------------------------------------------------------------------------


def test_env_forms() -> None:
    text = 'FROM base\nENV K=V K2="v 2" K3=\'$lit\' K4=a\\ b\nENV LEGACY some value "quoted"\n'
    assert steps(text) == (
        Env(2, (("K", "V"), ("K2", "v 2"), ("K3", "$lit"), ("K4", "a b"))),
        Env(3, (("LEGACY", "some value quoted"),)),
    )


def test_env_values_on_one_line_see_the_previous_values() -> None:
    text = "FROM base\nENV A=old\nENV A=new B=$A\nENV C=$A\n"
    assert steps(text)[1:] == (
        Env(3, (("A", "new"), ("B", "old"))),
        Env(4, (("C", "new"),)),
    )


def test_env_overrides_arg_in_expansion_and_run_env() -> None:
    cf = parse("FROM base\nARG V=arg\nENV V=env\nARG V=again\nWORKDIR /$V\nRUN true\n")
    assert cf.steps[1] == Workdir(5, "/env")
    run = cf.steps[2]
    assert isinstance(run, Run)
    assert dict(run.env) == {"V": "env"}


def test_run_env_is_what_is_in_effect_at_that_step() -> None:
    cf = parse("FROM base\nARG A=1\nRUN one\nENV B=2\nRUN two\nARG C=3\nRUN three\n")
    envs = [dict(s.env) for s in cf.steps if isinstance(s, Run)]
    assert envs == [{"A": "1"}, {"A": "1", "B": "2"}, {"A": "1", "B": "2", "C": "3"}]


def test_base_env_is_visible_to_expansion_and_overrides_arg() -> None:
    cf = parse(
        "FROM base\nARG PATH=/arg\nENV PATH=/opt/bin:$PATH\nRUN true\n",
        base_env={"PATH": "/usr/bin", "LANG": "C"},
    )
    assert cf.steps[0] == Env(3, (("PATH", "/opt/bin:/usr/bin"),))
    run = cf.steps[1]
    assert isinstance(run, Run)
    assert dict(run.env) == {"PATH": "/opt/bin:/usr/bin", "LANG": "C"}


def test_label() -> None:
    text = (
        "FROM base\nARG V=1.0\n"
        'LABEL "com.example.vendor"="ACME Inc" version=$V description="a \\"quoted\\" word"\n'
        "LABEL legacy form value\n"
    )
    assert steps(text) == (
        Label(
            3,
            (
                ("com.example.vendor", "ACME Inc"),
                ("version", "1.0"),
                ("description", 'a "quoted" word'),
            ),
        ),
        Label(4, (("legacy", "form value"),)),
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ENV A\n", "ENV A has no value: use ENV A=value"),
        ("ENV A=1 B\n", "ENV expects name=value, got 'B'"),
        ("ENV =1\n", "ENV '=1' has an empty name"),
        ('LABEL a="b\n', 'unterminated double quote (")'),
        ("LABEL a='b\n", "unterminated single quote (')"),
        ("LABEL\n", "LABEL requires at least one argument"),
    ],
)
def test_env_and_label_errors(text: str, message: str) -> None:
    assert error(text) == message


# --- COPY and ADD --------------------------------------------------------------------------


def test_copy_forms() -> None:
    text = (
        "FROM base\nARG OWNER=core\n"
        "COPY --chown=$OWNER:wheel --chmod=0640 a b* dir/ /etc/app/\n"
        'COPY ["with space", "/dest dir"]\n'
        "COPY --chown=1000 x ./relative\n"
        "ADD files.tar.gz /\n"
    )
    assert steps(text) == (
        Copy(3, ("a", "b*", "dir/"), "/etc/app/", chown="core:wheel", chmod=0o640),
        Copy(4, ("with space",), "/dest dir"),
        Copy(5, ("x",), "./relative", chown="1000"),
        Copy(6, ("files.tar.gz",), "/", add=True),
    )


def test_copy_expands_variables_also_in_json_form() -> None:
    text = 'FROM base\nENV D=/opt\nCOPY ["$D-src", "${D}/"]\nCOPY "q $D" \'$D\' $D/\n'
    assert steps(text)[1:] == (Copy(3, ("/opt-src",), "/opt/"), Copy(4, ("q /opt", "$D"), "/opt/"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("COPY --from=builder /a /b\n", "COPY --from is not supported"),
        ("COPY --link a /b\n", "COPY --link is not supported"),
        ("COPY --bogus=1 a /b\n", "COPY: unknown flag --bogus"),
        ("COPY --chmod=999 a /b\n", "COPY --chmod=999: expected an octal mode"),
        ("COPY --chmod=u+x a /b\n", "COPY --chmod=u+x: expected an octal mode"),
        ("COPY --chown a /b\n", "COPY --chown needs a value"),
        ("COPY --chown=a:b:c a /b\n", "expected USER or USER:GROUP"),
        ("COPY a\n", "COPY requires at least one source and a destination"),
        ("COPY a b /dir\n", "needs a directory destination ending in / (got '/dir')"),
        ("ADD https://example.com/x.tar /\n", "ADD https://example.com/x.tar: URLs are not"),
        ("ADD git@github.com:a/b.git /src\n", "URLs are not supported"),
        ("COPY http://example.com/x /\n", "a source can't be a URL"),
        ("COPY $EMPTY /x\n", "COPY: a source is empty"),
        ("COPY <<EOF /etc/x\nbody\nEOF\n", "COPY <<EOF (an inline file) is not supported"),
        ("ADD --checksum=sha256:0 x /\n", "ADD --checksum is not supported"),
    ],
)
def test_copy_errors(text: str, message: str) -> None:
    assert message in error(text)


# --- RUN -----------------------------------------------------------------------------------


def test_run_shell_and_exec_forms() -> None:
    text = 'FROM base\nRUN echo "$HOME" ${X:-y}\nRUN ["/usr/bin/env", "A=$B", "true"]\n'
    assert steps(text) == (
        Run(2, script='echo "$HOME" ${X:-y}'),
        Run(3, argv=("/usr/bin/env", "A=$B", "true")),
    )


def test_run_text_that_is_not_json_is_shell_form() -> None:
    assert only("RUN [ -f /etc/os-release ] && echo ok\n") == Run(
        2, script="[ -f /etc/os-release ] && echo ok"
    )


def test_secret_mount_defaults() -> None:
    run = only("RUN --mount=type=secret,id=token cat /run/secrets/token\n")
    assert run == Run(
        2,
        script="cat /run/secrets/token",
        secrets=(SecretMount("token", "/run/secrets/token", False, 0o400, 0, 0),),
    )


def test_secret_mount_options_and_expansion() -> None:
    text = (
        "FROM base\nARG SID=pull-secret\nENV DIR=/etc/crio\n"
        "RUN --mount=type=secret,id=$SID,target=${DIR}/auth.json,required=true,mode=0440,"
        "uid=10,gid=20 \\\n    --mount=type=secret,target=/root/.netrc,required \\\n    make\n"
    )
    run = steps(text)[1]
    assert isinstance(run, Run)
    assert run.script == "make"
    assert run.secrets == (
        SecretMount("pull-secret", "/etc/crio/auth.json", True, 0o440, 10, 20),
        SecretMount(".netrc", "/root/.netrc", True, 0o400, 0, 0),
    )


def test_bind_mounts_and_network() -> None:
    run = only(
        "RUN --mount=type=bind,source=rpms,target=/tmp/rpms "
        "--mount=type=bind,src=conf,dst=/mnt/conf,rw --mount=target=/ctx,ro "
        "--network=none rpm -i /tmp/rpms/*.rpm\n"
    )
    assert run == Run(
        2,
        script="rpm -i /tmp/rpms/*.rpm",
        binds=(
            BindMount("rpms", "/tmp/rpms", True),
            BindMount("conf", "/mnt/conf", False),
            BindMount(".", "/ctx", True),
        ),
        network="none",
    )
    assert only("RUN --network=host curl x\n") == Run(2, script="curl x", network="host")
    assert only("RUN --network=default true\n") == Run(2, script="true")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("RUN --mount=type=cache,target=/var/cache x\n", "--mount=type=cache is not supported"),
        ("RUN --mount=type=secret x\n", "--mount=type=secret needs id= (or target=)"),
        ("RUN --mount=type=secret,id=a,env=A x\n", "unsupported option 'env'"),
        ("RUN --mount=type=secret,id=a,mode=9 x\n", "mode=9: expected an octal mode"),
        ("RUN --mount=type=secret,id=a,uid=-1 x\n", "uid=-1: expected a number"),
        ("RUN --mount=type=secret,id=a,required=maybe x\n", "required=maybe: expected true"),
        ("RUN --mount=type=secret,id=a,target=rel x\n", "must be an absolute path"),
        ("RUN --mount=type=bind,source=a x\n", "--mount=type=bind needs target="),
        ("RUN --mount=type=bind,from=img,target=/a x\n", "from= is not supported"),
        ("RUN --mount x\n", "RUN --mount needs a value"),
        ("RUN --network=bridge x\n", "RUN --network=bridge: expected none, host or default"),
        ("RUN --network=none --network=host x\n", "RUN --network is given twice"),
        ("RUN --security=insecure x\n", "RUN --security is not supported"),
        ("RUN --privileged x\n", "RUN: unknown flag --privileged"),
        ("RUN --=x y\n", "malformed flag '--=x'"),
        ("RUN --network=none\n", "RUN requires a command"),
        ("RUN []\n", "RUN [] has no command"),
        ("RUN\n", "RUN requires at least one argument"),
        ('RUN --mount="type=secret x\n', 'unterminated double quote (")'),
    ],
)
def test_run_errors(text: str, message: str) -> None:
    assert message in error(text)


def test_all_problems_of_one_run_line_are_reported() -> None:
    message = error("RUN --network=bogus --privileged\n")
    assert message == (
        "RUN --network=bogus: expected none, host or default; "
        "RUN: unknown flag --privileged; RUN requires a command"
    )


# --- WORKDIR, CMD, ENTRYPOINT --------------------------------------------------------------


def test_workdir() -> None:
    assert steps("FROM base\nENV APP=srv\nWORKDIR /opt/$APP dir\nWORKDIR sub\n")[1:] == (
        Workdir(3, "/opt/srv dir"),
        Workdir(4, "sub"),
    )
    assert error("WORKDIR $EMPTY\n") == "WORKDIR $EMPTY expands to an empty path"


def test_cmd_and_entrypoint() -> None:
    text = (
        'FROM base\nCMD ["/sbin/init", "--log-level=$X"]\nCMD echo $HOME\n'
        'ENTRYPOINT ["/usr/bin/tini", "--"]\nENTRYPOINT exec app\nCMD []\n'
    )
    assert steps(text) == (
        Cmd(2, ("/sbin/init", "--log-level=$X")),
        Cmd(3, ("/bin/sh", "-c", "echo $HOME")),
        Cmd(4, ("/usr/bin/tini", "--"), entrypoint=True),
        Cmd(5, ("/bin/sh", "-c", "exec app"), entrypoint=True),
        Cmd(6, ()),
    )


@pytest.mark.parametrize(
    "word",
    [
        "USER",
        "EXPOSE",
        "VOLUME",
        "HEALTHCHECK",
        "ONBUILD",
        "SHELL",
        "STOPSIGNAL",
        "MAINTAINER",
        "user",
    ],
)
def test_unsupported_instructions(word: str) -> None:
    assert error(f"{word} something\n").startswith(f"{word.upper()} is not supported")


def test_unknown_instruction() -> None:
    assert error("COPPY a /b\n") == "unknown instruction COPPY"


# --- continuations, comments and the escape directive --------------------------------------


def test_continuations_skip_comments_and_blank_lines() -> None:
    text = (
        "FROM base\nRUN a \\\n# a comment\n  # indented comment \\\n\n    && b \\\n  && c\nRUN d\n"
    )
    assert steps(text) == (Run(2, script="a     && b   && c"), Run(8, script="d"))


def test_continuation_with_trailing_whitespace_and_at_end_of_file() -> None:
    assert steps("FROM base\nRUN a \\  \n b \\") == (Run(2, script="a  b"),)


def test_comment_ending_in_backslash_does_not_continue() -> None:
    assert steps("FROM base\n# comment \\\nRUN a\n") == (Run(3, script="a"),)


def test_hash_inside_a_line_is_not_a_comment() -> None:
    assert only("RUN echo a # b\n") == Run(2, script="echo a # b")


def test_escape_directive_backtick() -> None:
    text = "# escape=`\nFROM base\nENV WIN=C:\\dir\nRUN echo a `\n    b\nCOPY `$lit C:\\x\\ /d/\n"
    assert steps(text) == (
        Env(3, (("WIN", "C:\\dir"),)),
        Run(4, script="echo a     b", env=(("WIN", "C:\\dir"),)),
        Copy(6, ("$lit", "C:\\x\\"), "/d/"),
    )


def test_directives_only_count_at_the_top() -> None:
    # after a blank line, "# escape=`" is just a comment: \ still continues lines
    assert steps("\n# escape=`\nFROM base\nRUN a \\\n b\n") == (Run(4, script="a  b"),)
    # an unknown directive ends the directives too
    assert steps("# foo=bar\n# escape=`\nFROM base\nRUN a \\\n b\n") == (Run(4, script="a  b"),)
    # syntax is accepted and ignored
    assert parse("# syntax=docker/dockerfile:1\n# escape=`\nFROM base\n").base.line == 3


def test_directive_errors() -> None:
    assert errors("# escape=x\nFROM base\n") == [(1, "invalid escape character 'x': use \\ or `")]
    assert errors("# escape=`\n# escape=`\nFROM base\n") == [
        (2, "the escape parser directive is given twice")
    ]


# --- expansion -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("$SET", "value"),
        ("${SET}", "value"),
        ("${SET}x", "valuex"),
        ("$SETx", ""),
        ("$UNSET", ""),
        ("${UNSET:-dflt}", "dflt"),
        ("${EMPTY:-dflt}", "dflt"),
        ("${EMPTY-dflt}", ""),
        ("${UNSET-dflt}", "dflt"),
        ("${SET:-dflt}", "value"),
        ("${SET:+alt}", "alt"),
        ("${EMPTY:+alt}", ""),
        ("${EMPTY+alt}", "alt"),
        ("${UNSET+alt}", ""),
        ("${UNSET:-$SET}", "value"),
        ("${UNSET:-${ALSO:-deep}}", "deep"),
        ("${UNSET:-a b}", "a b"),
        ("${SET:?must be set}", "value"),
        ("\\$SET", "$SET"),
        ("\\${SET}", "${SET}"),
        ("'$SET'", "$SET"),
        ('"$SET"', "value"),
        ('"\\$SET"', "$SET"),
        ('"a\\b"', "a\\b"),
        ("a\\b", "ab"),
        ("$", "$"),
        ("a$", "a$"),
        ("$-x", "$-x"),
        ("$1", ""),
        ("${UNSET:-'}'}", "}"),
        ("${UNSET:-\\}}", "}"),
    ],
)
def test_expansion(word: str, expected: str) -> None:
    text = f"FROM base\nENV SET=value EMPTY=\nWORKDIR /{word}/\n"
    assert steps(text)[1] == Workdir(3, f"/{expected}/")


@pytest.mark.parametrize(
    ("word", "message"),
    [
        ("${UNSET:?must be set}", "UNSET: must be set"),
        ("${EMPTY:?}", "EMPTY: parameter not set"),
        ("${UNSET?}", "UNSET: parameter not set"),
        ("${SET", "missing '}'"),
        ("${SET:-x", "missing '}'"),
        ("${}", "bad substitution"),
        ("${SET#pre}", "unsupported substitution ${SET#...}"),
        ("${SET/a/b}", "unsupported substitution ${SET/...}"),
        ("${SET:0:1}", "unsupported substitution ${SET:0...}"),
    ],
)
def test_expansion_errors(word: str, message: str) -> None:
    assert message in error(f"ENV SET=value EMPTY=\nWORKDIR {word}\n")


def test_empty_is_set_for_dash_without_colon() -> None:
    assert steps("FROM base\nENV E=\nENV X=${E-unset}Y\n")[1] == Env(3, (("X", "Y"),))


def test_run_text_is_not_expanded_but_mount_values_are() -> None:
    run = steps("FROM base\nARG ID=s1\nRUN --mount=type=secret,id=${ID} echo $ID ${ID:-x}\n")[0]
    assert run == Run(
        3,
        script="echo $ID ${ID:-x}",
        secrets=(SecretMount("s1", "/run/secrets/s1"),),
        env=(("ID", "s1"),),
    )


# --- heredocs ------------------------------------------------------------------------------


def test_heredoc_as_the_whole_command_is_the_script() -> None:
    text = "FROM base\nRUN <<EOF\nset -e\n# not a comment here\necho $HOME \\\nEOF\nRUN after\n"
    assert steps(text) == (
        Run(2, script="set -e\n# not a comment here\necho $HOME \\\n"),
        Run(7, script="after"),
    )


def test_heredoc_dash_strips_leading_tabs() -> None:
    text = "FROM base\nRUN <<-EOT\n\tif true; then\n\t\techo  x\n\tfi\n\tEOT\n"
    assert steps(text) == (Run(2, script="if true; then\necho  x\nfi\n"),)


def test_quoted_delimiter_heredoc() -> None:
    assert steps("FROM base\nRUN <<'EOF'\necho $A\nEOF\n") == (Run(2, script="echo $A\n"),)
    assert steps('FROM base\nRUN <<"E O"\nx\nE O\n') == (Run(2, script="x\n"),)


def test_heredoc_with_flags() -> None:
    run = only("RUN --network=none --mount=type=secret,id=k <<EOF\nuse k\nEOF\n")
    assert run == Run(
        2, script="use k\n", network="none", secrets=(SecretMount("k", "/run/secrets/k"),)
    )


def test_heredoc_fed_to_a_command_becomes_a_shell_script() -> None:
    text = "FROM base\nRUN python3 <<EOF\nprint($X)\nEOF\n"
    assert steps(text) == (Run(2, script="python3 <<EOF\nprint($X)\nEOF"),)


def test_quoted_heredoc_fed_to_a_command_keeps_its_quotes_for_the_shell() -> None:
    text = "FROM base\nRUN cat <<'EOF' > /etc/motd\nHello $USER\nEOF\n"
    assert steps(text) == (Run(2, script="cat <<'EOF' > /etc/motd\nHello $USER\nEOF"),)


def test_several_heredocs_on_one_line() -> None:
    text = (
        "FROM base\nRUN cat <<A > /a && cat <<-B > /b \\\n   && 3<<C true\n"
        "one\nA\n\ttwo\n\tB\nthree\nC\nRUN next\n"
    )
    assert steps(text) == (
        Run(
            2,
            script="cat <<A > /a && cat <<-B > /b    && 3<<C true\none\nA\n\ttwo\nB\nthree\nC",
        ),
        Run(10, script="next"),
    )


def test_heredoc_with_shebang_runs_the_interpreter_with_the_body_on_stdin() -> None:
    body = "#!/usr/bin/env python3\nprint('hi')\n"
    assert only(f"RUN <<EOF\n{body}EOF\n") == Run(2, argv=("/usr/bin/env", "python3"), stdin=body)
    assert only("RUN <<EOF\n#!/bin/bash -eu\ntrue\nEOF\n") == Run(
        2, argv=("/bin/bash", "-eu"), stdin="#!/bin/bash -eu\ntrue\n"
    )
    assert "names no interpreter" in error("RUN <<EOF\n#!\ntrue\nEOF\n")


@pytest.mark.parametrize(
    "line",
    [
        "RUN echo '<<EOF'",
        'RUN echo "<<EOF"',
        "RUN echo \\<<EOF",
        "RUN cat <<<EOF",
        "RUN cat << EOF",
        'RUN ["cat", "<<EOF"]',
    ],
)
def test_not_heredocs(line: str) -> None:
    cf = parse(f"FROM base\n{line}\nRUN next\n")
    assert len(cf.steps) == 2


def test_unterminated_heredoc() -> None:
    found = errors("FROM base\nRUN <<EOF\nsome\nlines\n EOF\nEOF \n")
    assert found == [(2, "unterminated here-document: no line with just EOF")]


def test_heredoc_terminator_needs_dash_for_tabs() -> None:
    found = errors("FROM base\nRUN <<EOF\nx\n\tEOF\n")
    assert found == [(2, "unterminated here-document: no line with just EOF")]


# --- error collection ----------------------------------------------------------------------


def test_three_different_errors_are_reported_together() -> None:
    text = (
        "FROM base\n"
        "RUN --mount=type=cache,target=/c \\\n"
        "    make\n"
        "COPY ok /ok\n"
        "HEALTHCHECK CMD true\n"
        "\n"
        "ENV BROKEN='unterminated\n"
        "RUN fine\n"
    )
    with pytest.raises(ContainerfileError) as info:
        parse(text, filename="images/Containerfile.test")
    e = info.value
    assert isinstance(e, UserError)
    assert e.errors == [
        (2, "--mount=type=cache is not supported (only type=secret and type=bind)"),
        (5, "HEALTHCHECK is not supported: an OS image has no health check"),
        (7, "unterminated single quote (')"),
    ]
    assert str(e).splitlines() == [
        "3 errors in images/Containerfile.test",
        "images/Containerfile.test:2: --mount=type=cache is not supported "
        "(only type=secret and type=bind)",
        "images/Containerfile.test:5: HEALTHCHECK is not supported: an OS image has no health "
        "check",
        "images/Containerfile.test:7: unterminated single quote (')",
    ]


def test_single_error_message_and_line_numbers_after_heredocs() -> None:
    text = "FROM base\nRUN <<EOF\na\nb\nEOF\nUSER x\n"
    with pytest.raises(ContainerfileError) as info:
        parse(text)
    assert str(info.value) == (
        "1 error in Containerfile\nContainerfile:6: USER is not supported: steps run as root; "
        "set ownership with COPY --chown or chown in RUN"
    )


def test_file_level_errors_come_last() -> None:
    found = errors("# escape=?\nUSER root\n")
    assert found == [
        (1, "invalid escape character '?': use \\ or `"),
        (
            2,
            "USER is not supported: steps run as root; set ownership with COPY --chown or chown "
            "in RUN",
        ),
        (0, "no FROM instruction: a Containerfile starts with FROM image"),
    ]
    with pytest.raises(ContainerfileError) as info:
        parse("")
    assert str(info.value).splitlines()[1] == (
        "Containerfile: no FROM instruction: a Containerfile starts with FROM image"
    )
