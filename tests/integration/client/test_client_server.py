"""Two clients against a real homeserver process: register, befriend, talk both ways."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from emsg.client import Client, ClientEvent, WrongPassphrase
from emsg.crypto.keys import FAST_KDF_FOR_TESTS
from emsg.proto.errors import EmsgError, RecipientRefuses
from emsg.testing import ServerProcess

DOMAIN = "a.example"
PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(DOMAIN, tmp_path_factory.mktemp("server")) as proc:
        yield proc


async def register(server: ServerProcess, home: Path, local: str) -> Client:
    return await Client.register(
        home, f"{local}#{DOMAIN}", PASSWORD, server.url, kdf=FAST_KDF_FOR_TESTS
    )


async def friends(server: ServerProcess, tmp_path: Path) -> tuple[Client, Client]:
    suffix = secrets.token_hex(4)  # the server is shared by the module's tests
    alice = await register(server, tmp_path / "alice", f"alice{suffix}")
    bob = await register(server, tmp_path / "bob", f"bob{suffix}")
    await alice.add_contact(str(bob.address), "hi, it's alice")
    requests = await bob.contact_requests()
    assert [(r.address, r.state) for r in requests] == [(str(alice.address), "incoming")]
    assert requests[0].identity_key == alice.identity_key
    accepted = await bob.accept_contact(str(alice.address))
    assert accepted.state == "friend"
    return alice, bob


async def test_register_befriend_and_talk_both_ways(server: ServerProcess, tmp_path: Path) -> None:
    alice, bob = await friends(server, tmp_path)
    async with alice, bob:
        assert (await alice.whoami())["address"] == str(alice.address)
        sent = await alice.send_text(str(bob.address), "hello bob")
        got = await bob.fetch()
        assert [(m.id, m.body, m.sender, m.direction) for m in got] == [
            (sent.id, "hello bob", str(alice.address), "in")
        ]
        assert await bob.fetch() == []  # acknowledged, not redelivered
        await bob.send_text(str(alice.address), "hello alice")
        await bob.send_text(str(alice.address), "second")
        events = await alice.fetch()
        assert [m.body for m in events if m.body != "hello bob"] == ["hello alice", "second"]
        assert [m.body for m in alice.history(str(bob.address))] == [
            "hello bob",
            "hello alice",
            "second",
        ]
        contacts = {c.address: c for c in await alice.contacts()}
        assert contacts[str(bob.address)].state == "friend"
        assert contacts[str(bob.address)].identity_key == bob.identity_key


async def test_listen_receives_live_and_reopen(server: ServerProcess, tmp_path: Path) -> None:
    alice, bob = await friends(server, tmp_path)
    async with alice:
        received: list[ClientEvent] = []

        async def consume() -> None:
            async for event in bob.listen():
                received.append(event)
                if len([e for e in received if e.kind == "message"]) == 3:
                    return

        task = asyncio.create_task(consume())
        try:
            for i in range(3):
                await alice.send_text(str(bob.address), f"live {i}")
            await asyncio.wait_for(task, 20)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await bob.aclose()
        assert [e.message.body for e in received if e.message] == ["live 0", "live 1", "live 2"]

        with pytest.raises(WrongPassphrase):
            await Client.open(tmp_path / "bob", "not the password")
        async with await Client.open(tmp_path / "bob", PASSWORD) as again:
            assert [m.body for m in again.history()] == ["live 0", "live 1", "live 2"]
            await again.send_text(str(alice.address), "after reopen")
        assert [m.body for m in await alice.fetch()] == ["after reopen"]


async def test_contact_accepted_event_marks_friend(server: ServerProcess, tmp_path: Path) -> None:
    alice = await register(server, tmp_path / "alice", "carol")
    bob = await register(server, tmp_path / "bob", "dave")
    async with alice, bob:
        await alice.add_contact(str(bob.address))
        await bob.accept_contact(str(alice.address))
        await alice.fetch()
        assert {c.address: c.state for c in await alice.contacts()} == {str(bob.address): "friend"}


async def test_a_refused_send_leaves_no_history(server: ServerProcess, tmp_path: Path) -> None:
    suffix = secrets.token_hex(4)
    alice = await register(server, tmp_path / "alice", f"alice{suffix}")
    bob = await register(server, tmp_path / "bob", f"bob{suffix}")
    async with alice, bob:
        await bob.set_stranger_policy("contacts-only")
        with pytest.raises(RecipientRefuses):
            await alice.send_text(str(bob.address), "let me in")
        assert alice.history() == []
        await bob.set_stranger_policy("open")
        sent = await alice.send_text(str(bob.address), "hello")
        assert [m.id for m in alice.history()] == [sent.id]
        assert [m.body for m in await bob.fetch()] == ["hello"]


async def test_a_burst_over_the_stream_is_stored_once_and_acked(
    server: ServerProcess, tmp_path: Path
) -> None:
    alice, bob = await friends(server, tmp_path)
    async with alice, bob:
        got: list[str] = []
        done = asyncio.Event()

        async def consume() -> None:
            async for event in bob.listen():
                if event.message is not None:
                    got.append(event.message.body)
                    if len(got) == 50:
                        done.set()

        async def pipelined() -> None:
            async for _ in alice.listen():
                pass

        listeners = [asyncio.create_task(consume()), asyncio.create_task(pipelined())]
        try:
            await asyncio.sleep(0.3)  # both streams up: alice's sends go over hers
            sent = await asyncio.gather(
                *(alice.send_text(str(bob.address), f"burst {i}") for i in range(50))
            )
            await asyncio.wait_for(done.wait(), 20)
        finally:
            for task in listeners:
                task.cancel()
            await asyncio.gather(*listeners, return_exceptions=True)
        assert sorted(got) == sorted(f"burst {i}" for i in range(50))
        assert {m.id for m in alice.history()} == {m.id for m in sent}
        assert len(bob.history()) == 50
        assert await bob.fetch() == []  # everything was acknowledged or deduplicated


async def test_concurrent_sends_are_batched_in_order_and_fail_alone(
    server: ServerProcess, tmp_path: Path
) -> None:
    alice, bob = await friends(server, tmp_path)
    async with alice, bob:

        async def pipelined() -> None:
            async for _ in alice.listen():
                pass

        listener = asyncio.create_task(pipelined())
        try:
            await asyncio.sleep(0.3)  # alice's stream is up: her sends are pipelined
            ghost = f"ghost{secrets.token_hex(4)}#{DOMAIN}"
            calls = [alice.send_text(str(bob.address), f"m{i}") for i in range(150)]
            calls.insert(70, alice.send_text(ghost, "to nobody"))
            results = await asyncio.gather(*calls, return_exceptions=True)
        finally:
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        assert len(failed) == 1  # the send to nobody, and it alone
        assert isinstance(failed[0], EmsgError)
        # In the order they were called, once each, on both sides.
        expected = [f"m{i}" for i in range(150)]
        assert [m.body for m in alice.history(str(bob.address))] == expected
        assert [m.body for m in await bob.fetch()] == expected
        assert [m.body for m in alice.history()] == expected  # nothing kept for the ghost
