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
from md_kit import (
    PASSWORD,
    Homes,
    befriend,
    device_list,
    device_list_version,
    login_key_of,
    put_device_list,
    queued_for,
    server_db,
)

from emsg.client import Client
from emsg.crypto.errors import InvalidRecoveryKey, UntrustedDevice
from emsg.proto.errors import Forbidden, RateLimited, Unauthorized, UnknownDevice
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
                json={"password": login_key_of(client.address)},
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


async def test_a_server_replaying_the_list_from_before_a_revocation_is_refused(
    homes: Homes, server: ServerProcess
) -> None:
    """A malicious server hands out the account's old signed list, which still names
    the revoked (stolen) device, and keeps that device alive: the contact's client
    and the owner's own refuse the older list, so nothing is encrypted to the device
    and the owner never signs it back into a new list."""
    alice1, alice2 = await two_devices(homes)
    bob = await homes.register("bob")
    await befriend(alice1, bob)
    alice = str(alice1.address)
    with server_db(server) as db:
        before_revocation = device_list(db, alice)
    revoked = alice2.device_id
    await alice2.aclose()
    await alice1.revoke_device(revoked, PASSWORD)
    await bob.send_text(alice, "after the revocation")  # bob verifies the newer list
    newest = device_list_version(server, alice)
    assert newest == before_revocation["version"] + 1

    with server_db(server) as db:
        put_device_list(db, alice, before_revocation)
        db.execute("UPDATE devices SET revoked = 0 WHERE device_id = ?", (revoked,))

    older = r"older device list of .* \(version 2; this device has seen version 3\)"
    with pytest.raises(UntrustedDevice, match=older):
        await bob.send_text(alice, "must not reach the revoked device")
    assert queued_for(server, revoked) == 0
    assert [m.body for m in bob.history(alice)] == ["after the revocation"]

    alice3 = await homes.login("alice", "3")
    assert alice3.approval_code is not None
    with pytest.raises(UntrustedDevice, match="older device list"):
        await alice1.approve_device(alice3.approval_code)
    assert device_list_version(server, alice) == before_revocation["version"]
    for client in (alice1, alice3, bob):
        await client.aclose()


async def test_an_account_with_more_devices_than_the_view_holds_still_lists(
    homes: Homes, server: ServerProcess
) -> None:
    """Every login makes a device, so an old account can have more than the 1,000 a
    `DevicesView` holds: the view keeps the listed devices, then the newest live ones,
    then the newest revoked ones (it used to fail with 500)."""
    alice = await homes.register("alice")
    with server_db(server) as db:
        db.executemany(
            "INSERT INTO devices (device_id, address, name, revoked, created_at)"
            " VALUES (?, ?, 'old login', ?, ?)",
            [(f"OLD{i:05d}", str(alice.address), i % 100 != 0, i) for i in range(1, 1101)],
        )
    devices = await alice.devices()
    assert len(devices) == 1000
    states = {d.device_id: d.state for d in devices}
    assert states[alice.device_id] == "approved"
    live = [f"OLD{i:05d}" for i in range(100, 1101, 100)]
    assert all(states[d] == "pending" for d in live)
    revoked = sorted(d for d, state in states.items() if state == "revoked")
    assert len(revoked) == 1000 - 1 - len(live)
    assert revoked[0] == "OLD00103"  # the 101 oldest revoked ones are left out
    await alice.aclose()


async def test_guessing_the_password_through_revoke_is_as_slow_as_through_login(
    homes: Homes,
) -> None:
    """A stolen token of an approved device could otherwise try passwords at the
    speed of the server's hashing; revocations share the login limit (20 at once,
    then 10 a minute) per address and per account."""
    alice1, alice2 = await two_devices(homes)
    answers: list[str] = []
    for _ in range(25):
        try:
            await alice1.revoke_device(alice2.device_id, "a wrong guess")
        except (Unauthorized, RateLimited) as exc:
            answers.append(exc.code.value)
    # The registration and the login took 2 of the 20 (and a slow run may have
    # earned one more, at 10 a minute).
    limited = answers.index("rate_limited")
    assert answers[:limited] == ["unauthorized"] * limited
    assert 18 <= limited <= 19
    assert answers[limited:].count("rate_limited") >= 5
    with pytest.raises(RateLimited):  # the right password waits too
        await alice1.revoke_device(alice2.device_id, PASSWORD)
    states = {d.device_id: d.state for d in await alice1.devices()}
    assert states[alice2.device_id] == "approved"
    for client in (alice1, alice2):
        await client.aclose()


async def test_a_recovered_device_can_verify_a_friend_before_any_message(homes: Homes) -> None:
    """A new device knows nobody's key yet: it pins the friend's key on first sight,
    as a send would, instead of asking to add a friend the account already has."""
    alice1 = await homes.register("alice")
    bob = await homes.register("bob")
    await befriend(alice1, bob)
    key = alice1.recovery_key
    assert key is not None
    alice2 = await homes.login("alice", "2")
    await alice2.recover(key)

    number = await alice2.verify.safety_number(str(bob.address))
    assert number == await bob.verify.safety_number(str(alice1.address))
    assert number == await alice1.verify.safety_number(str(bob.address))
    await alice2.verify.confirm(str(bob.address))
    (listed,) = await alice2.contacts()
    assert (listed.address, listed.state, listed.verified) == (str(bob.address), "friend", True)
    for client in (alice1, alice2, bob):
        await client.aclose()
