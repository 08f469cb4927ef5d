"""The cache of other servers' signing keys: a key is fetched once, kept, and never
silently replaced while it is valid (a peer, or whoever answers in its name, cannot
swap the key behind an id that beta already trusts), but is replaced once it lapsed.

The peer is an httpx mock transport serving a keys document: it stands for the
other server, not for any of our code; the cache runs on a real SQLite database.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from emsg.proto.errors import Unauthorized
from emsg.proto.federation import KEYS_PATH, OldServerKey, ServerKey, ServerKeys
from emsg.server.clock import FakeClock
from emsg.server.federation.auth import MIN_REFETCH_S, RECHECK_S, RemoteKeys
from emsg.server.federation.client import FederationClient
from emsg.server.federation.keys import SigningKeyring, new_key
from emsg.server.storage.sql.uow import open_unit_of_work

DAY_MS = 86_400_000
PEER = "alpha.test"


class Peer:
    """What alpha publishes at its keys endpoint; counts the fetches."""

    def __init__(self) -> None:
        self.keys: list[ServerKey] = []
        self.old_keys: list[OldServerKey] = []
        self.fetches = 0

    def publish(self, key_id: str, valid_until: int) -> str:
        key = new_key(0, 1)
        self.keys = [k for k in self.keys if k.key_id != key_id]
        self.keys.append(
            ServerKey(key_id=key_id, key=key.public_b64, valid_from=0, valid_until=valid_until)
        )
        return key.public_b64

    def handle(self, request: httpx.Request) -> httpx.Response:
        assert request.url.path == KEYS_PATH
        self.fetches += 1
        doc = ServerKeys(server=PEER, keys=self.keys, old_keys=self.old_keys)
        return httpx.Response(200, json=doc.model_dump(mode="json"))


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[tuple[RemoteKeys, Peer, FakeClock]]:
    clock = FakeClock()
    peer = Peer()
    uow = await open_unit_of_work(f"sqlite:///{tmp_path / 'beta.sqlite3'}")
    ring = SigningKeyring.load(tmp_path, clock.now_ms(), 7 * DAY_MS)
    async with httpx.AsyncClient(transport=httpx.MockTransport(peer.handle)) as http:
        client = FederationClient("beta.test", ring, http, clock)
        yield RemoteKeys(uow, client, clock), peer, clock
    await uow.close()


async def test_a_valid_cached_key_is_never_silently_replaced(
    setup: tuple[RemoteKeys, Peer, FakeClock],
) -> None:
    keys, peer, clock = setup
    now = clock.now_ms()
    trusted = peer.publish("ed25519:a", now + 7 * DAY_MS)
    assert (await keys.key(PEER, "ed25519:a", now)).key == trusted
    assert peer.fetches == 1

    # alpha (or an impostor) now serves another key under the same id, next to a
    # new one. Asking for the new one makes beta refetch: it takes "b" but keeps "a".
    clock.advance(MIN_REFETCH_S + 1)
    swapped = peer.publish("ed25519:a", clock.now_ms() + 7 * DAY_MS)
    added = peer.publish("ed25519:b", clock.now_ms() + 7 * DAY_MS)
    assert (await keys.key(PEER, "ed25519:b", clock.now_ms())).key == added
    assert peer.fetches == 2
    assert (await keys.key(PEER, "ed25519:a", clock.now_ms())).key == trusted
    assert swapped != trusted

    # Only once the cached key's validity has passed may the published one replace it.
    clock.advance(7 * 86_400)
    assert (await keys.key(PEER, "ed25519:a", clock.now_ms())).key == swapped
    assert peer.fetches == 3


async def test_a_key_not_valid_when_the_request_was_signed_is_refused(
    setup: tuple[RemoteKeys, Peer, FakeClock],
) -> None:
    keys, peer, clock = setup
    now = clock.now_ms()
    peer.publish("ed25519:a", now + DAY_MS)
    await keys.key(PEER, "ed25519:a", now)
    with pytest.raises(Unauthorized, match="not valid then"):
        await keys.key(PEER, "ed25519:a", now + 2 * DAY_MS)
    with pytest.raises(Unauthorized, match="publishes no key"):
        await keys.key(PEER, "ed25519:zz", now)


async def test_a_key_the_domain_rotated_out_is_refused_within_the_recheck_period(
    setup: tuple[RemoteKeys, Peer, FakeClock],
) -> None:
    """A key still within its cached validity is checked against the domain's keys
    document again after RECHECK_S: once the domain lists it under `old_keys` (it
    ran `rotate-key`, perhaps because the key was stolen), requests signed after
    that are refused, long before the 7 days of validity are over."""
    keys, peer, clock = setup
    now = clock.now_ms()
    old = peer.publish("ed25519:a", now + 7 * DAY_MS)
    assert (await keys.key(PEER, "ed25519:a", now)).key == old
    rotated_at = clock.now_ms() + 1000
    peer.keys = [k for k in peer.keys if k.key_id != "ed25519:a"]
    peer.publish("ed25519:b", now + 14 * DAY_MS)
    peer.old_keys = [OldServerKey(key_id="ed25519:a", key=old, expired_at=rotated_at)]
    clock.advance(60)  # within the period: the cached key is relied on
    assert (await keys.key(PEER, "ed25519:a", clock.now_ms())).key == old
    assert peer.fetches == 1
    clock.advance(RECHECK_S)
    with pytest.raises(Unauthorized, match="not valid then"):
        await keys.key(PEER, "ed25519:a", clock.now_ms())
    assert peer.fetches == 2
