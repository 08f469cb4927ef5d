"""Concurrent sends to one device on PostgreSQL, through a real server process: the
device's stream (and the long-poll sync) delivers every one, none skipped.

On PostgreSQL, transactions run concurrently; without the writer lock one could
commit a lower queue position after a reader had already seen a higher one, and a
reader that acknowledged the higher one lost the lower for good. When `CI` is set
a missing PostgreSQL is a failure, never a skip.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from emsg.testing import ServerProcess

pytestmark = pytest.mark.postgres

DOMAIN = "pgq.test"
SENDERS = 20
EACH = 25


@pytest.fixture
def server(database: str, tmp_path: Path) -> Iterator[ServerProcess]:
    config = tmp_path / "server.toml"
    config.write_text(
        f'database_url = "{database}"\n'
        "[limits]\naccount_rate = 100000\naccount_burst = 100000\n"
        "ip_auth_rate_per_minute = 100000\nip_auth_burst = 100000\n"
    )
    with ServerProcess(DOMAIN, tmp_path / "server", config=config) as proc:
        yield proc


def _b64(n: int) -> str:
    return base64.b64encode(os.urandom(n)).decode().rstrip("=")


async def _register(http: httpx.AsyncClient, local: str) -> dict[str, Any]:
    reply = await http.post(
        "/_emsg/v1/accounts", json={"address": f"{local}#{DOMAIN}", "password": "a long password"}
    )
    assert reply.status_code == 201, reply.text
    session: dict[str, Any] = reply.json()
    return session


async def test_concurrent_sends_to_one_device_all_arrive(server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
        bob = await _register(http, "bob")
        senders = [await _register(http, f"s{i}") for i in range(SENDERS)]
        accepted: set[str] = set()
        streamed: set[str] = set()
        ws = await websockets.connect(
            server.url.replace("http", "ws") + "/_emsg/v1/stream", max_size=None
        )
        await ws.send(json.dumps({"type": "auth", "token": bob["token"], "since": 0}))
        assert json.loads(await ws.recv())["type"] == "ready"

        async def read() -> None:
            # Acknowledge each event as it comes, as a client does: an ack up to a
            # position deletes every event at or below it.
            async for message in ws:
                frames = json.loads(message)
                for frame in frames if isinstance(frames, list) else [frames]:
                    if frame["type"] == "event":
                        streamed.add(frame["event"]["envelope"]["id"])
                        await ws.send(json.dumps({"type": "ack", "pos": frame["event"]["pos"]}))

        async def send(index: int, session: dict[str, Any]) -> None:
            auth = {"Authorization": f"Bearer {session['token']}"}
            for k in range(EACH):
                envelope = {
                    "to": bob["address"],
                    "device_id": bob["device_id"],
                    "ciphertext": {"type": 1, "body": _b64(30), "sender_key": _b64(32)},
                }
                reply = await http.put(
                    f"/_emsg/v1/send/t{index}x{k}", json={"envelopes": [envelope]}, headers=auth
                )
                assert reply.status_code == 200, reply.text
                accepted.add(reply.json()["envelopes"][0]["id"])

        reader = asyncio.create_task(read())
        await asyncio.gather(*(send(i, s) for i, s in enumerate(senders)))
        for _ in range(200):
            if streamed >= accepted:
                break
            await asyncio.sleep(0.1)
        reader.cancel()
        await ws.close()
        assert len(accepted) == SENDERS * EACH
        assert accepted - streamed == set()
