from __future__ import annotations

import httpx
from server_kit import register


async def test_health_and_register(client: httpx.AsyncClient) -> None:
    resp = await client.get("/_emsg/v1/health")
    assert resp.json() == {"status": "ok", "domain": "a.test"}
    head = await client.head("/_emsg/v1/health")
    assert (head.status_code, head.content) == (200, b"")
    alice = await register(client, "alice")
    bob = await register(client, "bob")
    resp = await alice.get("/whoami")
    assert resp.json() == {"address": "alice#a.test", "device_id": alice.device_id}
    resp = await alice.send("t1", bob)
    assert resp.status_code == 200, resp.text
    got = await bob.sync()
    assert [e["envelope"]["sender"] for e in got["events"]] == ["alice#a.test"]
