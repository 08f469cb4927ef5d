"""The lean HTTP/1.1 client against a scripted server on loopback."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import httpx
import pytest

from emsg.client.transport import HttpApi
from emsg.net.http1 import Http1Client


@dataclass
class Script:
    """Answers each request with the next reply; `close_after` closes after that many."""

    replies: list[bytes]
    close_after: int = 1_000
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)
    writers: list[asyncio.StreamWriter] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)


async def serve(script: Script) -> tuple[asyncio.Server, int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        script.connections += 1
        script.writers.append(writer)
        served = 0
        try:
            while served < script.close_after:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                )
                script.requests.append(head + await reader.readexactly(length))
                if not script.replies:
                    await script.done.wait()  # never answers
                    break
                writer.write(script.replies.pop(0))
                await writer.drain()
                served += 1
        except asyncio.IncompleteReadError:
            pass
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def stop(server: asyncio.Server, script: Script) -> None:
    """Close the script's connections and the server before the loop ends."""
    script.done.set()
    for writer in script.writers:
        writer.close()
    server.close()
    await server.wait_closed()


def ok(body: bytes = b'{"ok":true}') -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)


Start = Callable[[Script], Awaitable[Http1Client]]


@pytest.fixture
async def scripted() -> AsyncIterator[Start]:
    servers: list[asyncio.Server] = []
    clients: list[Http1Client] = []
    scripts: list[Script] = []

    async def start(script: Script) -> Http1Client:
        server, port = await serve(script)
        servers.append(server)
        scripts.append(script)
        clients.append(Http1Client(f"http://127.0.0.1:{port}", timeout=2.0))
        return clients[-1]

    yield start
    for client in clients:
        await client.aclose()
    for server, script in zip(servers, scripts, strict=True):
        await stop(server, script)
    await asyncio.sleep(0.05)  # the handlers finish before the loop closes


async def test_keeps_the_connection_alive(scripted: Start) -> None:
    script = Script([ok(b"1"), ok(b"2"), ok(b"3")])
    client = await scripted(script)
    got = [await client.request("PUT", f"/x/{i}", {"A": "b"}, b"{}") for i in range(3)]
    assert [r.content for r in got] == [b"1", b"2", b"3"]
    assert script.connections == 1
    assert script.requests[0].startswith(b"PUT /x/0 HTTP/1.1\r\nHost: 127.0.0.1:")
    assert b"A: b\r\n" in script.requests[0]
    assert script.requests[0].endswith(b"Content-Length: 2\r\n\r\n{}")


async def test_a_closed_idle_connection_is_retried_once(scripted: Start) -> None:
    script = Script([ok(b"1"), ok(b"2")], close_after=1)
    client = await scripted(script)
    assert (await client.request("PUT", "/a", {})).content == b"1"
    await asyncio.sleep(0.1)  # the server has closed it by now
    assert (await client.request("PUT", "/b", {})).content == b"2"
    assert script.connections == 2


async def test_chunked_reply_and_error_status(scripted: Start) -> None:
    chunked = (
        b"HTTP/1.1 429 Too Many Requests\r\ntransfer-encoding: chunked\r\nRetry-After: 3\r\n\r\n"
        b'4\r\n{"a"\r\n3;ext=1\r\n:1}\r\n0\r\n\r\n'
    )
    client = await scripted(Script([chunked, ok()]))
    reply = await client.request("PUT", "/c", {})
    assert (reply.status, reply.content, reply.headers["retry-after"]) == (429, b'{"a":1}', "3")
    assert (await client.request("PUT", "/d", {})).status == 200  # still in step


async def test_failures_are_httpx_transport_errors(scripted: Start) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens here once closed
    with pytest.raises(httpx.ConnectError):
        await Http1Client(f"http://127.0.0.1:{port}", timeout=2.0).request("PUT", "/", {})
    silent = await scripted(Script([]))
    silent._timeout = 0.2
    with pytest.raises(httpx.ReadTimeout):
        await silent.request("PUT", "/", {})
    garbage = await scripted(Script([b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n"]))
    with pytest.raises(httpx.RemoteProtocolError):
        await garbage.request("PUT", "/", {})


async def test_the_api_keeps_a_server_path_prefix() -> None:
    script = Script([ok(b'{"txn_id":"t"}')])
    server, port = await serve(script)
    api = HttpApi(f"http://127.0.0.1:{port}/behind/proxy/", token="tok")
    try:
        assert await api.call("PUT", "/send/t", {"envelopes": []}) == {"txn_id": "t"}
    finally:
        await api.aclose()
        await stop(server, script)
        await asyncio.sleep(0.05)
    assert script.requests[0].startswith(b"PUT /behind/proxy/_emsg/v1/send/t HTTP/1.1\r\n")
    assert b"Authorization: Bearer tok\r\n" in script.requests[0]


async def test_a_configured_proxy_keeps_sends_on_httpx(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)

    async def lean(url: str) -> bool:
        api = HttpApi(url)
        try:
            return api._fast is not None
        finally:
            await api.aclose()

    assert await lean("https://im.example.org")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    assert not await lean("https://im.example.org")  # httpx goes through the proxy
    monkeypatch.setenv("NO_PROXY", "im.example.org")
    assert await lean("https://im.example.org")
