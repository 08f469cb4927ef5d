"""A device whose token expired goes on as the same device (protocol.md §4).

The server is a real process whose tokens live two seconds, so every client here
outlives its token many times; what each test checks is that nothing shows it:
no error, no new device, nothing queued for the old token lost.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from emsg.client import Client, ClientEvent
from emsg.crypto.keys import FAST_KDF_FOR_TESTS
from emsg.proto.errors import TokenExpired
from emsg.testing import ServerProcess

DOMAIN = "renew.example"
PASSWORD = "correct horse battery"
TTL_S = 2.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("server")
    config = root / "server.toml"
    config.write_text(f'token_ttl = "{TTL_S:g}s"\n')
    with ServerProcess(DOMAIN, root / "data", config=config) as proc:
        yield proc


async def friends(server: ServerProcess, root: Path) -> tuple[Client, Client]:
    suffix = secrets.token_hex(3)
    alice, bob = [
        await Client.register(
            root / local, f"{local}{suffix}#{DOMAIN}", PASSWORD, server.url, kdf=FAST_KDF_FOR_TESTS
        )
        for local in ("alice", "bob")
    ]
    await alice.add_contact(str(bob.address))
    await bob.accept_contact(str(alice.address))
    return alice, bob


async def whoami(server: ServerProcess, token: str) -> httpx.Response:
    async with httpx.AsyncClient() as http:
        return await http.get(
            f"{server.url}/_emsg/v1/whoami", headers={"Authorization": f"Bearer {token}"}
        )


async def until_expired(server: ServerProcess, token: str) -> None:
    """Wait until the server says `token_expired` for `token`."""
    for _ in range(int(TTL_S * 20) + 40):
        resp = await whoami(server, token)
        if resp.status_code == 401:
            assert resp.json()["error"]["code"] == "token_expired"
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the token did not expire")


async def device_ids(client: Client) -> list[str]:
    return [d.device_id for d in await client.devices()]


async def test_messages_sent_while_a_token_had_expired_arrive_on_the_same_device(
    server: ServerProcess, tmp_path: Path
) -> None:
    alice, bob = await friends(server, tmp_path)
    async with alice, bob:
        device, expired = alice.device_id, alice._api.token
        assert expired is not None
        await until_expired(server, expired)
        # Bob's token has expired too: his client renews it on the way.
        await bob.send_text(str(alice.address), "while you were away")
        got = await alice.fetch()
        assert [m.body for m in got] == ["while you were away"]
        assert alice.device_id == device
        assert await device_ids(alice) == [device]  # no new device at the server
        renewed = alice._api.token
        assert renewed not in (None, expired)
        assert (await whoami(server, renewed or "")).json()["device_id"] == device
        await alice.send_text(str(bob.address), "back")
        assert [m.body for m in await bob.fetch()] == ["back"]

    # The renewed token was kept in the profile: a later process starts with it.
    async with await Client.open(tmp_path / "alice", PASSWORD) as again:
        assert again._api.token == renewed
        assert again.device_id == device


async def test_listen_reconnects_with_a_renewed_token(
    server: ServerProcess, tmp_path: Path
) -> None:
    alice, bob = await friends(server, tmp_path)
    async with alice, bob:
        await until_expired(server, alice._api.token or "")
        received: list[ClientEvent] = []

        async def consume() -> None:
            async for event in alice.listen():
                if event.kind == "message":
                    received.append(event)
                    return

        listening = asyncio.create_task(consume())
        await bob.send_text(str(alice.address), "live, after expiry")
        await asyncio.wait_for(listening, 30)
        assert [e.message.body for e in received if e.message] == ["live, after expiry"]
        assert await device_ids(alice) == [alice.device_id]


async def test_a_listening_client_outlives_its_token(server: ServerProcess, tmp_path: Path) -> None:
    """The server closes the stream when its token expires; `listen` renews the token
    and goes on where it was, and nothing sent around that moment is lost."""
    alice, bob = await friends(server, tmp_path)
    async with alice, bob:
        await until_expired(server, alice._api.token or "")
        await alice.whoami()  # a fresh token, which the stream authenticates with
        first = alice._api.token
        bodies: list[str] = []

        async def consume() -> None:
            async for event in alice.listen():
                if event.message is not None:
                    bodies.append(event.message.body)
                    if len(bodies) == 3:
                        return

        listening = asyncio.create_task(consume())
        await bob.send_text(str(alice.address), "message 0")
        await asyncio.sleep(TTL_S + 1)  # the server closes the stream at its token's expiry
        # Renewed by `listen` itself: Alice made no other request.
        assert alice._api.token != first
        for i in (1, 2):
            await bob.send_text(str(alice.address), f"message {i}")
        await asyncio.wait_for(listening, 30)
        assert bodies == ["message 0", "message 1", "message 2"]
        assert await device_ids(alice) == [alice.device_id]


async def test_two_processes_of_one_profile_renew_once(
    server: ServerProcess, tmp_path: Path
) -> None:
    alice, bob = await friends(server, tmp_path)
    await bob.aclose()
    second = await Client.open(tmp_path / "alice", PASSWORD)
    async with alice, second:
        await until_expired(server, alice._api.token or "")
        await alice.whoami()  # renews, and keeps the new token in the profile
        await second.whoami()  # finds it there: no login of its own
        assert second._api.token == alice._api.token
        assert await device_ids(alice) == [alice.device_id]


async def test_a_profile_without_the_login_key_says_to_log_in_and_login_keeps_the_device(
    server: ServerProcess, tmp_path: Path
) -> None:
    alice, bob = await friends(server, tmp_path)
    async with bob:
        device = alice.device_id
        alice._store.put_secret("login_key", None)  # as a profile from before it was kept
        await until_expired(server, alice._api.token or "")
        with pytest.raises(TokenExpired, match="emsg account login"):
            await alice.fetch()
        await alice.aclose()
        await bob.send_text(str(alice.address), "queued for the old token")

        again = await Client.login(tmp_path / "alice", str(alice.address), PASSWORD)
        async with again:
            assert again.device_id == device
            assert [m.body for m in await again.fetch()] == ["queued for the old token"]
            assert await device_ids(again) == [device]
