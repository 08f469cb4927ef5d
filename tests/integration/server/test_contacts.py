"""Contacts, blocks and each stranger policy (protocol section 6)."""

from __future__ import annotations

from pathlib import Path

import httpx
from server_kit import User, code, pub, register, snapshot


async def ask(a: User, b: User, message: str = "hi") -> httpx.Response:
    return await a.post(
        "/contacts/requests", {"to": b.address, "message": message, "identity_key": pub(a.identity)}
    )


def kinds(sync: dict[str, object]) -> list[str]:
    return [e["kind"] for e in sync["events"]]  # type: ignore[attr-defined, index]


async def test_request_accept_flow(client: httpx.AsyncClient) -> None:
    alice, bob = await register(client, "alice"), await register(client, "bob")
    resp = await ask(alice, bob, "hello bob")
    assert resp.status_code == 200, resp.text
    assert resp.json()["state"] == "outgoing"
    got = await bob.sync()
    (event,) = got["events"]
    assert event["kind"] == "contact_request"
    assert event["contact"]["address"] == "alice#a.test"
    assert event["contact"]["identity_key"] == pub(alice.identity)
    view = (await bob.get("/contacts")).json()
    assert view["contacts"][0]["state"] == "incoming"
    resp = await bob.post("/contacts/requests/alice%23a.test/accept")
    assert resp.json()["state"] == "friend"
    assert resp.json()["identity_key"] == pub(alice.identity)
    assert kinds(await alice.sync()) == ["contact_accepted"]
    resp = await ask(alice, bob)
    assert (resp.status_code, code(resp)) == (409, "already_friends")
    resp = await bob.post("/contacts/requests/alice%23a.test/accept")
    assert (resp.status_code, code(resp)) == (404, "no_request")
    assert (await alice.delete("/contacts/bob%23a.test")).json() == {"ok": True}
    assert (await bob.get("/contacts")).json()["contacts"] == []


async def test_crossed_requests_make_friends(client: httpx.AsyncClient) -> None:
    alice, bob = await register(client, "alice"), await register(client, "bob")
    await ask(alice, bob)
    resp = await ask(bob, alice)
    assert resp.json()["state"] == "friend"


async def test_decline(client: httpx.AsyncClient) -> None:
    alice, bob = await register(client, "alice"), await register(client, "bob")
    await ask(alice, bob)
    assert (await bob.post("/contacts/requests/alice%23a.test/decline")).json() == {"ok": True}
    assert kinds(await alice.sync()) == ["contact_declined"]
    assert (await alice.get("/contacts")).json()["contacts"] == []


async def test_policy_open_delivers(client: httpx.AsyncClient) -> None:
    alice, bob = await register(client, "alice"), await register(client, "bob")
    assert (await bob.get("/policy")).json() == {"strangers": "open"}
    resp = await alice.send("t1", bob)
    assert resp.json()["envelopes"][0]["disposition"] == "queued"
    assert kinds(await bob.sync()) == ["envelope"]


async def test_policy_requests_holds_then_releases_in_order(client: httpx.AsyncClient) -> None:
    alice, bob = await register(client, "alice"), await register(client, "bob")
    assert (await bob.put("/policy", {"strangers": "requests"})).json() == {"strangers": "requests"}
    for i in range(3):
        resp = await alice.send(f"t{i}", bob, body=f"bXNn{i}")
        assert resp.json()["envelopes"][0]["disposition"] == "held"
    assert (await bob.sync())["events"] == []
    view = (await bob.get("/contacts")).json()
    assert view["message_requests"][0]["address"] == "alice#a.test"
    assert view["message_requests"][0]["held_messages"] == 3
    await ask(alice, bob)
    await bob.post("/contacts/requests/alice%23a.test/accept")
    got = await bob.sync()
    bodies = [e["envelope"]["ciphertext"]["body"] for e in got["events"] if e["kind"] == "envelope"]
    assert bodies == ["bXNn0", "bXNn1", "bXNn2"]
    assert (await bob.get("/contacts")).json()["message_requests"] == []
    resp = await alice.send("t9", bob)
    assert resp.json()["envelopes"][0]["disposition"] == "queued"


async def test_answering_a_strangers_held_messages_makes_friends(
    client: httpx.AsyncClient,
) -> None:
    alice, bob = await register(client, "alice"), await register(client, "bob")
    assert (await alice.put("/keys/device-list", alice.device_list(1))).status_code == 200
    await bob.put("/policy", {"strangers": "requests"})
    await alice.send("t1", bob)
    resp = await ask(bob, alice, "sure, let's talk")
    assert resp.json()["state"] == "friend"
    assert resp.json()["identity_key"] == pub(alice.identity)
    assert kinds(await bob.sync()) == ["envelope"]
    assert kinds(await alice.sync()) == ["contact_accepted"]
    view = (await bob.get("/contacts")).json()
    assert view["message_requests"] == []
    assert [(c["address"], c["state"]) for c in view["contacts"]] == [("alice#a.test", "friend")]


async def test_declining_a_message_request_discards_the_held_messages(
    client: httpx.AsyncClient,
) -> None:
    alice, bob = await register(client, "alice"), await register(client, "bob")
    await bob.put("/policy", {"strangers": "requests"})
    await alice.send("t1", bob)
    resp = await bob.post("/contacts/requests/alice%23a.test/decline")
    assert resp.json() == {"ok": True}
    assert (await bob.get("/contacts")).json()["message_requests"] == []
    assert (await bob.sync())["events"] == []
    resp = await bob.post("/contacts/requests/alice%23a.test/decline")
    assert (resp.status_code, code(resp)) == (404, "no_request")


async def test_policy_contacts_only_refuses(client: httpx.AsyncClient, tmp_path: Path) -> None:
    alice, bob = await register(client, "alice"), await register(client, "bob")
    await bob.put("/policy", {"strangers": "contacts-only"})
    before = snapshot(tmp_path)
    resp = await alice.send("t1", bob)
    assert (resp.status_code, code(resp)) == (403, "recipient_refuses")
    assert snapshot(tmp_path) == before
    # Own devices are never subject to policy.
    await alice.put("/policy", {"strangers": "contacts-only"})
    resp = await alice.send("t2", alice)
    assert resp.status_code == 200


async def test_block(client: httpx.AsyncClient, tmp_path: Path) -> None:
    alice, bob = await register(client, "alice"), await register(client, "bob")
    await bob.put("/policy", {"strangers": "requests"})
    await alice.send("held", bob)
    assert (await bob.put("/blocks/alice%23a.test")).json() == {"ok": True}
    view = (await bob.get("/contacts")).json()
    assert view["blocked"] == ["alice#a.test"]
    assert view["message_requests"] == []
    before = snapshot(tmp_path)
    resp = await alice.send("t1", bob)
    assert (resp.status_code, code(resp)) == (403, "recipient_refuses")
    resp = await ask(alice, bob)
    assert (resp.status_code, code(resp)) == (403, "recipient_refuses")
    assert snapshot(tmp_path) == before
    await bob.put("/policy", {"strangers": "open"})
    resp = await alice.send("t2", bob)
    assert (resp.status_code, code(resp)) == (403, "recipient_refuses")
    await bob.delete("/blocks/alice%23a.test")
    assert (await alice.send("t3", bob)).status_code == 200
