"""The WebSocket stream's limits, against a real server process."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from emsg.testing import ServerProcess

DOMAIN = "limits.test"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    config = tmp_path_factory.mktemp("config") / "server.toml"
    config.write_text("[limits]\nws_max_frame = 65536\n")
    with ServerProcess(DOMAIN, tmp_path_factory.mktemp("server"), config=config) as proc:
        yield proc


def token(server: ServerProcess, local: str) -> str:
    reply = httpx.post(
        f"{server.url}/_emsg/v1/accounts",
        json={"address": f"{local}#{DOMAIN}", "password": "long enough"},
    )
    assert reply.status_code == 201, reply.text
    return str(reply.json()["token"])


def stream_url(server: ServerProcess) -> str:
    return server.url.replace("http://", "ws://") + "/_emsg/v1/stream"


async def test_oversized_frame_closes_with_1009(server: ServerProcess, tmp_path: Path) -> None:
    async with websockets.connect(stream_url(server), max_size=None) as ws:
        await ws.send(json.dumps({"type": "auth", "token": token(server, "big"), "since": 0}))
        assert json.loads(await ws.recv())["type"] == "ready"
        await ws.send(json.dumps({"type": "ping", "pad": "x" * 100_000}))
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1009


async def test_first_frame_must_authenticate(server: ServerProcess) -> None:
    async with websockets.connect(stream_url(server)) as ws:
        await ws.send(json.dumps({"type": "ping"}))
        frame = json.loads(await ws.recv())
        assert frame["type"] == "error"
        assert frame["error"]["code"] == "protocol_violation"
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1008


async def test_forged_token_closes_with_4401(server: ServerProcess) -> None:
    async with websockets.connect(stream_url(server)) as ws:
        await ws.send(json.dumps({"type": "auth", "token": "forged-token", "since": 0}))
        frame = json.loads(await ws.recv())
        assert (frame["type"], frame["error"]["code"]) == ("error", "unauthorized")
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4401
