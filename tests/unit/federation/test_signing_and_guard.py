"""The RFC 9421 profile, the signing keyring, and the SSRF-guarded transport."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest

from emsg.proto.errors import RemoteUnavailable, Unauthorized
from emsg.proto.federation import Target
from emsg.server.federation import signing
from emsg.server.federation.keys import SigningKeyring
from emsg.server.federation.transport import TARGET_EXTENSION, GuardedTransport, ssl_context

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


async def test_guard_refuses_loopback_and_never_connects(unused_tcp_port: int) -> None:
    connections = 0

    async def canary(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        writer.close()

    server = await asyncio.start_server(canary, "127.0.0.1", unused_tcp_port)
    transport = GuardedTransport(None, ssl_context(None), allow_private=False)
    async with server, httpx.AsyncClient(transport=transport) as http:
        # Literal addresses are checked without a lookup; names after one.
        for host in ("127.0.0.1", "::1", "::ffff:127.0.0.1", "10.1.2.3", "localhost"):
            target = Target(host, unused_tcp_port, "evil.test")
            with pytest.raises(RemoteUnavailable, match="refusing"):
                await http.get("https://evil.test/x", extensions={TARGET_EXTENSION: target})
    assert connections == 0


@pytest.fixture
def unused_tcp_port() -> int:
    from emsg.testing.process import free_port

    return free_port()
