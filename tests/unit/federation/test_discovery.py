"""Discovery order and bounds: static map, well-known, SRV, then the domain on 443.

httpx's MockTransport stands in for the other domain's web server (what it serves
at /.well-known/emsg/server); the SRV lookup is passed in as a function. The
resolver under test is the real one.
"""

from __future__ import annotations

import json

import httpx
import pytest

from emsg.net.discovery import MAX_WELL_KNOWN_BYTES
from emsg.proto.federation import WELL_KNOWN_PATH, Target
from emsg.server.federation.discovery import Resolver


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Web:
    """What the domains' web servers answer, and how often they were asked."""

    def __init__(self, answers: dict[str, httpx.Response]) -> None:
        self.answers = answers
        self.requests: list[str] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(f"{request.url.host}{request.url.path}")
        return self.answers.get(request.url.host, httpx.Response(404))


def resolver(
    web: Web, srv: dict[str, Target] | None = None, clock: Clock | None = None, **static: str
) -> Resolver:
    async def srv_lookup(host: str) -> Target | None:
        return (srv or {}).get(host)

    http = httpx.AsyncClient(transport=httpx.MockTransport(web.handle))
    return Resolver(
        {k.replace("_", "."): v for k, v in static.items()},
        http,
        clock or Clock(),
        ttl=60,
        srv=srv_lookup,
    )


def well_known(server: str) -> httpx.Response:
    return httpx.Response(200, content=json.dumps({"server": server}).encode())


async def test_static_map_comes_first() -> None:
    web = Web({"beta.example": well_known("elsewhere.example:8448")})
    target = await resolver(web, beta_example="https://127.0.0.1:8442").resolve("beta.example")
    assert (target.host, target.port) == ("127.0.0.1", 8442)
    assert target.tls_name == "beta.example"  # an IP literal: the certificate names the domain
    assert web.requests == []


async def test_well_known_delegation() -> None:
    web = Web({"beta.example": well_known("fed.beta.example:8448")})
    target = await resolver(web).resolve("beta.example")
    assert (target.host, target.port, target.tls_name) == (
        "fed.beta.example",
        8448,
        "fed.beta.example",
    )
    assert web.requests == [f"beta.example{WELL_KNOWN_PATH}"]


async def test_srv_when_no_well_known() -> None:
    srv = {"beta.example": Target("srv.beta.example", 9000, "beta.example")}
    target = await resolver(Web({}), srv).resolve("beta.example")
    assert (target.host, target.port) == ("srv.beta.example", 9000)


async def test_the_domain_itself_on_443_last() -> None:
    target = await resolver(Web({})).resolve("beta.example")
    assert (target.host, target.port, target.tls_name) == ("beta.example", 443, "beta.example")


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(200, content=b"{" + b" " * (MAX_WELL_KNOWN_BYTES + 10) + b"}"),  # too big
        httpx.Response(200, content=b'{"server": "a", "server": "b"}'),  # duplicate key
        httpx.Response(200, content=b'{"server": "not a host!"}'),
        httpx.Response(301, headers={"location": "https://evil.example/x"}),  # not followed
        well_known("http://fed.beta.example:8448"),  # no downgrade to plain text
        httpx.Response(500),
    ],
)
async def test_a_bad_well_known_falls_through(answer: httpx.Response) -> None:
    srv = {"beta.example": Target("srv.beta.example", 9000, "beta.example")}
    web = Web({"beta.example": answer})
    target = await resolver(web, srv).resolve("beta.example")
    assert (target.host, target.port) == ("srv.beta.example", 9000)
    assert all("evil" not in r for r in web.requests)


async def test_results_are_cached_for_the_ttl() -> None:
    web = Web({"beta.example": well_known("fed.beta.example:8448")})
    clock = Clock()
    subject = resolver(web, clock=clock)
    await subject.resolve("beta.example")
    await subject.resolve("beta.example")
    assert len(web.requests) == 1
    clock.now += 61
    await subject.resolve("beta.example")
    assert len(web.requests) == 2
