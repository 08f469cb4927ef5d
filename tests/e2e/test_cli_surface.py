"""The CLI's surface without a server: help, exit codes, one-line errors, no secrets in argv.

These run the real `emsg` typer app in-process (typer's CliRunner); the story with a
real homeserver is in `test_cli_story.py`.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import typer
from hypothesis import given
from hypothesis import strategies as st
from typer.main import get_command
from typer.testing import CliRunner

from emsg.cli.app import app
from emsg.cli.context import guarded
from emsg.cli.exits import MEANING, Exit, exit_for
from emsg.cli.output import json_line, print_json, printable
from emsg.proto import errors

DOCS = Path(__file__).resolve().parents[2] / "docs" / "cli.md"
SECRET_WORDS = ("pass", "secret", "token", "key")


def _commands(
    command: object, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], object]]:
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _commands(sub, (*path, name))


ROOT = get_command(app)
ALL_COMMANDS = [path for path, _ in _commands(ROOT)]
PROFILE_COMMANDS = [
    ["account", "whoami"],
    ["account", "logout"],
    ["contact", "add", "bob#example.test"],
    ["contact", "requests"],
    ["contact", "accept", "bob#example.test"],
    ["contact", "decline", "bob#example.test"],
    ["contact", "list", "--json"],
    ["contact", "block", "bob#example.test"],
    ["contact", "unblock", "bob#example.test"],
    ["policy", "strangers"],
    ["policy", "strangers", "contacts-only"],
    ["send", "bob#example.test", "hello"],
    ["messages", "--json"],
    ["listen", "--json"],
    ["device", "list", "--json"],
    ["device", "approve", "ABCD-EFGH-IJKL-MNOP"],
    ["device", "revoke", "DEVICE"],
    ["account", "recover"],
    ["account", "recovery-key"],
    ["verify", "bob#example.test"],
    ["contact", "trust", "bob#example.test"],
]


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.delenv("EMSG_PASSWORD", raising=False)
    monkeypatch.delenv("EMSG_HOME", raising=False)
    monkeypatch.delenv("EMSG_DEBUG", raising=False)
    return CliRunner()


def test_the_contract_commands_exist() -> None:
    expected = {
        ("account", "register"), ("account", "login"), ("account", "whoami"),
        ("account", "logout"), ("contact", "add"), ("contact", "requests"),
        ("contact", "accept"), ("contact", "decline"), ("contact", "list"),
        ("contact", "block"), ("contact", "unblock"), ("policy", "strangers"),
        ("send",), ("messages",), ("listen",),
        ("device", "list"), ("device", "approve"), ("device", "revoke"),
        ("account", "recovery-key"), ("verify",), ("contact", "trust"),
    }  # fmt: skip
    assert expected <= set(ALL_COMMANDS)


@pytest.mark.parametrize("path", ALL_COMMANDS, ids=lambda p: " ".join(p) or "emsg")
def test_every_command_has_help(runner: CliRunner, path: tuple[str, ...]) -> None:
    result = runner.invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.stdout
    assert "Traceback" not in result.output


def test_root_help_documents_home_password_and_exit_codes(runner: CliRunner) -> None:
    text = runner.invoke(app, ["--help"]).stdout
    assert "--home" in text
    assert "EMSG_HOME" in text
    assert "EMSG_PASSWORD" in text
    for code in MEANING:
        assert re.search(rf"^\s*{int(code)}\s+\S", text, re.MULTILINE), code


def test_no_option_or_argument_takes_a_secret() -> None:
    for path, command in _commands(ROOT):
        for param in getattr(command, "params", []):
            names = " ".join([param.name or "", *getattr(param, "opts", [])]).lower()
            assert not any(word in names for word in SECRET_WORDS), (path, names)


@pytest.mark.parametrize("flag", ["--password", "--passphrase", "-p"])
def test_a_password_option_is_a_usage_error(runner: CliRunner, tmp_path: Path, flag: str) -> None:
    args = ["--home", str(tmp_path), "account", "register", "alice#example.test", flag, "x" * 12]
    result = runner.invoke(app, args)
    assert result.exit_code == Exit.USAGE
    assert not (tmp_path / "alice").exists()


@pytest.mark.parametrize("args", PROFILE_COMMANDS, ids=" ".join)
def test_missing_profile_is_one_line_and_exit_7(
    runner: CliRunner, tmp_path: Path, args: list[str]
) -> None:
    home = tmp_path / "nobody"
    result = runner.invoke(app, ["--home", str(home), *args], input="never read\n")
    assert result.exit_code == Exit.NO_PROFILE, result.output
    assert result.stdout == ""  # and so no password prompt either
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: no_profile: ")
    assert str(home) in lines[0]
    assert not home.exists()


def test_home_comes_from_emsg_home(runner: CliRunner, tmp_path: Path) -> None:
    home = tmp_path / "from-env"
    result = runner.invoke(app, ["contact", "list"], env={"EMSG_HOME": str(home)})
    assert result.exit_code == Exit.NO_PROFILE
    assert str(home) in result.stderr


def test_an_empty_home_folder_is_no_profile(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(app, ["--home", str(tmp_path), "messages"])
    assert result.exit_code == Exit.NO_PROFILE


@pytest.mark.parametrize(
    "args",
    [
        ["contact", "add", "not an address"],
        ["contact", "accept", "bob#"],
        ["send", "bob", "hello"],
        ["messages", "--with", "a#b#c"],
        ["account", "register", "alice#bad domain"],
    ],
    ids=" ".join,
)
def test_a_malformed_address_is_one_line_and_exit_2(
    runner: CliRunner, tmp_path: Path, args: list[str]
) -> None:
    result = runner.invoke(app, ["--home", str(tmp_path), *args])
    assert result.exit_code == Exit.USAGE
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: invalid_address: ")


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("im.example.org", "must be http:// or https:// and a host"),
        ("ftp://im.example.org", "must be http:// or https:// and a host"),
        ("https://", "must be http:// or https:// and a host"),
        ("http://127.0.0.1:99999", "is not valid (Port out of range 0-65535)"),
        ("http://[::1", "is not valid (Invalid IPv6 URL)"),
        ("https://im.example.org/?x=1", "takes no query or fragment"),
    ],
)
@pytest.mark.parametrize("command", ["register", "login"])
def test_a_malformed_server_url_is_exit_2_before_anything(
    runner: CliRunner, tmp_path: Path, command: str, url: str, why: str
) -> None:
    home = tmp_path / "alice"
    args = ["--home", str(home), "account", command, "alice#example.test", "--server", url]
    result = runner.invoke(app, args, env={"EMSG_PASSWORD": "correct horse battery"})
    assert result.exit_code == Exit.USAGE, result.output
    assert result.stderr.strip().splitlines() == [
        f"error: invalid_input: the server URL {why}; for example https://im.example.org"
    ]
    assert not home.exists() or not any(home.iterdir())


def _profile_with_a_damaged_page(path: Path) -> None:
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE profile (k TEXT PRIMARY KEY, v BLOB NOT NULL)")
        db.execute("INSERT INTO profile VALUES ('verifier', x'00')")
        db.commit()
        roots = [r for (r,) in db.execute("SELECT rootpage FROM sqlite_master WHERE rootpage")]
    with path.open("r+b") as fh:
        for root in roots:  # the table's and its key's first pages
            fh.seek((root - 1) * 4096)
            fh.write(b"\xff" * 4096)


@pytest.mark.parametrize(
    ("damage", "why"),
    [
        (lambda path: path.write_bytes(b"garbage, not a database"), "file is not a database"),
        (_profile_with_a_damaged_page, "database disk image is malformed"),
    ],
)
def test_a_damaged_profile_is_one_line_with_what_to_do(
    runner: CliRunner, tmp_path: Path, damage: Callable[[Path], object], why: str
) -> None:
    damage(tmp_path / "emsg.sqlite3")
    args = ["--home", str(tmp_path), "contact", "list"]
    result = runner.invoke(app, args, env={"EMSG_PASSWORD": "correct horse battery"})
    assert result.exit_code == Exit.ERROR
    assert result.stderr.strip().splitlines() == [
        f"error: profile_damaged: the profile database is damaged ({why}): restore the"
        " profile folder from a backup, or log in again in a new folder (`emsg account login`)"
    ]


def test_no_password_without_terminal_or_env_is_exit_3(runner: CliRunner, tmp_path: Path) -> None:
    args = ["--home", str(tmp_path / "a"), "account", "register", "alice#example.test"]
    result = runner.invoke(app, args, input="")
    assert result.exit_code == Exit.AUTH
    assert result.stderr.strip().splitlines() == [
        "error: no_password: no password: set EMSG_PASSWORD or use a terminal"
    ]


# --- the one place where errors become exit codes --------------------------------------


def _run_guarded(runner: CliRunner, exc: BaseException) -> tuple[int, str, str]:
    probe = typer.Typer()

    @probe.command()
    @guarded
    def fail() -> None:
        raise exc

    result = runner.invoke(probe, [])
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize(
    ("exc", "code", "line"),
    [
        (errors.UnknownRecipient("no account bob#x.test"), Exit.NOT_FOUND,
         "error: unknown_recipient: no account bob#x.test"),
        (errors.RecipientRefuses("refused"), Exit.REFUSED, "error: recipient_refuses: refused"),
        (errors.Unauthorized("bad login"), Exit.AUTH, "error: unauthorized: bad login"),
        (errors.TokenExpired(), Exit.AUTH, "error: token_expired: token expired"),
        (errors.AddressTaken("taken"), Exit.CONFLICT, "error: address_taken: taken"),
        (errors.InternalError("boom\non two lines"), Exit.ERROR,
         "error: internal: boom on two lines"),
        (httpx.ConnectError("connection refused"), Exit.NETWORK,
         "error: network: cannot reach the homeserver: connection refused"),
        (ExceptionGroup("tg", [errors.NoRequest("none")]), Exit.NOT_FOUND,
         "error: no_request: none"),
    ],
)  # fmt: skip
def test_errors_map_to_one_line_and_exit_code(
    runner: CliRunner, exc: BaseException, code: Exit, line: str
) -> None:
    exit_code, stdout, stderr = _run_guarded(runner, exc)
    assert (exit_code, stdout, stderr.strip().splitlines()) == (code, "", [line])


def test_a_bug_is_one_line_without_traceback(runner: CliRunner) -> None:
    exit_code, _, stderr = _run_guarded(runner, RuntimeError("oops"))
    assert exit_code == Exit.ERROR
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines() == [
        "error: internal: unexpected RuntimeError: oops (set EMSG_DEBUG=1 for details)"
    ]


def test_ctrl_c_exits_130_quietly(runner: CliRunner) -> None:
    exit_code, stdout, stderr = _run_guarded(runner, KeyboardInterrupt())
    assert (exit_code, stdout, stderr) == (Exit.INTERRUPTED, "", "")


def test_client_errors_are_told_apart_by_kind() -> None:
    class NoProfile(errors.EmsgError):  # shaped like emsg.client's
        code = errors.ErrorCode.NOT_FOUND
        kind = "no_profile"

    class WrongPassphrase(errors.EmsgError):
        code = errors.ErrorCode.UNAUTHORIZED
        kind = "wrong_passphrase"

    assert exit_for(NoProfile()) is Exit.NO_PROFILE
    assert exit_for(WrongPassphrase()) is Exit.AUTH


def test_every_wire_error_has_an_exit_code() -> None:
    for code in errors.ErrorCode:
        error = errors.error_from_wire(400, {"error": {"code": code.value, "message": "m"}})
        assert exit_for(error) in {Exit.ERROR, *MEANING}


def test_docs_list_the_same_exit_codes() -> None:
    text = DOCS.read_text()
    documented = {int(n) for n in re.findall(r"^\|\s*`?(\d+)`?\s*\|", text, re.MULTILINE)}
    assert documented == {int(code) for code in MEANING}


# --- other people's text never drives the terminal ------------------------------------

UNSAFE = {*map(chr, range(0x00, 0x09)), *map(chr, range(0x0B, 0x20)), *map(chr, range(0x7F, 0xA0)),
          "\u061c", "\u200e", "\u200f", *map(chr, range(0x202A, 0x202F)),
          *map(chr, range(0x2066, 0x206A))}  # fmt: skip


@given(st.text())
def test_printable_leaves_nothing_that_drives_a_terminal(text: str) -> None:
    shown = printable(text)
    assert not UNSAFE & set(shown)
    if not UNSAFE & set(text):
        assert shown == text


@given(st.dictionaries(st.text(), st.text() | st.integers()))
def test_json_output_is_the_same_value_with_nothing_raw_for_a_terminal(
    data: dict[str, object],
) -> None:
    for write in (print_json, json_line):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            write(data)
        assert json.loads(out.getvalue()) == data
        assert not UNSAFE & set(out.getvalue())
