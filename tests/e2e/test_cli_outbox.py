"""A send cut short is sent again by the next command, and arrives once: real CLI
processes, a real homeserver process, and a proxy between them that loses sends
the way networks do (`emsg.testing.proxy`)."""

from __future__ import annotations

import gc
import signal
import subprocess
import time
from pathlib import Path

from test_cli_story import ALICE, BOB, NETWORK, _argv, _env, one_error_line, run, run_json

from emsg.testing import ServerProcess
from emsg.testing.proxy import FaultyProxy


def friends(tmp_path: Path, server: ServerProcess, proxy: FaultyProxy) -> tuple[Path, Path]:
    """Alice talks to the server through the proxy; Bob directly."""
    alice, bob = tmp_path / "alice", tmp_path / "bob"
    run(alice, "account", "register", ALICE, "--server", proxy.url)
    run(bob, "account", "register", BOB, "--server", server.url)
    run(alice, "contact", "add", BOB)
    run(bob, "contact", "accept", ALICE)
    return alice, bob


def bodies(home: Path, *args: str) -> list[tuple[str, bool]]:
    return [(m["body"], m["pending"]) for m in run_json(home, "messages", *args)]


def test_a_send_killed_before_the_server_saw_it_goes_with_the_next_command(
    tmp_path: Path, server: ServerProcess, proxy: FaultyProxy
) -> None:
    alice, bob = friends(tmp_path, server, proxy)
    proxy.mode = "hold"
    sending = subprocess.Popen(
        _argv(alice, "send", BOB, "killed mid-send"), env=_env("correct horse battery staple"),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while proxy.sends_seen == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proxy.sends_seen == 1
    sending.send_signal(signal.SIGKILL)
    sending.wait(10)
    # The proxy's held connection is at EOF now: nothing of the proxy may be lost
    # to the garbage collector (a pending task once was, in CI only).
    time.sleep(0.2)
    gc.collect()

    # Kept, and shown as not confirmed; the server never had it.
    assert bodies(alice, "--no-fetch") == [("killed mid-send", True)]
    assert bodies(bob) == []
    proxy.mode = "pass"
    assert bodies(alice) == [("killed mid-send", False)]  # `messages` sent it again
    assert bodies(bob) == [("killed mid-send", False)]
    assert bodies(bob) == [("killed mid-send", False)]  # once


def test_a_send_whose_reply_was_lost_is_not_sent_twice(
    tmp_path: Path, server: ServerProcess, proxy: FaultyProxy
) -> None:
    alice, bob = friends(tmp_path, server, proxy)
    proxy.mode = "drop_reply"  # every attempt reaches the server; no reply comes back
    done = run(alice, "send", BOB, "reply lost", ok=False)
    assert done.returncode == NETWORK
    one_error_line(done, "not_confirmed")
    assert "sent again by your next" in done.stderr
    assert bodies(alice, "--no-fetch") == [("reply lost", True)]
    assert bodies(bob) == [("reply lost", False)]  # the server had it all along

    proxy.mode = "pass"
    run(alice, "send", BOB, "next one")  # repeats the pending send first
    assert bodies(alice, "--no-fetch") == [("reply lost", False), ("next one", False)]
    assert [body for body, _ in bodies(bob)] == ["reply lost", "next one"]
