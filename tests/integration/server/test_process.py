"""Against a real server process on loopback: timing, streams, signals, crashes."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from server_kit import DOMAIN, User, register
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from emsg.testing import ServerProcess

CONFIG = """
token_ttl = "1d"
[limits]
account_rate = 100000
account_burst = 100000
ip_auth_rate_per_minute = 100000
ip_auth_burst = 100000
"""


def make_server(data: Path) -> ServerProcess:
    config = data.parent / f"{data.name}.toml"
    config.write_text(CONFIG)
    return ServerProcess(DOMAIN, data, config=config)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    proc = make_server(tmp_path / "srv").start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
async def http(server: ServerProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        yield client


def ws_url(server: ServerProcess) -> str:
    return server.url.replace("http://", "ws://") + "/_emsg/v1/stream"


_BUFFERED: dict[int, list[dict[str, Any]]] = {}


async def recv(ws: ClientConnection) -> dict[str, Any]:
    """The next frame: a message holds one frame or a JSON array of them, in order."""
    buffered = _BUFFERED.setdefault(id(ws), [])
    if not buffered:
        message = json.loads(await asyncio.wait_for(ws.recv(), 10))
        buffered.extend(message if isinstance(message, list) else [message])
    return buffered.pop(0)


async def refused(ws: ClientConnection, error: str, close_code: int) -> None:
    """The server answers with an `error` frame of that code, then closes with `close_code`."""
    assert (await recv(ws))["error"]["code"] == error
    with pytest.raises(ConnectionClosed) as info:
        await recv(ws)
    assert info.value.rcvd is not None
    assert info.value.rcvd.code == close_code


async def test_long_poll_wakes_on_send(http: httpx.AsyncClient) -> None:
    alice, bob = await register(http, "alice"), await register(http, "bob")
    poll = asyncio.create_task(bob.sync(wait_ms=20_000))
    await asyncio.sleep(0.3)
    assert not poll.done()
    loop = asyncio.get_running_loop()
    start = loop.time()
    assert (await alice.send("t1", bob)).status_code == 200
    got = await asyncio.wait_for(poll, 10)
    assert loop.time() - start < 2
    assert [e["kind"] for e in got["events"]] == ["envelope"]


async def test_stream_live_and_resume(server: ServerProcess, http: httpx.AsyncClient) -> None:
    alice, bob = await register(http, "alice"), await register(http, "bob")
    await alice.send("t0", bob, body="MA")
    async with connect(ws_url(server)) as ws:
        await ws.send(json.dumps({"type": "auth", "token": bob.token, "since": 0}))
        assert (await recv(ws))["type"] == "ready"
        first = await recv(ws)
        assert first["event"]["envelope"]["ciphertext"]["body"] == "MA"
        await alice.send("t1", bob, body="MQ")
        second = await recv(ws)
        assert second["event"]["envelope"]["ciphertext"]["body"] == "MQ"
        await ws.send(json.dumps({"type": "ack", "pos": first["event"]["pos"]}))
        await ws.send(json.dumps({"type": "ping"}))
        assert (await recv(ws)) == {"type": "pong"}
    await alice.send("t2", bob, body="Mg")
    async with connect(ws_url(server)) as ws:
        await ws.send(json.dumps({"type": "auth", "token": bob.token, "since": 0}))
        assert (await recv(ws))["type"] == "ready"
        bodies = [(await recv(ws))["event"]["envelope"]["ciphertext"]["body"] for _ in range(2)]
        assert bodies == ["MQ", "Mg"]  # exactly from the acked position


async def test_stream_pipelined_sends(server: ServerProcess, http: httpx.AsyncClient) -> None:
    alice, bob = await register(http, "alice"), await register(http, "bob")
    env = {"to": bob.address, "device_id": bob.device_id,
           "ciphertext": {"type": 1, "body": "eA", "sender_key": "A" * 43}}  # fmt: skip
    n = 200
    async with connect(ws_url(server)) as ws:
        await ws.send(json.dumps({"type": "auth", "token": alice.token}))
        assert (await recv(ws))["type"] == "ready"
        for i in range(n):
            await ws.send(json.dumps({"type": "send", "txn_id": f"p{i}", "envelopes": [env]}))
            if i == 100:
                bad = {"type": "send", "txn_id": "bad", "envelopes": [{**env, "to": "x#b..test"}]}
                await ws.send(json.dumps(bad))
        answers = [await recv(ws) for _ in range(n + 1)]
    txns = [a["result"]["txn_id"] if a["type"] == "sent" else a["txn_id"] for a in answers]
    expected = [f"p{i}" for i in range(101)] + ["bad"] + [f"p{i}" for i in range(101, n)]
    assert txns == expected
    assert answers[101]["error"]["code"] == "invalid_address"
    got = await bob.get("/sync", params={"limit": 1000})
    assert len(got.json()["events"]) == n


async def test_stream_acks_survive_a_clean_restart(
    server: ServerProcess, http: httpx.AsyncClient
) -> None:
    # Stream acks are applied in batches; a clean shutdown applies what waits.
    alice, bob = await register(http, "alice"), await register(http, "bob")
    for i, body in enumerate(["MA", "MQ", "Mg"]):
        await alice.send(f"t{i}", bob, body=body)
    async with connect(ws_url(server)) as ws:
        await ws.send(json.dumps({"type": "auth", "token": bob.token, "since": 0}))
        assert (await recv(ws))["type"] == "ready"
        events = [(await recv(ws))["event"] for _ in range(3)]
        await ws.send(json.dumps({"type": "ack", "pos": events[1]["pos"]}))
        await ws.send(json.dumps({"type": "ping"}))
        assert (await recv(ws)) == {"type": "pong"}  # the ack was taken in order
        assert server.stop() == 0
    server.start()
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as again:
        reply = await again.get(
            "/_emsg/v1/sync",
            params={"since": 0, "timeout": 0},
            headers={"Authorization": f"Bearer {bob.token}"},
        )
    assert [e["envelope"]["ciphertext"]["body"] for e in reply.json()["events"]] == ["Mg"]


async def test_stream_frames_travel_in_arrays(
    server: ServerProcess, http: httpx.AsyncClient
) -> None:
    alice, bob = await register(http, "alice"), await register(http, "bob")
    env = {"to": bob.address, "device_id": bob.device_id,
           "ciphertext": {"type": 1, "body": "eA", "sender_key": "A" * 43}}  # fmt: skip
    async with connect(ws_url(server)) as ws:
        await ws.send(json.dumps({"type": "auth", "token": alice.token}))
        assert json.loads(await ws.recv())["type"] == "ready"
        # Several sends in one message: committed together, answered in one message.
        sends = [{"type": "send", "txn_id": f"a{i}", "envelopes": [env]} for i in range(3)]
        await ws.send(json.dumps([*sends, {"type": "ping"}]))
        answers = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert isinstance(answers, list)
        assert [a["result"]["txn_id"] for a in answers] == ["a0", "a1", "a2"]
        assert json.loads(await asyncio.wait_for(ws.recv(), 10)) == {"type": "pong"}
    async with connect(ws_url(server)) as ws:
        await ws.send(json.dumps({"type": "auth", "token": bob.token, "since": 0}))
        assert json.loads(await ws.recv())["type"] == "ready"
        pushed = json.loads(await asyncio.wait_for(ws.recv(), 10))  # queued: one message
        assert [f["type"] for f in pushed] == ["event"] * 3
        positions = [f["event"]["pos"] for f in pushed]
        assert positions == sorted(positions)
    async with connect(ws_url(server)) as ws:
        await ws.send(json.dumps({"type": "auth", "token": alice.token}))
        assert json.loads(await ws.recv())["type"] == "ready"
        await ws.send(json.dumps([]))  # an empty array is not a frame
        await refused(ws, "protocol_violation", 1008)
    async with connect(ws_url(server)) as ws:
        await ws.send(json.dumps([{"type": "auth", "token": alice.token}]))  # auth stands alone
        assert (await recv(ws))["error"]["code"] == "protocol_violation"


async def test_stream_protocol_violations(server: ServerProcess, http: httpx.AsyncClient) -> None:
    alice = await register(http, "alice")
    async with connect(ws_url(server)) as ws:
        await ws.send(json.dumps({"type": "auth", "token": "forged"}))
        await refused(ws, "unauthorized", 4401)
    async with connect(ws_url(server)) as ws:
        await ws.send(json.dumps({"type": "ping"}))
        await refused(ws, "protocol_violation", 1008)
    async with connect(ws_url(server)) as ws:
        await ws.send(json.dumps({"type": "auth", "token": alice.token}))
        assert (await recv(ws))["type"] == "ready"
        await ws.send('{"type": "ping", "type": "ping"}')
        await refused(ws, "protocol_violation", 1008)


async def test_a_bad_send_frame_is_refused_alone_as_put_send_refuses_it(
    server: ServerProcess, http: httpx.AsyncClient
) -> None:
    """Same codes as `PUT /send/{txn_id}` (§8.2), each error frame naming the send it
    refuses, and the connection stays open for the next frame."""
    alice = await register(http, "alice")
    async with connect(ws_url(server)) as ws:
        await ws.send(json.dumps({"type": "auth", "token": alice.token}))
        assert (await recv(ws))["type"] == "ready"
        envelope = {
            "to": alice.address,
            "device_id": alice.device_id,
            "ciphertext": {"type": 1, "body": "AAAA", "sender_key": "A" * 43},
        }
        for txn_id, envelopes, expected in [
            ("a b", [envelope], "invalid_identifier"),
            ("x" * 129, [envelope], "invalid_identifier"),
            ("a b", [], "invalid_request"),  # the body is checked first
            ("fine", [], "invalid_request"),
        ]:
            await ws.send(json.dumps({"type": "send", "txn_id": txn_id, "envelopes": envelopes}))
            frame = await recv(ws)
            assert (frame["type"], frame["txn_id"], frame["error"]["code"]) == (
                "error", txn_id, expected,
            )  # fmt: skip
            reply = await http.put(
                f"/_emsg/v1/send/{txn_id}",
                json={"envelopes": envelopes},
                headers={"Authorization": f"Bearer {alice.token}"},
            )
            assert (reply.status_code, reply.json()["error"]["code"]) == (400, expected)
        await ws.send(json.dumps({"type": "ping"}))
        assert await recv(ws) == {"type": "pong"}


async def test_logout_closes_the_devices_open_stream_at_once(
    server: ServerProcess, http: httpx.AsyncClient
) -> None:
    """As a revocation does (protocol.md §8.2): the stream of the device that logged
    out gets an error frame and 4401, instead of staying open and silent."""
    alice = await register(http, "alice")
    async with connect(ws_url(server)) as ws:
        await ws.send(json.dumps({"type": "auth", "token": alice.token}))
        assert (await recv(ws))["type"] == "ready"
        logout = await http.post(
            "/_emsg/v1/logout", headers={"Authorization": f"Bearer {alice.token}"}
        )
        assert logout.status_code == 200
        await refused(ws, "unauthorized", 4401)


async def test_a_stream_closes_when_its_token_expires(tmp_path: Path) -> None:
    """A stream never outlives its token (protocol.md §8.2): at its expiry the server
    says `token_expired` and closes with 4401, and the client renews it (§4)."""
    config = tmp_path / "short.toml"
    config.write_text(CONFIG.replace('token_ttl = "1d"', 'token_ttl = "3s"'))
    with ServerProcess(DOMAIN, tmp_path / "srv", config=config) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            alice = await register(http, "alice")
            async with connect(ws_url(server)) as ws:
                await ws.send(json.dumps({"type": "auth", "token": alice.token}))
                assert (await recv(ws))["type"] == "ready"
                await refused(ws, "token_expired", 4401)


async def test_sigterm_exits_zero(tmp_path: Path) -> None:
    proc = make_server(tmp_path / "srv").start()
    assert proc.stop() == 0
    assert "Traceback" not in proc.log()


async def test_sigkill_loses_nothing_acknowledged(tmp_path: Path) -> None:
    proc = make_server(tmp_path / "srv").start()
    try:
        async with httpx.AsyncClient(base_url=proc.url, timeout=30) as http:
            alice, bob = await register(http, "alice"), await register(http, "bob")
            ids = []
            for i in range(50):
                resp = await alice.send(f"k{i}", bob)
                assert resp.status_code == 200
                ids.append(resp.json()["envelopes"][0]["id"])
        assert proc._proc is not None
        os.kill(proc._proc.pid, signal.SIGKILL)
        proc.kill()
        proc.start()
        async with httpx.AsyncClient(base_url=proc.url, timeout=30) as http:
            bob2 = User(http, bob.address, bob.device_id, bob.token)
            got = await bob2.sync()
            resp = await http.get("/_emsg/v1/sync", params={"limit": 1000}, headers=bob2.auth)
            assert [e["envelope"]["id"] for e in resp.json()["events"]] == ids
            assert [e["envelope"]["id"] for e in got["events"]] == ids
            # The same transaction again after the crash: the original result.
            again = await dataclasses.replace(alice, client=http).send("k0", bob2)
            assert again.json()["envelopes"][0]["id"] == ids[0]
    finally:
        proc.stop()
