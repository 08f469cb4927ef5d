"""Several devices per account against a real homeserver process: approval, fan-out,
self-sync, history transfer, and what a malicious homeserver cannot do."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import httpx
import pytest
from md_kit import (
    Homes,
    befriend,
    device_list,
    login_key_of,
    put_device_list,
    queued_for,
    server_db,
)

from emsg.client import DeviceNotApproved, ShortCode
from emsg.crypto import approval
from emsg.crypto.errors import (
    InvalidApprovalCode,
    InvalidKey,
    UntrustedDevice,
    VerificationFailed,
)
from emsg.crypto.identity import IdentityKey
from emsg.proto import b64, signing
from emsg.proto.errors import IdentityKeyChanged, NotFound
from emsg.proto.wire import DeviceKeys, ListedDevice, model_dump
from emsg.testing import ServerProcess

DOMAIN = "md.example"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    with ServerProcess(DOMAIN, tmp_path / "server") as proc:
        yield proc


@pytest.fixture
def homes(tmp_path: Path, server: ServerProcess, monkeypatch: pytest.MonkeyPatch) -> Homes:
    # Long-running clients reuse a verified device list for up to 30 s; these clients
    # live for one test, so each send refetches (as every CLI command does).
    monkeypatch.setattr("emsg.client.keyring.DEVICE_LIST_FRESH_FOR", 0.0)
    return Homes(tmp_path, server)


def bodies(messages: list[object]) -> list[str]:
    return [m.body for m in messages]  # type: ignore[attr-defined]


async def test_pending_device_gets_nothing_until_approved_then_everything(
    homes: Homes, server: ServerProcess
) -> None:
    alice1, bob = await homes.register("alice"), await homes.register("bob")
    await befriend(alice1, bob)
    await bob.send_text(str(alice1.address), "before the new device")
    assert bodies(await alice1.fetch()) == ["before the new device"]

    alice2 = await homes.login("alice", "2")
    assert not alice2.approved
    code = alice2.approval_code
    assert code is not None

    # Pending: nobody encrypts to it, and it cannot send.
    await bob.send_text(str(alice1.address), "while pending")
    assert queued_for(server, alice2.device_id) == 0
    assert await alice2.fetch() == []
    with pytest.raises(DeviceNotApproved):
        await alice2.send_text(str(bob.address), "from a pending device")
    assert bodies(await alice1.fetch()) == ["while pending"]

    # Approval with history: the identity key, the pinned contacts and the history arrive.
    info = await alice1.approve_device(code, history=True)
    assert info.device_id == alice2.device_id
    assert await alice2.check_approval()
    assert alice2.approval_code is None
    assert alice2.identity_key == alice1.identity_key
    assert bodies(alice2.history(str(bob.address))) == ["before the new device", "while pending"]
    assert [m.direction for m in alice2.history()] == ["in", "in"]
    states = {d.device_id: d.state for d in await alice1.devices()}
    assert states == {alice1.device_id: "approved", alice2.device_id: "approved"}

    # Fan-out to both devices, and self-sync of what one device sends.
    await bob.send_text(str(alice1.address), "to all of alice")
    assert bodies(await alice1.fetch()) == ["to all of alice"]
    assert bodies(await alice2.fetch()) == ["to all of alice"]
    sent = await alice2.send_text(str(bob.address), "from the second device")
    assert bodies(await bob.fetch()) == ["from the second device"]
    synced = await alice1.fetch()
    assert [(m.id, m.direction, m.recipient) for m in synced] == [
        (sent.id, "out", str(bob.address))
    ]

    # A third device, approved from the second one; every device gets the next message.
    alice3 = await homes.login("alice", "3")
    assert alice3.approval_code is not None
    await alice2.approve_device(alice3.approval_code)
    assert await alice3.check_approval()
    assert alice3.history() == []  # history only when asked for
    await bob.send_text(str(alice1.address), "three devices")
    for device in (alice1, alice2, alice3):
        assert bodies(await device.fetch())[-1:] == ["three devices"]
    for client in (alice1, alice2, alice3, bob):
        await client.aclose()


async def test_new_device_pins_contacts_from_the_approving_device(homes: Homes) -> None:
    alice1, bob = await homes.register("alice"), await homes.register("bob")
    await befriend(alice1, bob)
    await alice1.verify.confirm(str(bob.address))
    alice2 = await homes.login("alice", "2")
    assert alice2.approval_code is not None
    await alice1.approve_device(alice2.approval_code)
    await alice2.check_approval()
    await alice2.fetch()  # the contacts share follows the identity share
    contacts = {c.address: c for c in await alice2.contacts()}
    assert contacts[str(bob.address)].identity_key == bob.identity_key
    assert contacts[str(bob.address)].verified
    for client in (alice1, alice2, bob):
        await client.aclose()


async def test_a_wrong_code_approves_nothing(homes: Homes) -> None:
    alice1 = await homes.register("alice")
    alice2 = await homes.login("alice", "2")
    code = alice2.approval_code
    assert code is not None
    typo = code[:-1] + ("A" if code[-1] != "A" else "B")
    with pytest.raises(NotFound):
        await alice1.approve_device(typo)
    with pytest.raises(InvalidApprovalCode):
        await alice1.approve_device("not a code")
    assert not await alice2.check_approval()
    assert {d.device_id for d in await alice1.devices() if d.state == "approved"} == {
        alice1.device_id
    }
    await alice1.aclose()
    await alice2.aclose()


async def test_device_added_to_bobs_list_without_his_signature_gets_nothing(
    homes: Homes, server: ServerProcess
) -> None:
    alice, bob = await homes.register("alice"), await homes.register("bob")
    await befriend(alice, bob)
    # The server makes a device for Bob (it can: it checks passwords) ...
    rogue = await homes.login("bob", "rogue")
    keys = rogue._olm.load_device()
    await rogue.aclose()
    await alice.aclose()
    # ... and adds it to Bob's device list, which it cannot re-sign.
    with server_db(server) as db:
        forged = device_list(db, str(bob.address))
        forged["devices"].append(
            {"device_id": keys.device_id, "curve25519": keys.curve25519, "ed25519": keys.ed25519}
        )
        forged["version"] += 1
        put_device_list(db, str(bob.address), forged)
    alice = await homes.reopen(alice, "alice", "1")
    with pytest.raises(UntrustedDevice, match="not signed"):
        await alice.send_text(str(bob.address), "for bob only")
    assert queued_for(server, rogue.device_id) == 0
    assert queued_for(server, bob.device_id) == 0
    assert alice.history() == []  # nothing was sent, and the history says so
    await alice.aclose()
    await bob.aclose()


async def test_a_device_the_server_keeps_out_of_the_list_gets_nothing(
    homes: Homes, server: ServerProcess
) -> None:
    alice, bob = await homes.register("alice"), await homes.register("bob")
    await befriend(alice, bob)
    rogue = await homes.login("bob", "rogue")  # a device of Bob's that Bob never approved
    await alice.send_text(str(bob.address), "for bob's approved devices")
    assert queued_for(server, rogue.device_id) == 0
    assert bodies(await bob.fetch()) == ["for bob's approved devices"]
    for client in (alice, bob, rogue):
        await client.aclose()


async def test_identity_key_replaced_by_the_server_stops_sending(
    homes: Homes, server: ServerProcess
) -> None:
    alice, bob = await homes.register("alice"), await homes.register("bob")
    await befriend(alice, bob)
    await alice.verify.confirm(str(bob.address))
    await alice.aclose()
    fake = IdentityKey.generate()
    with server_db(server) as db:
        real = device_list(db, str(bob.address))
        signed = fake.sign_device_list(
            str(bob.address), real["version"] + 1, [ListedDevice(**d) for d in real["devices"]]
        )
        put_device_list(db, str(bob.address), model_dump(signed))
    alice = await homes.reopen(alice, "alice", "1")
    with pytest.raises(IdentityKeyChanged, match="has changed") as raised:
        await alice.send_text(str(bob.address), "hello?")
    assert "verified the old key" in raised.value.message
    assert queued_for(server, bob.device_id) == 0
    (listed,) = [c for c in await alice.contacts() if c.address == str(bob.address)]
    assert listed.key_changed
    assert listed.verification == "key_changed"
    # Still refused until the user accepts; accepting drops the verified mark.
    with pytest.raises(IdentityKeyChanged):
        await alice.send_text(str(bob.address), "hello again?")
    assert await alice.verify.accept_new_key(str(bob.address)) == fake.public_key
    (listed,) = [c for c in await alice.contacts() if c.address == str(bob.address)]
    assert (listed.verified, listed.key_changed) == (False, False)
    await alice.aclose()
    await bob.aclose()


async def test_a_low_order_device_key_is_never_approved(
    homes: Homes, server: ServerProcess
) -> None:
    alice = await homes.register("alice")
    # A device whose self-signed keys carry the all-zero Curve25519 key.
    async with httpx.AsyncClient(base_url=server.url + "/_emsg/v1") as http:
        session = (
            await http.post(
                "/login",
                json={"address": str(alice.address), "password": login_key_of(alice.address)},
            )
        ).json()
        signer = IdentityKey.generate()  # any Ed25519 key will do as the device's
        body = {
            "address": str(alice.address),
            "device_id": session["device_id"],
            "curve25519": b64.encode(bytes(32)),
            "ed25519": signer.public_key,
        }
        keys = {**body, "signature": signer.sign(signing.DEVICE_KEYS, body)}
        reply = await http.post(
            "/keys/upload",
            json={"device_keys": keys},
            headers={"Authorization": f"Bearer {session['token']}"},
        )
        assert reply.status_code == 200, reply.text
    code = approval.approval_code(approval.new_secret(), DeviceKeys.model_validate(keys))
    with pytest.raises(InvalidKey, match="low-order"):
        await alice.approve_device(code)
    assert [d.device_id for d in await alice.devices() if d.state == "approved"] == [
        alice.device_id
    ]
    await alice.aclose()


async def test_pending_device_refuses_a_key_from_a_device_without_its_secret(
    homes: Homes,
) -> None:
    """A new device takes the identity key only with the proof made from its code's
    secret, which only its own screen shows: a server that makes up an identity share
    (or an approver given another code for the same keys) gets nowhere."""
    alice1 = await homes.register("alice")
    alice2 = await homes.login("alice", "2")
    assert alice2.approval_code is not None
    keys = alice2._olm.load_device().device_keys()
    secret, _ = approval.parse_code(alice2.approval_code)
    other_secret = bytes(b ^ 0x55 for b in secret)
    not_shown = approval.approval_code(other_secret, keys)  # matches the keys, not the screen
    await alice1.approve_device(not_shown)
    assert not await alice2.check_approval()
    with pytest.raises(DeviceNotApproved):
        await alice2.send_text(str(alice1.address), "x")
    await alice1.aclose()
    await alice2.aclose()


async def test_interactive_sas_verifies_both_friends(homes: Homes) -> None:
    alice, bob = await homes.register("alice"), await homes.register("bob")
    await befriend(alice, bob)
    codes: dict[str, ShortCode] = {}

    def agree(who: str) -> Callable[[ShortCode], Awaitable[bool]]:
        async def compare(code: ShortCode) -> bool:
            codes[who] = code
            return True

        return compare

    await asyncio.wait_for(
        asyncio.gather(
            alice.verify.sas(str(bob.address), agree("alice"), alice.fetch, timeout=30),
            bob.verify.sas(str(alice.address), agree("bob"), bob.fetch, timeout=30),
        ),
        60,
    )
    assert codes["alice"] == codes["bob"]
    assert [c.verified for c in await alice.contacts()] == [True]
    assert [c.verified for c in await bob.contacts()] == [True]
    await alice.aclose()
    await bob.aclose()


async def test_sas_refused_by_one_side_verifies_nobody(homes: Homes) -> None:
    alice, bob = await homes.register("alice"), await homes.register("bob")
    await befriend(alice, bob)

    async def yes(code: ShortCode) -> bool:
        return True

    async def no(code: ShortCode) -> bool:
        return False

    results = await asyncio.gather(
        alice.verify.sas(str(bob.address), yes, alice.fetch, timeout=5),
        bob.verify.sas(str(alice.address), no, bob.fetch, timeout=5),
        return_exceptions=True,
    )
    assert all(isinstance(r, VerificationFailed) for r in results), results
    assert [c.verified for c in await alice.contacts()] == [False]
    assert [c.verified for c in await bob.contacts()] == [False]
    await alice.aclose()
    await bob.aclose()
