"""Revoking a device and approving one with the recovery key, against a real
homeserver process: the revoked device is refused at once and nobody encrypts to it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import websockets
from md_kit import PASSWORD, Homes, befriend, queued_for

from emsg.client import Client
from emsg.crypto.errors import InvalidRecoveryKey
from emsg.proto.errors import Forbidden, Unauthorized, UnknownDevice
from emsg.testing import ServerProcess

DOMAIN = "rr.example"
ZERO_KEY = "A" * 43


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    with ServerProcess(DOMAIN, tmp_path / "server") as proc:
        yield proc


@pytest.fixture
def homes(tmp_path: Path, server: ServerProcess, monkeypatch: pytest.MonkeyPatch) -> Homes:
    # Each send refetches the device list, as every CLI command does (a long-running
    # client reuses a list for up to 30 s: keyring.DEVICE_LIST_FRESH_FOR).
    monkeypatch.setattr("emsg.client.keyring.DEVICE_LIST_FRESH_FOR", 0.0)
    return Homes(tmp_path, server)


async def two_devices(homes: Homes) -> tuple[Client, Client]:
    alice1 = await homes.register("alice")
    alice2 = await homes.login("alice", "2")
    assert alice2.approval_code is not None
    await alice1.approve_device(alice2.approval_code)
    assert await alice2.check_approval()
    return alice1, alice2


def token_of(client: Client) -> str:
    token = client._api.token
    assert token is not None
    return token


async def test_a_revoked_device_is_refused_at_once_and_gets_nothing(
    homes: Homes, server: ServerProcess
) -> None:
    alice1, alice2 = await two_devices(homes)
    bob = await homes.register("bob")
    await befriend(alice1, bob)
    await bob.send_text(str(alice1.address), "to both")
    for device in (alice1, alice2):
        assert [m.body for m in await device.fetch()] == ["to both"]
    token2 = token_of(alice2)

    # alice2's live stream is open when it is revoked.
    ws = await websockets.connect(server.url.replace("http", "ws") + "/_emsg/v1/stream")
    await ws.send(json.dumps({"type": "auth", "token": token2, "since": 0}))
    assert json.loads(await ws.recv())["type"] == "ready"

    with pytest.raises(Unauthorized):
        await alice1.revoke_device(alice2.device_id, "not the password")
    await alice1.revoke_device(alice2.device_id, PASSWORD)

    # At once: the stream closes with 4401 after an error frame ...
    frame = json.loads(await asyncio.wait_for(ws.recv(), 5))
    assert (frame["type"], frame["error"]["code"]) == ("error", "unauthorized")
    with pytest.raises(websockets.ConnectionClosed):
        await asyncio.wait_for(ws.recv(), 5)
    assert ws.close_code == 4401
    # ... and every request with its token gets 401.
    async with httpx.AsyncClient(base_url=server.url) as http:
        reply = await http.get("/_emsg/v1/whoami", headers={"Authorization": f"Bearer {token2}"})
        assert reply.status_code == 401
        assert reply.json()["error"]["code"] == "unauthorized"
    with pytest.raises(Unauthorized):
        await alice2.fetch()

    states = {d.device_id: d.state for d in await alice1.devices()}
    assert states == {alice1.device_id: "approved", alice2.device_id: "revoked"}

    # Nobody encrypts to it: not the contact, not the account's own other device.
    await bob.send_text(str(alice1.address), "after the revocation")
    await alice1.send_text(str(bob.address), "from the remaining device")
    assert queued_for(server, alice2.device_id) == 0
    assert [m.body for m in await alice1.fetch()] == ["after the revocation"]
    assert [m.body for m in await bob.fetch()] == ["from the remaining device"]

    # The server refuses an envelope addressed to it, whatever a client tries.
    with pytest.raises(UnknownDevice):
        await bob._sender.send(
            [
                {  # type: ignore[list-item]
                    "to": str(alice1.address),
                    "device_id": alice2.device_id,
                    "ciphertext": {"type": 0, "body": "AAAA", "sender_key": ZERO_KEY},
                }
            ]
        )
    for client in (alice1, alice2, bob):
        await client.aclose()


async def test_only_an_approved_device_of_the_account_may_revoke(
    homes: Homes, server: ServerProcess
) -> None:
    alice1 = await homes.register("alice")
    pending = await homes.login("alice", "2")
    bob = await homes.register("bob")
    async with httpx.AsyncClient(base_url=server.url) as http:

        async def revoke(client: Client, device_id: str) -> httpx.Response:
            return await http.post(
                f"/_emsg/v1/devices/{device_id}/revoke",
                json={"password": PASSWORD},
                headers={"Authorization": f"Bearer {token_of(client)}"},
            )

        refused = await revoke(pending, alice1.device_id)
        assert (refused.status_code, refused.json()["error"]["code"]) == (403, "forbidden")
        other = await revoke(bob, alice1.device_id)  # not bob's device: it does not exist
        assert (other.status_code, other.json()["error"]["code"]) == (404, "unknown_device")
    assert await alice1.whoami()  # still works
    with pytest.raises(Forbidden):
        await pending._api.call(
            "PUT", "/account/identity-backup", {"identity_key": ZERO_KEY, "sealed": "A" * 40}
        )
    for client in (alice1, pending, bob):
        await client.aclose()


async def test_the_recovery_key_approves_a_third_device(homes: Homes) -> None:
    alice1, alice2 = await two_devices(homes)
    first_key = alice1.recovery_key
    assert first_key is not None
    bob = await homes.register("bob")
    await befriend(alice1, bob)

    # A new recovery key from the second device: the first one stops opening the backup.
    second_key = await alice2.new_recovery_key()
    assert second_key != first_key
    alice3 = await homes.login("alice", "3")
    assert not alice3.approved
    with pytest.raises(InvalidRecoveryKey):
        await alice3.recover(first_key)
    assert not alice3.approved
    await alice3.recover(second_key)
    assert alice3.approved
    assert alice3.identity_key == alice1.identity_key  # recovery never changes the key

    await bob.send_text(str(alice1.address), "to all three")
    for device in (alice1, alice2, alice3):
        assert [m.body for m in await device.fetch()] == ["to all three"]
    sent = await alice3.send_text(str(bob.address), "from the recovered device")
    assert [m.body for m in await bob.fetch()] == ["from the recovered device"]
    assert [m.id for m in await alice1.fetch()] == [sent.id]
    for client in (alice1, alice2, alice3, bob):
        await client.aclose()
