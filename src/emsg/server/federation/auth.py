"""Who sent a federation request: remote keys, freshness, replay and address checks.

A request is accepted only if its `emsg` signature verifies under a key the
origin publishes (fetched over TLS, cached, never silently replaced while
valid), was created at most 300 s ago (and not in the future), carries a nonce
never seen before, and is addressed to this server's domain. Anything else is
`401 unauthorized`, decided before the request can change anything.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Final

import httpx

from emsg.proto import signing as proto_signing
from emsg.proto.errors import EmsgError, InvalidRequest, Unauthorized
from emsg.proto.federation import SIGNATURE_MAX_AGE_S, ServerKeys
from emsg.server.clock import Clock
from emsg.server.federation import signing
from emsg.server.federation.client import FederationClient
from emsg.server.federation.ports import RemoteKey, fed
from emsg.server.services.common import parse_domain
from emsg.server.storage.ports import Tx, UnitOfWork

log = logging.getLogger("emsg.federation")

FUTURE_SKEW_S: Final = 30
MIN_REFETCH_S: Final = 10.0
# How long this process trusts its in-memory copy of the key cache before it asks
# the database again (another instance sharing it may have fetched newer keys).
MEMORY_TTL_S: Final = 60.0
# How long a domain's keys document is relied on before it is fetched again, even
# for a key that is still within its validity: that is how a receiver learns that
# the domain rotated a key out (`old_keys`), which may have been stolen.
RECHECK_S: Final = 3600.0


@dataclass(frozen=True, slots=True)
class Signed:
    """A request whose signature verified: who sent it, and its nonce, which the
    caller spends in the same transaction as the request's effects."""

    origin: str
    nonce: str


class RemoteKeys:
    """Other servers' signing keys, cached in the database."""

    def __init__(self, uow: UnitOfWork, client: FederationClient, clock: Clock) -> None:
        self._uow = uow
        self._client = client
        self._clock = clock
        self._last_fetch: dict[str, float] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        # domain -> (when read, the database's keys): saves a read per request.
        self._memory: dict[str, tuple[float, dict[str, RemoteKey]]] = {}

    async def _cached(self, domain: str) -> dict[str, RemoteKey]:
        now_s = self._clock.monotonic()
        hit = self._memory.get(domain)
        if hit is not None and now_s - hit[0] < MEMORY_TTL_S:
            return hit[1]
        async with self._uow.read() as tx:
            keys = await fed(tx).server_keys.get(domain)
        if len(self._memory) >= 1024:
            self._memory.clear()  # bounded; refilled from the database on demand
        self._memory[domain] = (now_s, keys)
        return keys

    async def key(self, domain: str, key_id: str, created_ms: int) -> RemoteKey:
        key = (await self._cached(domain)).get(key_id)
        checked = self._last_fetch.get(domain)
        due = checked is None or self._clock.monotonic() - checked >= RECHECK_S
        if key is None or not key.usable_at(created_ms) or due:
            await self._refresh(domain)
            key = (await self._cached(domain)).get(key_id)
        if key is None:
            raise Unauthorized(f"{domain} publishes no key {key_id}")
        if not key.usable_at(created_ms):
            raise Unauthorized(f"the key {key_id} of {domain} was not valid then")
        return key

    async def _refresh(self, domain: str) -> None:
        lock = self._locks.setdefault(domain, asyncio.Lock())
        async with lock:
            now_s = self._clock.monotonic()
            if now_s - self._last_fetch.get(domain, -1e9) < MIN_REFETCH_S:
                return
            self._last_fetch[domain] = now_s
            try:
                doc = ServerKeys.model_validate(await self._client.fetch_keys(domain))
            except (EmsgError, ValueError) as exc:
                log.warning("cannot fetch the keys of %s: %s", domain, exc)
                return
            if doc.server != domain:
                log.warning("%s published keys for %s; ignored", domain, doc.server)
                return
            await self._merge(domain, doc)

    async def _merge(self, domain: str, doc: ServerKeys) -> None:
        now = self._clock.now_ms()
        fresh = [RemoteKey(domain, k.key_id, k.key, k.valid_until, None) for k in doc.keys]
        fresh += [
            RemoteKey(domain, k.key_id, k.key, k.expired_at, k.expired_at) for k in doc.old_keys
        ]
        async with self._uow.write() as tx:
            cached = await fed(tx).server_keys.get(domain)
            accepted = []
            for key in fresh:
                old = cached.get(key.key_id)
                if old is not None and old.key != key.key and old.usable_at(now):
                    log.warning(
                        "%s now publishes a different key under %s while the cached one "
                        "is valid until %d: refused", domain, key.key_id, old.valid_until,
                    )  # fmt: skip
                    continue
                accepted.append(key)
            await fed(tx).server_keys.put(accepted, now)
        self._memory.pop(domain, None)


class Authenticator:
    def __init__(self, domain: str, uow: UnitOfWork, keys: RemoteKeys, clock: Clock) -> None:
        self._domain = domain
        self._uow = uow
        self._keys = keys
        self._clock = clock

    async def origin_of(self, request: httpx.Request, body: bytes) -> str:
        """The verified origin domain of a signed request, or `Unauthorized`; its
        nonce is spent here, in a transaction of its own."""
        signed = await self.verify(request, body)
        async with self._uow.write() as tx:
            await spend_nonce(tx, signed, self._clock.now_ms())
        return signed.origin

    async def verify(self, request: httpx.Request, body: bytes) -> Signed:
        """Check everything but the nonce, which the caller must spend with
        `spend_nonce` in the transaction that applies the request, before anything
        else in it. (One commit instead of two on the hot path of `send`.)"""
        if request.headers.get("host", "").lower() != self._domain:
            raise Unauthorized(f"this server is {self._domain}; the request is addressed elsewhere")
        sig = signing.read_input(request.headers)
        try:
            origin = str(parse_domain(sig.origin))
        except EmsgError:
            raise Unauthorized("keyid names no valid domain") from None
        if origin != sig.origin or origin == self._domain:
            raise Unauthorized("keyid names no valid peer domain")
        now_s = self._clock.now_ms() // 1000
        if sig.created < now_s - SIGNATURE_MAX_AGE_S or sig.created > now_s + FUTURE_SKEW_S:
            raise Unauthorized("the signature is stale or from the future")
        key = await self._keys.key(origin, sig.key_id, sig.created * 1000)
        try:
            public = proto_signing.ed25519_public_key(key.key)
        except InvalidRequest:
            raise Unauthorized("the origin's key is malformed") from None
        signing.verify(request, body, public)
        return Signed(origin, f"{origin}/{sig.nonce}")


async def spend_nonce(tx: Tx, signed: Signed, now_ms: int) -> None:
    """Record the request's nonce; `Unauthorized` (and the transaction rolls back)
    if it was seen before: a replay."""
    if not await fed(tx).fed_inbox.use_nonce(signed.nonce, now_ms // 1000 * 1000):
        raise Unauthorized("replayed request (nonce seen before)")
