"""Sending: idempotency and all-or-nothing validation (protocol section 7)."""

from __future__ import annotations

from pathlib import Path

import httpx
from server_kit import code, register, snapshot


async def test_same_txn_same_body_same_result(client: httpx.AsyncClient, tmp_path: Path) -> None:
    alice, bob = await register(client, "alice"), await register(client, "bob")
    first = await alice.send("txn-1", bob)
    assert first.status_code == 200
    before = snapshot(tmp_path)
    again = await alice.send("txn-1", bob)
    assert again.json() == first.json()
    assert snapshot(tmp_path) == before
    other = await alice.send("txn-1", bob, body="b3RoZXI")
    assert (other.status_code, code(other)) == (409, "txn_conflict")
    assert snapshot(tmp_path) == before
    assert len((await bob.sync())["events"]) == 1


async def test_one_bad_envelope_stores_nothing(client: httpx.AsyncClient, tmp_path: Path) -> None:
    alice, bob = await register(client, "alice"), await register(client, "bob")
    ghost = await register(client, "ghost")
    await ghost.post("/logout")
    before = snapshot(tmp_path)
    resp = await alice.send("t1", bob, ghost)
    assert (resp.status_code, code(resp)) == (404, "unknown_device")
    ghost.address = "nobody#a.test"
    resp = await alice.send("t1", bob, ghost)
    assert (resp.status_code, code(resp)) == (404, "unknown_recipient")
    ghost.address = "bob#remote.test"
    resp = await alice.send("t1", bob, ghost)
    assert (resp.status_code, code(resp)) == (400, "remote_unsupported")
    ghost.address = "bob#a.test"  # a device of someone else under bob's address
    ghost.device_id = alice.device_id
    resp = await alice.send("t1", bob, ghost)
    assert (resp.status_code, code(resp)) == (404, "unknown_device")
    resp = await alice.put("/send/bad%20txn", {"envelopes": []})
    assert (resp.status_code, code(resp)) == (400, "invalid_request")
    resp = await alice.send("bad txn!", bob)
    assert (resp.status_code, code(resp)) == (400, "invalid_identifier")
    assert snapshot(tmp_path) == before


async def test_sync_acknowledges(client: httpx.AsyncClient) -> None:
    alice, bob = await register(client, "alice"), await register(client, "bob")
    for i in range(3):
        await alice.send(f"t{i}", bob)
    got = await bob.sync()
    assert len(got["events"]) == 3
    pos = [e["pos"] for e in got["events"]]
    assert pos == sorted(pos)
    again = await bob.sync(since=pos[0])
    assert [e["pos"] for e in again["events"]] == pos[1:]
    assert (await bob.sync(since=got["next"]))["events"] == []
    assert (await bob.sync())["events"] == []  # acknowledged events are gone


def _count(metrics: str, route: str, status: int) -> float:
    for line in metrics.splitlines():
        if line.startswith("emsg_http_requests_total{") and (
            f'route="{route}"' in line and f'status="{status}"' in line
        ):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_sends_are_counted_by_route_on_every_path(client: httpx.AsyncClient) -> None:
    """Served in front of FastAPI (a plain send), by the route (a bad token, a body
    that does not validate) or refused before routing (a body over the cap): each
    is counted once, with the route template or as unmatched, as /metrics says."""
    alice, bob = await register(client, "alice"), await register(client, "bob")
    route = "/send/{txn_id}"  # the template as FastAPI's routing names it
    assert (await alice.send("m1", bob)).status_code == 200
    assert (await alice.send("m2", bob)).status_code == 200
    resp = await client.put(
        "/_emsg/v1/send/m3", json={"envelopes": []}, headers={"Authorization": "Bearer nope"}
    )
    assert (resp.status_code, code(resp)) == (401, "unauthorized")
    resp = await alice.put("/send/m4", {"envelopes": "no"})
    assert (resp.status_code, code(resp)) == (400, "invalid_request")
    resp = await alice.put("/send/m5", {"pad": "x" * 2_000_000})
    assert (resp.status_code, code(resp)) == (413, "payload_too_large")
    metrics = (await client.get("/metrics")).text
    assert _count(metrics, route, 200) == 2
    assert _count(metrics, route, 401) == 1
    assert _count(metrics, route, 400) == 1
    assert _count(metrics, "unmatched", 413) == 1
