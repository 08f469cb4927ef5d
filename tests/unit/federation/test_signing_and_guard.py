"""The RFC 9421 profile, the signing keyring, and the SSRF-guarded transport (with
the lean keep-alive path that carries transactions)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
import trustme
from tests.unit.net.http_kit import (
    Script,
    ok,
    parse_request,
    reply,
    serve,
    stop,
    tls_server,
    trusting,
)

from emsg.proto.errors import Forbidden, RemoteUnavailable, Unauthorized
from emsg.proto.federation import FEDERATION_PREFIX, Target
from emsg.server.clock import FakeClock
from emsg.server.federation import signing
from emsg.server.federation import transport as transport_module
from emsg.server.federation.client import FederationClient
from emsg.server.federation.keys import SigningKeyring
from emsg.server.federation.transport import (
    TARGET_EXTENSION,
    GuardedTransport,
    Refused,
    ssl_context,
)

NOW = 1_700_000_000_000
DAY = 86_400_000


def _signed(ring: SigningKeyring, url: str, body: bytes) -> httpx.Request:
    request = httpx.Request("PUT", url, content=body, headers={"content-type": "application/json"})
    signing.sign(request, body, "alpha.test", ring.current(NOW), NOW // 1000)
    return request


def test_sign_and_verify_and_every_tampering_fails(tmp_path: Path) -> None:
    ring = SigningKeyring.load(tmp_path, NOW, 7 * DAY)
    public = ring.current(NOW).private.public_key()
    body = b'{"a":1}'
    request = _signed(ring, "https://beta.test/_emsg/v1/federation/send/t1", body)
    signing.verify(request, body, public)
    sig = signing.read_input(request.headers)
    assert sig.origin == "alpha.test"
    assert sig.key_id == ring.current(NOW).key_id
    assert sig.created == NOW // 1000
    assert len(sig.nonce) >= 16

    fed = "/_emsg/v1/federation/send"
    tampered = [
        httpx.Request("PUT", f"https://beta.test{fed}/t2", headers=request.headers),
        httpx.Request("PUT", f"https://gamma.test{fed}/t1", headers=request.headers),
        httpx.Request("POST", f"https://beta.test{fed}/t1", headers=request.headers),
        httpx.Request("PUT", f"https://beta.test{fed}/t1?x=1", headers=request.headers),
    ]
    for other in tampered:
        with pytest.raises(Unauthorized):
            signing.verify(other, body, public)
    with pytest.raises(Unauthorized):
        signing.verify(request, b'{"a":2}', public)
    flipped = request.headers["signature"].replace("emsg=:", "emsg=:A", 1).replace("A", "B", 1)
    bad = httpx.Request("PUT", str(request.url), headers={**request.headers, "signature": flipped})
    with pytest.raises(Unauthorized):
        signing.verify(bad, body, public)
    other_ring = SigningKeyring.load(tmp_path / "other", NOW, 7 * DAY)
    with pytest.raises(Unauthorized):
        signing.verify(request, body, other_ring.current(NOW).private.public_key())


def test_unsigned_request_is_unauthorized() -> None:
    with pytest.raises(Unauthorized):
        signing.read_input(httpx.Headers({}))


def test_keyring_persists_rotates_and_keeps_old_keys(tmp_path: Path) -> None:
    ring = SigningKeyring.load(tmp_path, NOW, 7 * DAY)
    first = ring.current(NOW)
    assert (tmp_path / "federation" / "signing_keys.json").stat().st_mode & 0o777 == 0o600
    again = SigningKeyring.load(tmp_path, NOW + 1, 7 * DAY)
    assert again.current(NOW + 1).key_id == first.key_id
    fresh = again.rotate(NOW + DAY)
    doc = again.document("alpha.test", NOW + DAY)
    assert [k.key_id for k in doc.keys] == [fresh.key_id]
    assert [k.key_id for k in doc.old_keys] == [first.key_id]
    assert doc.old_keys[0].expired_at == NOW + DAY
    # The current key's validity is extended before it lapses.
    later = again.document("alpha.test", NOW + 5 * DAY)
    assert later.keys[0].valid_until == NOW + 12 * DAY
    stored = json.loads((tmp_path / "federation" / "signing_keys.json").read_text())
    assert len(stored["keys"]) == 2


class StaticResolver:
    """Every domain is served at `target`."""

    def __init__(self, target: Target) -> None:
        self.target = target

    async def resolve(self, domain: str) -> Target:
        return self.target


async def test_guard_refuses_loopback_and_never_connects(
    unused_tcp_port: int, tmp_path: Path
) -> None:
    connections = 0

    async def canary(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        writer.close()

    server = await asyncio.start_server(canary, "127.0.0.1", unused_tcp_port)
    transport = GuardedTransport(None, ssl_context(None), allow_private=False)
    ring = SigningKeyring.load(tmp_path, NOW, 7 * DAY)
    async with server, httpx.AsyncClient(transport=transport) as http:
        fed = FederationClient("alpha.test", ring, http, FakeClock(NOW), lean=transport)
        # Literal addresses are checked without a lookup; names after one.
        for host in ("127.0.0.1", "::1", "::ffff:127.0.0.1", "10.1.2.3", "localhost"):
            target = Target(host, unused_tcp_port, "evil.test")
            with pytest.raises(RemoteUnavailable, match="refusing"):
                await http.get("https://evil.test/x", extensions={TARGET_EXTENSION: target})
            # A transaction takes the lean path: the same guard stands before it.
            transport.set_resolver(StaticResolver(target))
            with pytest.raises(Refused):
                await fed.request("PUT", "evil.test", f"{SEND}/t1", {"events": []})
    assert connections == 0


SEND = f"{FEDERATION_PREFIX}/send"


async def test_transactions_take_a_kept_alive_lean_connection(tmp_path: Path) -> None:
    ca = trustme.CA()
    done = b'{"results":[]}'
    refused = b'{"error":{"code":"forbidden","message":"no"}}'
    peer = Script([ok(done), ok(done), reply(500, b""), reply(403, refused), ok(b"{"), ok(b"{}")])
    server, port = await serve(peer, tls_server(ca, "fed.beta.test"))
    client_ctx = trusting(ca)
    ring = SigningKeyring.load(tmp_path, NOW, 7 * DAY)
    resolver = StaticResolver(Target("127.0.0.1", port, "fed.beta.test"))
    transport = GuardedTransport(resolver, client_ctx, allow_private=True)
    http = httpx.AsyncClient(transport=transport)
    fed = FederationClient("alpha.test", ring, http, FakeClock(NOW), lean=transport)
    try:
        for txn in ("t1", "t2"):
            answer = await fed.request("PUT", "beta.test", f"{SEND}/{txn}", {"events": []})
            assert answer == {"results": []}
        assert peer.connections == 1  # one TLS connection, kept alive
        assert not transport._inner  # httpx was never asked
        with pytest.raises(RemoteUnavailable, match="500"):
            await fed.request("PUT", "beta.test", f"{SEND}/t3", {"events": []})
        with pytest.raises(Forbidden):
            await fed.request("PUT", "beta.test", f"{SEND}/t4", {"events": []})
        with pytest.raises(RemoteUnavailable, match="malformed"):
            await fed.request("PUT", "beta.test", f"{SEND}/t5", {"events": []})
        # Other requests stay on httpx, to the same checked address.
        assert await fed.request("GET", "beta.test", f"{FEDERATION_PREFIX}/device-list/x") == {}
        assert transport._inner
    finally:
        await http.aclose()  # closes the transport, the lean connections with it
        await stop(server, peer)
    assert not transport._lean
    # The peer received what was signed: `Host` is the domain, and it verifies.
    public = ring.current(NOW).private.public_key()
    for method, target, headers, body in map(parse_request, peer.requests[:2]):
        assert (method, headers["host"]) == ("PUT", "beta.test")
        assert "accept-encoding" not in headers  # the lean client decodes no gzip
        received = httpx.Request(method, f"https://beta.test{target}", headers=headers)
        signing.verify(received, body, public)


@pytest.fixture
def unused_tcp_port() -> int:
    from emsg.testing.process import free_port

    return free_port()


async def test_pools_keep_the_most_recently_used_and_close_the_rest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(transport_module, "_MAX_TRANSPORTS", 2)
    transport = GuardedTransport(None, ssl_context(None), allow_private=True)
    a, b, c = (("127.0.0.1", port, "x.test", "https") for port in (1, 2, 3))
    first = transport._lean_client(a)
    transport._lean_client(b)
    assert transport._lean_client(a) is first  # used again: now the most recent
    transport._lean_client(c)  # evicts b, the least recently used
    assert list(transport._lean) == [a, c]
    inner = transport._transport(a)
    assert transport._transport(a) is inner
    await asyncio.gather(*transport._closing)
    await transport.aclose()
    assert not transport._lean
    assert not transport._inner
