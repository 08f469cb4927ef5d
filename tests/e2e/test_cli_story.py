"""The friend-and-chat story, end to end: a real homeserver process and the real `emsg`
command run as subprocesses, exactly as a person or a script would use them."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

from emsg.testing import ServerProcess, free_port

PASSWORD = "correct horse battery staple"
DOMAIN = "example.test"
ALICE, BOB, CAROL = f"alice#{DOMAIN}", f"bob#{DOMAIN}", f"carol#{DOMAIN}"

# exit codes, as documented in docs/cli.md
USAGE, AUTH, NOT_FOUND, REFUSED, NETWORK = 2, 3, 4, 5, 6


def _env(password: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMSG_")}
    env["PYTHONUNBUFFERED"] = "1"
    env["COLUMNS"] = "200"
    if password is not None:
        env["EMSG_PASSWORD"] = password
    return env


def _argv(home: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "emsg", "--home", str(home), *args]


def run(
    home: Path, *args: str, ok: bool = True, password: str | None = PASSWORD
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        _argv(home, *args),
        env=_env(password),
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    if ok:
        assert done.returncode == 0, f"{args} -> {done.returncode}\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr, done.stderr
    return done


def run_json(home: Path, *args: str) -> Any:
    return json.loads(run(home, *args, "--json").stdout)


def one_error_line(done: subprocess.CompletedProcess[str], code: str) -> None:
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"error: {code}: "), lines[0]


class Listener:
    """`emsg listen --json` in the background; its stdout lines arrive in a queue."""

    def __init__(self, home: Path) -> None:
        self.proc = subprocess.Popen(
            _argv(home, "listen", "--json"),
            env=_env(PASSWORD),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.errors: list[str] = []
        self.ready = threading.Event()
        assert self.proc.stdout is not None
        assert self.proc.stderr is not None
        self._readers = [
            threading.Thread(target=self._read_out, args=(self.proc.stdout,), daemon=True),
            threading.Thread(target=self._read_err, args=(self.proc.stderr,), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read_out(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.put(line)

    def _read_err(self, stream: IO[str]) -> None:
        for line in stream:
            self.errors.append(line)
            if line.startswith("listening as"):
                self.ready.set()

    def wait_ready(self, timeout: float = 60) -> None:
        assert self.ready.wait(timeout), f"listen did not start: {self.stop(signal.SIGTERM)}"

    def next_message(self, body: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        seen: list[str] = []
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                break
            seen.append(line)
            event = json.loads(line)  # every line is one complete JSON object
            if event.get("kind") == "message" and event.get("body") == body:
                return dict(event)
        stopped = self.stop(signal.SIGTERM)
        raise AssertionError(f"no message {body!r} within {timeout}s; saw {seen}; {stopped}")

    def wait_status(self, words: str, timeout: float) -> None:
        """Until a status line on stderr holds `words`."""
        deadline = time.monotonic() + timeout
        while not any(words in line for line in self.errors):
            if time.monotonic() > deadline:
                raise AssertionError(f"no status {words!r} within {timeout}s: {self.errors}")
            time.sleep(0.1)

    def stop(self, sig: signal.Signals) -> tuple[int, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        for reader in self._readers:
            reader.join(timeout=5)
        assert self.proc.stdout is not None
        assert self.proc.stderr is not None
        self.proc.stdout.close()
        self.proc.stderr.close()
        return code, "".join(self.errors)


def test_friends_chat_and_strangers_are_refused(server: ServerProcess, tmp_path: Path) -> None:
    alice, bob, carol = tmp_path / "alice", tmp_path / "bob", tmp_path / "carol"

    # registration, each with its own profile folder
    for home, address in ((alice, ALICE), (bob, BOB), (carol, CAROL)):
        run(home, "account", "register", address, "--server", server.url)
    me = run_json(alice, "account", "whoami")
    assert me["address"] == ALICE
    assert me["device_id"]

    # alice asks bob; bob sees the request and accepts
    run(alice, "contact", "add", BOB, "--message", "hi")
    requests = run_json(bob, "contact", "requests")
    assert any(
        r["address"] == ALICE and r["state"] == "incoming" and r["message"] == "hi"
        for r in requests
    ), requests
    run(bob, "contact", "accept", ALICE)
    contacts = run_json(alice, "contact", "list")
    assert {"address": BOB, "state": "friend"}.items() <= _by_address(contacts)[BOB].items()

    # a message each way
    run(alice, "send", BOB, "hello bob")
    got = run_json(bob, "messages")
    assert isinstance(got, list)
    hello = next(m for m in got if m["body"] == "hello bob")
    assert (hello["from"], hello["to"]) == (ALICE, BOB)
    assert hello["id"]
    assert isinstance(hello["sent_at"], int)
    run(bob, "send", ALICE, "hello alice")
    thread = run_json(alice, "messages", "--with", BOB)
    assert [(m["from"], m["to"], m["body"]) for m in thread] == [
        (ALICE, BOB, "hello bob"),
        (BOB, ALICE, "hello alice"),
    ]
    human = run(bob, "messages", "--with", ALICE).stdout
    assert "hello bob" in human
    assert "hello alice" in human

    # live: a listener gets what is sent after it started, one JSON line per event
    listener = Listener(bob)
    try:
        listener.wait_ready()
        run(alice, "send", BOB, "are you there?")
        event = listener.next_message("are you there?", timeout=20)
        assert (event["from"], event["to"]) == (ALICE, BOB)
    finally:
        code, stderr = listener.stop(signal.SIGTERM)
    assert code == 0, stderr
    assert "Traceback" not in stderr

    # strangers: contacts-only refuses carol with a one-line error
    run(bob, "policy", "strangers", "contacts-only")
    assert run_json(bob, "policy", "strangers") == {"strangers": "contacts-only"}
    refused = run(carol, "send", BOB, "hi stranger", ok=False)
    assert refused.returncode == REFUSED, refused.stderr
    one_error_line(refused, "recipient_refuses")

    # blocking: even with an open policy, carol stays refused
    run(bob, "contact", "block", CAROL)
    run(bob, "policy", "strangers", "open")
    blocked = _by_address(run_json(bob, "contact", "list"))
    assert blocked[CAROL]["state"] == "blocked"
    assert blocked[ALICE]["state"] == "friend"
    again = run(carol, "send", BOB, "let me in", ok=False)
    assert again.returncode == REFUSED, again.stderr
    one_error_line(again, "recipient_refuses")
    bobs = run_json(bob, "messages")
    assert not any(m["from"] == CAROL for m in bobs)

    # the server never saw clear text
    for path in (tmp_path / "srv").rglob("*"):
        if path.is_file():
            assert b"hello bob" not in path.read_bytes(), path


def test_ctrl_c_stops_listen_with_130(server: ServerProcess, tmp_path: Path) -> None:
    bob = tmp_path / "bob"
    run(bob, "account", "register", BOB, "--server", server.url)
    listener = Listener(bob)
    listener.wait_ready()
    time.sleep(0.5)  # let it connect: this test is about the signal, not delivery
    code, stderr = listener.stop(signal.SIGINT)
    assert code == 130, stderr
    assert "Traceback" not in stderr


def test_listen_says_when_the_homeserver_is_gone_and_goes_on_when_it_is_back(
    tmp_path: Path,
) -> None:
    alice, bob = tmp_path / "alice", tmp_path / "bob"
    port = free_port()
    server = ServerProcess(domain=DOMAIN, data=tmp_path / "srv", port=port).start()
    listener: Listener | None = None
    try:
        run(alice, "account", "register", ALICE, "--server", server.url)
        run(bob, "account", "register", BOB, "--server", server.url)
        listener = Listener(bob)
        listener.wait_ready()
        # "listening as" comes before the stream is up: a message through it proves
        # it is, so that stopping the server now loses a live stream.
        run(alice, "send", BOB, "before the stop")
        listener.next_message("before the stop", timeout=30)
        server.stop()
        listener.wait_status("lost the homeserver", timeout=30)
        listener.wait_status("cannot reach the homeserver", timeout=30)
        server = ServerProcess(domain=DOMAIN, data=tmp_path / "srv", port=port).start()
        listener.wait_status("connected to the homeserver", timeout=60)
        run(alice, "send", BOB, "after the restart")
        listener.next_message("after the restart", timeout=30)
        code, stderr = listener.stop(signal.SIGTERM)
        assert code == 0, stderr
        assert "Traceback" not in stderr
    finally:
        if listener is not None:
            listener.stop(signal.SIGTERM)
        server.stop()


def test_a_message_cannot_drive_the_recipients_terminal(
    server: ServerProcess, tmp_path: Path
) -> None:
    alice, bob = tmp_path / "alice", tmp_path / "bob"
    run(alice, "account", "register", ALICE, "--server", server.url)
    run(bob, "account", "register", BOB, "--server", server.url)
    nasty = "clear\x1b[2J title\x1b]0;pwned\x07 csi\u009b1m flip\u202etxt.exe"
    listener = Listener(bob)
    try:
        listener.wait_ready()
        run(alice, "send", BOB, nasty)
        assert listener.next_message(nasty, timeout=30)["body"] == nasty  # JSON: exact
    finally:
        listener.stop(signal.SIGTERM)
    shown = run(bob, "messages", "--with", ALICE).stdout
    for raw in ("\x1b", "\x07", "\u009b", "\u202e"):
        assert raw not in shown
    assert "clear\\x1b[2J title\\x1b]0;pwned\\x07 csi\\x9b1m flip\\u202etxt.exe" in shown
    listed = run(bob, "messages", "--json").stdout
    assert "\x1b" not in listed
    assert "\\u001b[2J" in listed
    assert [m["body"] for m in json.loads(listed)] == [nasty]


def test_expected_failures_are_one_line_with_their_exit_code(
    server: ServerProcess, tmp_path: Path
) -> None:
    alice = tmp_path / "alice"
    run(alice, "account", "register", ALICE, "--server", server.url)

    unknown = run(alice, "send", f"nobody#{DOMAIN}", "hello?", ok=False)
    assert unknown.returncode == NOT_FOUND, unknown.stderr
    assert unknown.stderr.startswith("error: ")
    assert len(unknown.stderr.strip().splitlines()) == 1

    wrong = run(alice, "contact", "list", ok=False, password="not the password")
    assert wrong.returncode == AUTH, wrong.stderr
    one_error_line(wrong, "wrong_passphrase")

    nowhere = f"http://127.0.0.1:{free_port()}"
    dave = tmp_path / "dave"
    offline = run(dave, "account", "register", f"dave#{DOMAIN}", "--server", nowhere, ok=False)
    assert offline.returncode == NETWORK, offline.stderr
    one_error_line(offline, "network")

    run(alice, "account", "logout")
    after = run(alice, "account", "whoami", ok=False)
    assert after.returncode == AUTH, after.stderr
    assert len(after.stderr.strip().splitlines()) == 1
    # Every command says it the same way, sends included (they asked the server
    # with no token and printed its "missing bearer token").
    for args in (("send", BOB, "hi"), ("contact", "add", BOB), ("messages",)):
        refused = run(alice, *args, ok=False)
        assert refused.returncode == AUTH, refused.stderr
        one_error_line(refused, "not_logged_in")


def test_values_no_request_may_carry_are_refused_before_anything_is_sent(
    server: ServerProcess, tmp_path: Path
) -> None:
    alice, bob = tmp_path / "alice", tmp_path / "bob"

    # A password under 8 characters: named, never shown; no profile, no account.
    short = run(alice, "account", "register", ALICE, "--server", server.url, ok=False,
                password="Sq7shrt")  # fmt: skip
    assert short.returncode == USAGE, short.stderr
    one_error_line(short, "invalid_input")
    assert "password" in short.stderr
    assert "Sq7shrt" not in short.stderr + short.stdout
    assert not list(alice.glob("*.sqlite3"))
    run(alice, "account", "register", ALICE, "--server", server.url)  # the address is free
    run(bob, "account", "register", BOB, "--server", server.url)

    # A contact request's message over 500 characters.
    long_note = run(alice, "contact", "add", BOB, "--message", "m" * 501, ok=False)
    assert long_note.returncode == USAGE, long_note.stderr
    one_error_line(long_note, "invalid_input")
    assert "message" in long_note.stderr
    assert run_json(bob, "contact", "requests") == []

    # A text over 16,384 characters, and one that is not valid Unicode (from stdin).
    too_long = run(alice, "send", BOB, "Sq" + "z" * 16 * 1024, ok=False)
    assert too_long.returncode == USAGE, too_long.stderr
    one_error_line(too_long, "invalid_input")
    assert "16384" in too_long.stderr
    assert "zzzz" not in too_long.stderr
    not_text = subprocess.run(
        _argv(alice, "send", BOB, "-"), env=_env(PASSWORD), input=b"bad \xff bytes",
        capture_output=True, timeout=120,
    )  # fmt: skip
    assert not_text.returncode == USAGE, not_text.stderr
    assert not_text.stderr.decode().startswith("error: invalid_input: body: ")
    assert b"Traceback" not in not_text.stderr

    # Nothing of it was stored or sent.
    assert run_json(alice, "messages", "--no-fetch") == []
    assert run_json(bob, "messages") == []
    run(alice, "send", BOB, "z" * 16 * 1024)  # the longest text goes through
    assert [len(m["body"]) for m in run_json(bob, "messages")] == [16 * 1024]


def _by_address(entries: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {entry["address"]: entry for entry in entries}
