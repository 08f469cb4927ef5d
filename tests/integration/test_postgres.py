"""The whole friend-and-chat story on PostgreSQL, through a real server process.

Uses the PostgreSQL service on 127.0.0.1:5432 with a fresh database per run. When
`CI` is set a missing service is a failure, never a skip.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from emsg.client import Client
from emsg.crypto.keys import FAST_KDF_FOR_TESTS
from emsg.proto.errors import RecipientRefuses
from emsg.testing import ServerProcess

pytestmark = pytest.mark.postgres

DOMAIN = "pg.test"
PASSWORD = "correct horse battery"


@pytest.fixture
def server(database: str, tmp_path: Path) -> Iterator[ServerProcess]:
    config = tmp_path / "server.toml"
    config.write_text(f'database_url = "{database}"\n')
    with ServerProcess(DOMAIN, tmp_path / "server", config=config) as proc:
        yield proc


async def test_story_on_postgres(server: ServerProcess, tmp_path: Path) -> None:
    async def register(local: str) -> Client:
        return await Client.register(
            tmp_path / local, f"{local}#{DOMAIN}", PASSWORD, server.url, kdf=FAST_KDF_FOR_TESTS
        )

    alice, bob, carol = await register("alice"), await register("bob"), await register("carol")
    await alice.add_contact("bob#pg.test", "hi")
    await bob.accept_contact("alice#pg.test")
    await alice.send_text("bob#pg.test", "hello over postgres")
    await bob.send_text("alice#pg.test", "and back")
    assert [m.body for m in await bob.fetch()] == ["hello over postgres"]
    assert [m.body for m in await alice.fetch()] == ["and back"]

    await bob.set_stranger_policy("contacts-only")
    with pytest.raises(RecipientRefuses):
        await carol.send_text("bob#pg.test", "let me in")
    await bob.set_stranger_policy("requests")
    await carol.send_text("bob#pg.test", "held for you")
    assert await bob.fetch() == []
    assert [c.address for c in await bob.contact_requests()] == ["carol#pg.test"]
    await bob.accept_contact("carol#pg.test")
    assert [m.body for m in await bob.fetch()] == ["held for you"]

    # Restart on the same database: nothing acknowledged is lost.
    await alice.send_text("bob#pg.test", "across a restart")
    server.kill()
    server.start()
    assert [m.body for m in await bob.fetch()] == ["across a restart"]
    for client in (alice, bob, carol):
        await client.aclose()


async def test_an_expired_session_goes_on_as_the_same_device_on_postgres(
    database: str, tmp_path: Path
) -> None:
    config = tmp_path / "server.toml"
    config.write_text(f'database_url = "{database}"\ntoken_ttl = "2s"\n')
    with ServerProcess(DOMAIN, tmp_path / "server", config=config) as server:
        alice, bob = [
            await Client.register(
                tmp_path / local, f"{local}#{DOMAIN}", PASSWORD, server.url, kdf=FAST_KDF_FOR_TESTS
            )
            for local in ("alice", "bob")
        ]
        async with alice, bob:
            await alice.add_contact("bob#pg.test")
            await bob.accept_contact("alice#pg.test")
            device, first = alice.device_id, alice._api.token
            await asyncio.sleep(2.5)  # every token of both has expired
            await bob.send_text("alice#pg.test", "sent after the expiry")
            assert [m.body for m in await alice.fetch()] == ["sent after the expiry"]
            assert alice._api.token != first
            assert [d.device_id for d in await alice.devices()] == [device]
