"""A person who comes back after their session expired just goes on (protocol.md §4):
real CLI processes against a homeserver process whose tokens live two seconds."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_cli_story import ALICE, BOB, DOMAIN, run, run_json

from emsg.testing import ServerProcess

TTL_S = 2


@pytest.fixture
def short_lived(tmp_path: Path) -> Iterator[ServerProcess]:
    config = tmp_path / "server.toml"
    config.write_text(f'token_ttl = "{TTL_S}s"\n')
    with ServerProcess(domain=DOMAIN, data=tmp_path / "srv", config=config) as proc:
        yield proc


def devices(home: Path) -> list[str]:
    return [d["device_id"] for d in run_json(home, "device", "list")]


def test_commands_after_the_session_expired_go_on_as_the_same_device(
    short_lived: ServerProcess, tmp_path: Path
) -> None:
    alice, bob = tmp_path / "alice", tmp_path / "bob"
    for home, address in ((alice, ALICE), (bob, BOB)):
        run(home, "account", "register", address, "--server", short_lived.url)
    run(alice, "contact", "add", BOB)
    run(bob, "contact", "accept", ALICE)
    device = run_json(alice, "account", "whoami")["device_id"]

    time.sleep(TTL_S + 0.5)  # every token of both is expired now
    run(bob, "send", ALICE, "sent after bob's session expired")
    time.sleep(TTL_S + 0.5)
    got = run_json(alice, "messages", "--with", BOB)
    assert [m["body"] for m in got] == ["sent after bob's session expired"]
    assert run_json(alice, "account", "whoami")["device_id"] == device
    assert devices(alice) == [device]

    # `account login` in the folder logs the same device in again, too.
    time.sleep(TTL_S + 0.5)
    run(bob, "send", ALICE, "queued while alice was away")
    again = run_json(alice, "account", "login", ALICE)
    assert (again["device_id"], again["state"]) == (device, "approved")
    bodies = [m["body"] for m in run_json(alice, "messages", "--with", BOB)]
    assert bodies[-1] == "queued while alice was away"
    assert devices(alice) == [device]
