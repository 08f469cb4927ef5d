"""Several devices per account across two domains: two real homeserver processes
speaking TLS, real clients. Fan-out, revocation seen by a contact on the other
domain, and a malicious remote server that forges device lists."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.integration.federation.client_kit import eventually
from tests.integration.multidevice.md_kit import (
    PASSWORD,
    device_list,
    put_device_list,
    queued_for,
    server_db,
)

from emsg.client import Client, Message
from emsg.crypto.errors import UntrustedDevice
from emsg.crypto.identity import IdentityKey
from emsg.crypto.keys import FAST_KDF_FOR_TESTS
from emsg.proto.errors import IdentityKeyChanged, NoRequest
from emsg.proto.wire import ListedDevice, model_dump
from emsg.testing.tls import TlsServer, federation


@pytest.fixture
def servers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[TlsServer, TlsServer]]:
    # Each send refetches the recipient's device list (as every CLI command does); a
    # long-running client reuses a verified list for up to 30 s (DEVICE_LIST_FRESH_FOR).
    monkeypatch.setattr("emsg.client.keyring.DEVICE_LIST_FRESH_FOR", 0.0)
    alpha, beta = federation(tmp_path / "fed", ["alpha.test", "beta.test"])
    alpha.start()
    beta.start()
    try:
        yield alpha, beta
    finally:
        alpha.stop()
        beta.stop()


class Devices:
    """Profiles of real clients, each device in its own folder, trusting the test CA."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _tls(self, server: TlsServer) -> httpx.AsyncHTTPTransport:
        return httpx.AsyncHTTPTransport(verify=server.pki.context())

    async def register(self, address: str, server: TlsServer) -> Client:
        return await Client.register(
            self.root / f"{address}-1", address, PASSWORD, server.url,
            kdf=FAST_KDF_FOR_TESTS, transport=self._tls(server),
        )  # fmt: skip

    async def login(self, address: str, device: str, server: TlsServer) -> Client:
        return await Client.login(
            self.root / f"{address}-{device}", address, PASSWORD, server.url,
            kdf=FAST_KDF_FOR_TESTS, transport=self._tls(server),
        )  # fmt: skip

    async def reopen(self, client: Client, address: str, device: str, server: TlsServer) -> Client:
        await client.aclose()
        return await Client.open(
            self.root / f"{address}-{device}", PASSWORD, transport=self._tls(server)
        )


async def befriend(a: Client, b: Client) -> None:
    await a.add_contact(str(b.address))

    async def accepted() -> bool:
        try:
            await b.accept_contact(str(a.address))
        except NoRequest:
            return False
        return True

    assert await eventually(accepted)


async def received(client: Client, body: str) -> list[Message]:
    """Fetch until a message with `body` arrives; everything fetched meanwhile."""
    got: list[Message] = []

    async def check() -> bool:
        got.extend(await client.fetch())
        return any(m.body == body for m in got)

    assert await eventually(check), f"{client.device_id} never got {body!r}"
    return got


async def alice_with_two_devices(devices: Devices, alpha: TlsServer) -> tuple[Client, Client]:
    alice1 = await devices.register("alice#alpha.test", alpha)
    alice2 = await devices.login("alice#alpha.test", "2", alpha)
    assert alice2.approval_code is not None
    await alice1.approve_device(alice2.approval_code)
    assert await alice2.check_approval()
    return alice1, alice2


async def test_fan_out_to_every_device_across_domains(
    servers: tuple[TlsServer, TlsServer], tmp_path: Path
) -> None:
    alpha, beta = servers
    devices = Devices(tmp_path)
    alice1, alice2 = await alice_with_two_devices(devices, alpha)
    bob = await devices.register("bob#beta.test", beta)
    await befriend(alice1, bob)

    # Bob's message (from beta) reaches both of Alice's devices on alpha.
    await bob.send_text("alice#alpha.test", "hello both of you")
    for device in (alice1, alice2):
        got = await received(device, "hello both of you")
        assert [(m.body, m.direction) for m in got] == [("hello both of you", "in")]

    # What Alice sends from one device reaches Bob and shows on her other device.
    sent = await alice2.send_text("bob#beta.test", "from alice's second device")
    assert [m.body for m in await received(bob, "from alice's second device")] == [
        "from alice's second device"
    ]
    synced = await received(alice1, "from alice's second device")
    assert [(m.id, m.direction, m.recipient) for m in synced] == [(sent.id, "out", "bob#beta.test")]
    for client in (alice1, alice2, bob):
        await client.aclose()


async def test_a_revoked_device_gets_nothing_from_a_contact_on_another_domain(
    servers: tuple[TlsServer, TlsServer], tmp_path: Path
) -> None:
    alpha, beta = servers
    devices = Devices(tmp_path)
    alice1, alice2 = await alice_with_two_devices(devices, alpha)
    bob = await devices.register("bob#beta.test", beta)
    await befriend(alice1, bob)
    await bob.send_text("alice#alpha.test", "before")
    await received(alice2, "before")
    await received(alice1, "before")

    await alice1.revoke_device(alice2.device_id, PASSWORD)
    # Bob's client refetches Alice's signed list (over beta, from alpha): alice2 is gone.
    await bob.send_text("alice#alpha.test", "after the revocation")
    got = await received(alice1, "after the revocation")
    assert [m.body for m in got] == ["after the revocation"]
    assert queued_for(alpha, alice2.device_id) == 0
    # Nothing was addressed to alice2, so nothing bounced back to Bob.
    assert await eventually(lambda: asyncio.to_thread(lambda: outbox_size(beta) == 0))
    await bob.fetch()
    assert [(m.body, m.bounced) for m in bob.history()] == [
        ("before", None),
        ("after the revocation", None),
    ]
    for client in (alice1, alice2, bob):
        await client.aclose()


async def test_a_malicious_remote_server_forging_device_lists_gets_nothing(
    servers: tuple[TlsServer, TlsServer], tmp_path: Path
) -> None:
    alpha, beta = servers
    devices = Devices(tmp_path)
    alice = await devices.register("alice#alpha.test", alpha)
    bob = await devices.register("bob#beta.test", beta)
    await befriend(alice, bob)
    await alice.send_text("bob#beta.test", "hello bob")
    await received(bob, "hello bob")

    # Beta makes a device for Bob (it checks passwords, so it can) and adds it to
    # Bob's device list, which it cannot sign: it answers alpha's lookups with that.
    rogue = await devices.login("bob#beta.test", "rogue", beta)
    keys = rogue._olm.load_device()
    await rogue.aclose()
    with server_db(beta) as db:
        original = device_list(db, "bob#beta.test")
        forged = {**original, "devices": [*original["devices"]], "version": original["version"] + 1}
        forged["devices"].append(
            {"device_id": keys.device_id, "curve25519": keys.curve25519, "ed25519": keys.ed25519}
        )
        put_device_list(db, "bob#beta.test", forged)
    with pytest.raises(UntrustedDevice, match="not signed") as raised:
        await alice.send_text("bob#beta.test", "for bob only")
    assert "bob#beta.test" in str(raised.value)
    assert queued_for(beta, keys.device_id) == 0
    assert queued_for(beta, bob.device_id) == 0
    assert outbox_size(alpha) == 0  # nothing left alpha at all

    # Beta replaces Bob's identity key with one of its own and signs the list with it.
    fake = IdentityKey.generate()
    with server_db(beta) as db:
        signed = fake.sign_device_list(
            "bob#beta.test", original["version"] + 2,
            [ListedDevice(**d) for d in forged["devices"]],
        )  # fmt: skip
        put_device_list(db, "bob#beta.test", model_dump(signed))
    with pytest.raises(IdentityKeyChanged, match="has changed"):
        await alice.send_text("bob#beta.test", "still for bob only")
    assert queued_for(beta, keys.device_id) == 0
    assert queued_for(beta, bob.device_id) == 0
    assert outbox_size(alpha) == 0
    assert [m.body for m in alice.history()] == ["hello bob"]  # nothing else was sent
    (listed,) = [c for c in await alice.contacts() if c.address == "bob#beta.test"]
    assert listed.key_changed
    for client in (alice, bob):
        await client.aclose()


def outbox_size(server: TlsServer) -> int:
    conn = sqlite3.connect(server.data / "emsg.sqlite3")
    try:
        (count,) = conn.execute("SELECT COUNT(*) FROM fed_outbox").fetchone()
        return int(count)
    finally:
        conn.close()
