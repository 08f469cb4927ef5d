"""A conversation through server crashes: nothing acknowledged is lost, nothing shows twice.

Real server process, real clients: Alice keeps sending while the server is killed
with SIGKILL and later restarted with SIGTERM; Bob listens on the WebSocket the
whole time and reconnects by himself.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from emsg.client import Client
from emsg.crypto.keys import FAST_KDF_FOR_TESTS
from emsg.testing import ServerProcess

DOMAIN = "crash.test"
PASSWORD = "correct horse battery"
MESSAGES = 60


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    proc = ServerProcess(DOMAIN, tmp_path / "server").start()
    try:
        yield proc
    finally:
        proc.stop()


async def friends(server: ServerProcess, root: Path) -> tuple[Client, Client]:
    suffix = secrets.token_hex(3)
    alice = await Client.register(
        root / "alice", f"alice{suffix}#{DOMAIN}", PASSWORD, server.url, kdf=FAST_KDF_FOR_TESTS
    )
    bob = await Client.register(
        root / "bob", f"bob{suffix}#{DOMAIN}", PASSWORD, server.url, kdf=FAST_KDF_FOR_TESTS
    )
    await alice.add_contact(str(bob.address))
    await bob.accept_contact(str(alice.address))
    return alice, bob


async def test_kill_and_restart_mid_conversation(server: ServerProcess, tmp_path: Path) -> None:
    alice, bob = await friends(server, tmp_path)
    received: list[str] = []
    all_in = asyncio.Event()

    async def listen() -> None:
        async for event in bob.listen():
            if event.message is not None:
                received.append(event.message.body)
                if len(received) >= MESSAGES:
                    all_in.set()

    listener = asyncio.create_task(listen())
    acknowledged: list[str] = []
    try:
        for i in range(MESSAGES):
            if i == MESSAGES // 3:
                server.kill()  # a crash: no graceful anything
                server.start()
            if i == 2 * MESSAGES // 3:
                assert server.stop() == 0  # a graceful restart exits cleanly
                server.start()
            body = f"message {i}"
            await alice.send_text(str(bob.address), body)  # returns once committed
            acknowledged.append(body)
        try:
            await asyncio.wait_for(all_in.wait(), 60)
        except TimeoutError:
            missing = [b for b in acknowledged if b not in received]
            raise AssertionError(f"missing {missing}; got {len(received)}: {received}") from None
        await asyncio.sleep(0.5)  # anything shown twice would arrive now
    finally:
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listener

    assert received == acknowledged  # none lost, none twice, in order
    history = [m.body for m in bob.history(str(alice.address))]
    assert history == acknowledged
    # A fresh fetch after everything was acknowledged finds nothing new.
    assert await bob.fetch() == []
    await alice.aclose()
    await bob.aclose()


async def test_messages_wait_for_an_offline_client(server: ServerProcess, tmp_path: Path) -> None:
    """Bob is offline (no client open) while Alice writes and the server restarts."""
    alice, bob = await friends(server, tmp_path)
    bob_home, bob_address = tmp_path / "bob", str(bob.address)
    await bob.aclose()
    for i in range(5):
        await alice.send_text(bob_address, f"while you were away {i}")
    server.kill()
    server.start()
    bob = await Client.open(bob_home, PASSWORD)
    got = [m.body for m in await bob.fetch()]
    assert got == [f"while you were away {i}" for i in range(5)]
    assert [m.body for m in await bob.fetch()] == []
    await alice.aclose()
    await bob.aclose()
