"""Where a client finds its homeserver when no `--server` names it (protocol.md §12.1).

httpx's MockTransport stands in for the domain's web server (what it serves at
/.well-known/emsg/server) and the SRV lookup is passed in as a function, as in the
server's discovery tests; `homeserver_url` is the real one.
"""

from __future__ import annotations

import json

import httpx
import pytest

from emsg.client.discovery import homeserver_url
from emsg.proto.federation import WELL_KNOWN_PATH, Target
from emsg.proto.ids import Domain


def web(answers: dict[str, httpx.Response], asked: list[str]) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        asked.append(f"{request.url.scheme}://{request.url.host}{request.url.path}")
        return answers.get(request.url.host, httpx.Response(404))

    return httpx.MockTransport(handle)


def delegation(server: str) -> httpx.Response:
    return httpx.Response(200, content=json.dumps({"server": server}).encode())


async def no_srv(_host: str) -> Target | None:
    return None


async def test_the_well_known_delegation_names_the_server() -> None:
    asked: list[str] = []
    transport = web({"example.org": delegation("im.example.org")}, asked)
    url = await homeserver_url(Domain.parse("example.org"), transport=transport, srv=no_srv)
    assert url == "https://im.example.org"
    assert asked == [f"https://example.org{WELL_KNOWN_PATH}"]
    other_port = web({"example.org": delegation("im.example.org:8448")}, [])
    url = await homeserver_url(Domain.parse("example.org"), transport=other_port, srv=no_srv)
    assert url == "https://im.example.org:8448"


async def test_srv_then_the_domain_itself() -> None:
    async def srv(host: str) -> Target | None:
        return Target("chat.example.org", 9443, host) if host == "example.org" else None

    nothing = web({}, [])
    assert await homeserver_url(Domain.parse("example.org"), transport=nothing, srv=srv) == (
        "https://chat.example.org:9443"
    )
    assert await homeserver_url(Domain.parse("other.org"), transport=nothing, srv=srv) == (
        "https://other.org"
    )


async def test_a_port_in_the_address_names_the_server_directly() -> None:
    asked: list[str] = []
    url = await homeserver_url(Domain.parse("localhost:8448"), transport=web({}, asked), srv=no_srv)
    assert url == "https://localhost:8448"
    assert asked == []


@pytest.mark.parametrize(
    "answer",
    [
        delegation("http://im.example.org"),  # no downgrade to plain text
        delegation("not a host!"),
        httpx.Response(200, content=b'{"server": "a", "server": "b"}'),  # duplicate key
        httpx.Response(200, content=b"{" + b" " * 5000 + b"}"),  # over 4 KiB
        httpx.Response(302, headers={"location": "https://evil.example/x"}),  # not followed
        httpx.Response(500),
    ],
)
async def test_a_bad_delegation_is_no_delegation(answer: httpx.Response) -> None:
    asked: list[str] = []
    transport = web({"example.org": answer}, asked)
    url = await homeserver_url(Domain.parse("example.org"), transport=transport, srv=no_srv)
    assert url == "https://example.org"
    assert all("evil" not in a for a in asked)
