"""The lean HTTP/1.1 client against a scripted server on loopback (plain and TLS),
and the client library's use of it."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable
from typing import Any, Protocol

import httpx
import pytest
import trustme
from tests.unit.net.http_kit import Script, ok, serve, stop, tls_server, trusting

from emsg.client.transport import HttpApi
from emsg.net.http1 import Http1Client


class Start(Protocol):
    """Serve `script` (over TLS with `tls`); a client for it, made with `options`."""

    def __call__(
        self, script: Script, tls: ssl.SSLContext | None = None, **options: Any
    ) -> Awaitable[Http1Client]: ...


@pytest.fixture
async def scripted() -> AsyncIterator[Start]:
    servers: list[asyncio.Server] = []
    clients: list[Http1Client] = []
    scripts: list[Script] = []

    async def start(
        script: Script, tls: ssl.SSLContext | None = None, **options: Any
    ) -> Http1Client:
        server, port = await serve(script, tls)
        servers.append(server)
        scripts.append(script)
        scheme = "https" if tls else "http"
        clients.append(Http1Client(f"{scheme}://127.0.0.1:{port}", timeout=2.0, **options))
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


async def test_an_idle_connection_the_server_closed_is_not_used(scripted: Start) -> None:
    script = Script([ok(b"1"), ok(b"2")], close_after=1)
    client = await scripted(script)
    assert (await client.request("PUT", "/a", {})).content == b"1"
    await asyncio.sleep(0.1)  # the server has closed it by now
    assert (await client.request("PUT", "/b", {})).content == b"2"
    assert script.connections == 2
    assert len(script.requests) == 2  # /b was sent once, on the new connection


async def test_a_request_the_idle_connection_drops_is_retried_once_anew(
    scripted: Start,
) -> None:
    script = Script([ok(b"1"), ok(b"2")], close_after=1, hang_up=True)
    client = await scripted(script)
    assert (await client.request("PUT", "/a", {})).content == b"1"
    assert (await client.request("PUT", "/b", {})).content == b"2"
    assert script.connections == 2
    assert [r.split(b" ")[1] for r in script.requests] == [b"/a", b"/b"]


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


async def test_the_api_sends_a_get_again_when_a_kept_alive_connection_drops_it() -> None:
    """The server closes an idle connection just as the next request arrives: a
    GET goes again on a new connection; a POST is not repeated."""
    script = Script([ok(b'{"n":1}'), ok(b'{"n":2}')], close_after=1, hang_up=True)
    server, port = await serve(script)
    api = HttpApi(f"http://127.0.0.1:{port}", token="tok")
    try:
        assert await api.call("GET", "/a") == {"n": 1}
        assert await api.call("GET", "/b") == {"n": 2}
        assert script.connections == 2
        assert [r.split(b" ")[1] for r in script.requests] == [b"/_emsg/v1/a", b"/_emsg/v1/b"]
        script.replies.append(ok(b'{"n":3}'))
        with pytest.raises(httpx.TransportError):
            await api.call("POST", "/c", {"x": 1})
        assert [r.split(b" ")[1] for r in script.requests][-1] == b"/_emsg/v1/b"
    finally:
        await api.aclose()
        await stop(server, script)


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


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


async def test_tls_to_an_address_for_a_name_with_another_host(
    scripted: Start, ca: trustme.CA
) -> None:
    # As federation does: connect to the address the SSRF guard checked, verify the
    # certificate of the server's name, and send the domain as `Host`.
    script = Script([ok(b"1"), ok(b"2")])
    client = await scripted(
        script, tls_server(ca, "fed.peer.test"),
        server_hostname="fed.peer.test", ssl_context=trusting(ca),
    )  # fmt: skip
    one = await client.request("PUT", "/t/1", {}, b"{}", authority="peer.test")
    two = await client.request("PUT", "/t/2", {}, b"{}", authority="peer.test:8448")
    assert (one.content, two.content) == (b"1", b"2")
    assert script.connections == 1  # the TLS connection is kept alive
    assert script.requests[0].startswith(b"PUT /t/1 HTTP/1.1\r\nHost: peer.test\r\n")
    assert script.requests[1].startswith(b"PUT /t/2 HTTP/1.1\r\nHost: peer.test:8448\r\n")


async def test_tls_refuses_a_certificate_for_another_name_or_ca(
    scripted: Start, ca: trustme.CA
) -> None:
    script = Script([ok(), ok()])
    wrong_name = await scripted(
        script, tls_server(ca, "fed.peer.test"),
        server_hostname="evil.test", ssl_context=trusting(ca),
    )  # fmt: skip
    with pytest.raises(httpx.ConnectError, match="certificate"):
        await wrong_name.request("PUT", "/", {})
    unknown_ca = await scripted(
        script, tls_server(trustme.CA(), "fed.peer.test"),
        server_hostname="fed.peer.test", ssl_context=trusting(ca),
    )  # fmt: skip
    with pytest.raises(httpx.ConnectError, match="certificate"):
        await unknown_ca.request("PUT", "/", {})
    assert script.requests == []


async def test_a_reply_body_over_the_cap_fails(scripted: Start) -> None:
    body = b"0123456789"
    for over in (
        ok(body + b"!"),
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
        b"6\r\n012345\r\n5\r\n6789!\r\n0\r\n\r\n",
        (b"HTTP/1.1 200 OK\r\n\r\n012345", b"6789!"),  # ends when the server closes
    ):
        client = await scripted(Script([over], close_after=1), max_body=len(body))
        with pytest.raises(httpx.RemoteProtocolError, match=r"11 bytes|too large"):
            await client.request("PUT", "/", {})
    at_cap = await scripted(
        Script([ok(body), (b"HTTP/1.1 200 OK\r\n\r\n01234", b"56789")], close_after=2),
        max_body=len(body),
    )
    assert (await at_cap.request("PUT", "/", {})).content == body
    # A body delimited by the close arrives in pieces: all of them are read.
    assert (await at_cap.request("PUT", "/", {})).content == body
