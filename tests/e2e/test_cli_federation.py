"""The friend-and-chat story across two domains, with the same CLI as on one server.

Two real homeservers on loopback speak TLS (certificates from a trustme CA) and
federate; each CLI talks only to its own server and trusts the private CA through
`SSL_CERT_FILE`. A stranger refused by the recipient's policy sees the bounce.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from emsg.testing.tls import TlsServer, federation

PASSWORD = "correct horse battery staple"


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[tuple[TlsServer, TlsServer]]:
    alpha, beta = federation(tmp_path / "fed", ["alpha.test", "beta.test"])
    alpha.start()
    beta.start()
    try:
        yield alpha, beta
    finally:
        alpha.stop()
        beta.stop()


def cli(home: Path, ca: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EMSG_PASSWORD": PASSWORD, "SSL_CERT_FILE": str(ca), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "emsg", "--home", str(home), *args],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def eventually(check: Callable[[], Any], timeout: float = 30.0) -> Any:
    """Federation is asynchronous: poll until the remote side has it."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.3)


def test_friends_and_messages_across_domains(
    servers: tuple[TlsServer, TlsServer], tmp_path: Path
) -> None:
    alpha, beta = servers
    ca = alpha.pki.ca_file
    alice, bob, carol = tmp_path / "alice", tmp_path / "bob", tmp_path / "carol"
    ok(cli(alice, ca, "account", "register", "alice#alpha.test", "--server", alpha.url))
    ok(cli(bob, ca, "account", "register", "bob#beta.test", "--server", beta.url))
    ok(cli(carol, ca, "account", "register", "carol#alpha.test", "--server", alpha.url))

    ok(cli(alice, ca, "contact", "add", "bob#beta.test", "--message", "hi from alpha"))

    def requests() -> list[dict[str, Any]]:
        return list(json.loads(ok(cli(bob, ca, "contact", "requests", "--json"))))

    assert [r["address"] for r in eventually(requests)] == ["alice#alpha.test"]
    ok(cli(bob, ca, "contact", "accept", "alice#alpha.test"))

    def alice_friends() -> bool:
        contacts = json.loads(ok(cli(alice, ca, "contact", "list", "--json")))
        return any(c["address"] == "bob#beta.test" and c["state"] == "friend" for c in contacts)

    assert eventually(alice_friends)

    ok(cli(alice, ca, "send", "bob#beta.test", "hello across domains"))

    def bodies(home: Path, peer: str) -> list[str]:
        out = ok(cli(home, ca, "messages", "--with", peer, "--json"))
        return [m["body"] for m in json.loads(out) if m["direction"] == "in"]

    assert eventually(lambda: bodies(bob, "alice#alpha.test")) == ["hello across domains"]
    ok(cli(bob, ca, "send", "alice#alpha.test", "and back again"))
    assert eventually(lambda: bodies(alice, "bob#beta.test")) == ["and back again"]

    # Bob's policy applies to a stranger on another domain; she learns it bounced.
    ok(cli(bob, ca, "policy", "strangers", "contacts-only"))
    ok(cli(carol, ca, "send", "bob#beta.test", "let me in"))

    def carol_bounce() -> str | None:
        out = ok(cli(carol, ca, "messages", "--with", "bob#beta.test", "--json"))
        return next((m["bounced"] for m in json.loads(out) if m["bounced"]), None)

    assert eventually(carol_bounce) == "recipient_refuses"
    assert bodies(bob, "carol#alpha.test") == []
    table = ok(cli(carol, ca, "messages", "--with", "bob#beta.test"))
    assert "NOT DELIVERED" in table

    # Neither server's data folder holds a message text in clear.
    for server in servers:
        for path in server.data.rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                assert b"hello across domains" not in data
                assert b"and back again" not in data
