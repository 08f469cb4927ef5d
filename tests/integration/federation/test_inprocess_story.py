"""Two and three homeservers in one process: friends across domains, messages both
ways, stranger policy and blocks for remote senders, bounces, idempotency."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.integration.federation.fed_kit import Home, homes
from tests.integration.server.server_kit import User, code, pub


async def setup_keys(user: User) -> None:
    resp = await user.post(
        "/keys/upload",
        {"device_keys": user.device_keys(), "one_time_keys": [user.otk("k1"), user.otk("k2")]},
    )
    assert resp.status_code == 200, resp.text
    resp = await user.put("/keys/device-list", user.device_list(1))
    assert resp.status_code == 200, resp.text


async def events(user: User, kind: str | None = None) -> list[dict[str, Any]]:
    body = await user.sync()
    found = [e for e in body["events"] if kind is None or e["kind"] == kind]
    return found


async def befriend(a: User, home_a: Home, b: User, home_b: Home) -> None:
    resp = await a.post("/contacts/requests", {"to": b.address, "identity_key": pub(a.identity)})
    assert resp.status_code == 200, resp.text
    assert resp.json()["state"] == "outgoing"
    await home_a.drain()
    (req,) = await events(b, "contact_request")
    assert req["contact"]["address"] == a.address
    assert req["contact"]["identity_key"] == pub(a.identity)
    resp = await b.post(f"/contacts/requests/{a.address.replace('#', '%23')}/accept")
    assert resp.status_code == 200, resp.text
    await home_b.drain()
    (acc,) = await events(a, "contact_accepted")
    assert acc["contact"]["address"] == b.address
    assert acc["contact"]["identity_key"] == pub(b.identity)


async def test_friends_and_messages_across_domains(tmp_path: Path) -> None:
    async with homes(tmp_path, "alpha.test", "beta.test") as (_routes, (alpha, beta)):
        alice = await alpha.register("alice")
        bob = await beta.register("bob")
        await setup_keys(alice)
        await setup_keys(bob)
        await befriend(alice, alpha, bob, beta)

        # Alice's server fetches Bob's device list and claims his keys over federation.
        resp = await alice.get("/keys/device-list/bob%23beta.test")
        assert resp.status_code == 200, resp.text
        assert resp.json() == model_dump_list(bob)
        resp = await alice.post("/keys/claim", {"address": bob.address})
        assert resp.status_code == 200, resp.text
        (claimed,) = resp.json()["devices"]
        assert claimed["device_keys"]["device_id"] == bob.device_id
        assert claimed["one_time_key"]["key_id"] in ("k1", "k2")

        for i in range(5):
            resp = await alice.send(f"t{i}", bob, body=f"aGVsbG8{i}")
            assert resp.status_code == 200, resp.text
            assert resp.json()["envelopes"][0]["disposition"] == "queued"
        resp = await alice.send("t0", bob, body="aGVsbG80")  # idempotent repeat
        assert resp.status_code == 200
        await alpha.drain()
        got = await events(bob, "envelope")
        assert [e["envelope"]["ciphertext"]["body"] for e in got] == [
            f"aGVsbG8{i}" for i in range(5)
        ]
        assert all(e["envelope"]["sender"] == alice.address for e in got)
        assert all(e["envelope"]["sender_device"] == alice.device_id for e in got)

        resp = await bob.send("r1", alice, body="cmVwbHk")
        assert resp.status_code == 200, resp.text
        await beta.drain()
        (reply,) = await events(alice, "envelope")
        assert reply["envelope"]["sender"] == bob.address


def model_dump_list(user: User) -> dict[str, Any]:
    return user.device_list(1)


async def test_policy_and_blocks_apply_to_remote_senders(tmp_path: Path) -> None:
    async with homes(tmp_path, "alpha.test", "beta.test") as (_routes, (alpha, beta)):
        carol = await alpha.register("carol")
        dave = await alpha.register("dave")
        bob = await beta.register("bob")
        await setup_keys(bob)

        # contacts-only: a stranger's message bounces with recipient_refuses.
        assert (await bob.put("/policy", {"strangers": "contacts-only"})).status_code == 200
        resp = await carol.send("c1", bob)
        assert resp.status_code == 200, resp.text
        envelope_id = resp.json()["envelopes"][0]["id"]
        await alpha.drain()
        assert await events(bob) == []
        (bounce,) = await events(carol, "bounce")
        assert bounce["bounce"]["reason"] == "recipient_refuses"
        assert bounce["bounce"]["destination"] == "beta.test"
        assert [e["id"] for e in bounce["bounce"]["envelopes"]] == [envelope_id]

        # requests: held until Bob answers; then released in order.
        assert (await bob.put("/policy", {"strangers": "requests"})).status_code == 200
        for i in range(3):
            assert (await carol.send(f"h{i}", bob, body=f"aGVsZA{i}")).status_code == 200
        await alpha.drain()
        view = (await bob.get("/contacts")).json()
        assert view["message_requests"][0]["address"] == carol.address
        assert view["message_requests"][0]["held_messages"] == 3
        resp = await bob.post(
            "/contacts/requests", {"to": carol.address, "identity_key": pub(bob.identity)}
        )
        assert resp.status_code == 200, resp.text
        assert resp.json()["state"] == "friend"
        released = await events(bob, "envelope")
        assert [e["envelope"]["ciphertext"]["body"] for e in released] == [
            f"aGVsZA{i}" for i in range(3)
        ]
        await beta.drain()
        # Carol's server never saw a request of hers: Bob's answer reaches her as a
        # request, which she may accept (protocol section 12.4).
        asked = await events(carol, "contact_request")
        assert [e["contact"]["address"] for e in asked] == [bob.address]

        # A block refuses both messages and contact requests from the remote sender.
        assert (await bob.put("/blocks/dave%23alpha.test")).status_code == 200
        resp = await dave.post(
            "/contacts/requests", {"to": bob.address, "identity_key": pub(dave.identity)}
        )
        assert resp.status_code == 200
        assert (await dave.send("d1", bob)).status_code == 200
        await alpha.drain()
        kinds = [
            (e["bounce"]["reason"], "contact" in e["bounce"]) for e in await events(dave, "bounce")
        ]
        assert sorted(kinds) == [("recipient_refuses", False), ("recipient_refuses", True)]
        assert dave.address not in str(await events(bob))
        view = (await dave.get("/contacts")).json()
        assert view["contacts"] == []  # the bounced request is withdrawn


async def test_unknown_device_bounces_and_queue_survives_a_down_peer(tmp_path: Path) -> None:
    async with homes(tmp_path, "alpha.test", "beta.test", "gamma.test") as (
        routes,
        (alpha, beta, gamma),
    ):
        alice = await alpha.register("alice")
        bob = await beta.register("bob")
        gus = await gamma.register("gus")
        routes.down.add("beta.test")
        for i in range(3):
            assert (await alice.send(f"b{i}", bob, body=f"YmV0YQ{i}")).status_code == 200
        # gamma is healthy and gets its message even though beta is down.
        assert (await alice.send("g1", gus)).status_code == 200
        await _until(lambda: _has_envelope(gus))
        assert (await alpha.client.get("/_emsg/v1/health")).status_code == 200
        routes.down.discard("beta.test")
        await alpha.drain()
        got = await events(bob, "envelope")
        assert [e["envelope"]["ciphertext"]["body"] for e in got] == [
            f"YmV0YQ{i}" for i in range(3)
        ]
        stranger = User(alice.client, "nobody#beta.test", "NODEVICE", alice.token)
        resp = await alice.send("x1", stranger)
        assert resp.status_code == 200
        await alpha.drain()
        (bounce,) = await events(alice, "bounce")
        assert bounce["bounce"]["reason"] == "unknown_recipient"


async def _has_envelope(user: User) -> bool:
    return bool(await events(user, "envelope"))


async def _until(check: Any, limit: float = 5.0) -> None:
    import asyncio

    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not await check():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.01)


__all__ = ["code"]
