"""A registration whose reply was lost (or whose process died before it wrote the
profile) is finished by registering again, against a real homeserver process.

The lost reply is produced as it happens: the account is created at the server and
the client never learns its session.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from emsg.client import Client
from emsg.crypto.keys import FAST_KDF_FOR_TESTS, login_key
from emsg.proto.errors import AddressTaken
from emsg.testing import ServerProcess

DOMAIN = "r.example"
PASSWORD = "correct horse battery"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    with ServerProcess(DOMAIN, tmp_path / "server") as proc:
        yield proc


def created_without_the_reply(server: ServerProcess, address: str) -> str:
    """The account as the server made it before its reply was lost; its device id."""
    secret = login_key(PASSWORD, address)
    reply = httpx.post(
        f"{server.url}/_emsg/v1/accounts", json={"address": address, "password": secret}
    )
    assert reply.status_code == 201
    return str(reply.json()["device_id"])


async def register(server: ServerProcess, home: Path, address: str, password: str) -> Client:
    return await Client.register(home, address, password, server.url, kdf=FAST_KDF_FOR_TESTS)


async def test_registering_again_finishes_a_registration_whose_reply_was_lost(
    server: ServerProcess, tmp_path: Path
) -> None:
    lost = created_without_the_reply(server, f"alice#{DOMAIN}")
    alice = await register(server, tmp_path / "alice", f"alice#{DOMAIN}", PASSWORD)
    assert alice.recovery_key is not None
    states = {d.device_id: d.state for d in await alice.devices()}
    # The device of the lost reply never had keys: it is ended, not left pending.
    assert states == {alice.device_id: "approved", lost: "revoked"}

    bob = await register(server, tmp_path / "bob", f"bob#{DOMAIN}", PASSWORD)
    await bob.add_contact(str(alice.address))
    await alice.accept_contact(str(bob.address))
    await bob.send_text(str(alice.address), "you are there after all")
    assert [m.body for m in await alice.fetch()] == ["you are there after all"]
    for client in (alice, bob):
        await client.aclose()


async def test_an_address_in_use_or_of_another_password_stays_taken(
    server: ServerProcess, tmp_path: Path
) -> None:
    created_without_the_reply(server, f"carol#{DOMAIN}")
    with pytest.raises(AddressTaken):
        await register(server, tmp_path / "mallory", f"carol#{DOMAIN}", "another password")
    assert not (tmp_path / "mallory").exists()

    dave = await register(server, tmp_path / "dave", f"dave#{DOMAIN}", PASSWORD)
    with pytest.raises(AddressTaken, match="in use"):
        await register(server, tmp_path / "dave-again", f"dave#{DOMAIN}", PASSWORD)
    assert not (tmp_path / "dave-again").exists()
    # The session the attempt opened to look was closed again: no device was added.
    assert [d.state for d in await dave.devices()].count("pending") == 0
    await dave.aclose()
