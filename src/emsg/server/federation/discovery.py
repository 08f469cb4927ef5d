"""Where a domain's federation API is, in the documented order:

1. the static map of the configuration (`federation.resolve`);
2. the well-known delegation `https://<domain>/.well-known/emsg/server`;
3. DNS SRV `_emsg._tcp.<domain>`;
4. the domain itself on port 443.

Results are cached for a TTL in a bounded LRU; every lookup is bounded in time
and (for the well-known document) in size.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Final

import httpx

from emsg.proto.errors import EmsgError
from emsg.proto.federation import (
    DEFAULT_PORT,
    WELL_KNOWN_PATH,
    Target,
    WellKnownServer,
    parse_server,
)
from emsg.proto.ids import Domain
from emsg.proto.jsoncodec import loads_strict
from emsg.server.federation.transport import TARGET_EXTENSION

log = logging.getLogger("emsg.federation")

MAX_WELL_KNOWN_BYTES: Final = 4096
LOOKUP_TIMEOUT: Final = 5.0
MAX_CACHED: Final = 10_000

SrvLookup = Callable[[str], Awaitable[Target | None]]


async def srv_lookup(domain_host: str) -> Target | None:
    """DNS SRV `_emsg._tcp.<domain>`: lowest priority, then highest weight."""
    import dns.asyncresolver
    import dns.exception

    try:
        answer = await dns.asyncresolver.resolve(
            f"_emsg._tcp.{domain_host}", "SRV", lifetime=LOOKUP_TIMEOUT
        )
    except (dns.exception.DNSException, OSError):
        return None
    records = sorted(answer, key=lambda r: (r.priority, -r.weight))
    if not records:
        return None
    best = records[0]
    host = str(best.target).rstrip(".")
    if not host:
        return None
    return Target(host.lower(), int(best.port), domain_host)


async def read_limited(response: httpx.Response, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > limit:
            raise ValueError(f"response larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


class Resolver:
    def __init__(
        self,
        static: dict[str, str],
        http: httpx.AsyncClient | None,
        monotonic: Callable[[], float],
        ttl: float = 3600.0,
        srv: SrvLookup = srv_lookup,
    ) -> None:
        self._static = static
        self._http = http
        self._monotonic = monotonic
        self._ttl = ttl
        self._srv = srv
        self._cache: OrderedDict[str, tuple[float, Target]] = OrderedDict()
        self._locks: dict[str, asyncio.Lock] = {}

    def set_http(self, http: httpx.AsyncClient) -> None:
        self._http = http

    async def resolve(self, domain: str) -> Target:
        hit = self._cache.get(domain)
        if hit is not None and hit[0] > self._monotonic():
            self._cache.move_to_end(domain)
            return hit[1]
        lock = self._locks.setdefault(domain, asyncio.Lock())
        async with lock:
            hit = self._cache.get(domain)
            if hit is not None and hit[0] > self._monotonic():
                return hit[1]
            target = await self._discover(Domain.parse(domain))
            self._cache[domain] = (self._monotonic() + self._ttl, target)
            if len(self._cache) > MAX_CACHED:
                self._cache.popitem(last=False)
        self._locks.pop(domain, None)
        return target

    async def _discover(self, domain: Domain) -> Target:
        static = self._static.get(str(domain))
        if static is not None:
            return parse_server(static, domain.host)
        if domain.port is not None:  # explicit port (development, LAN)
            return Target(domain.host, domain.port, domain.host)
        delegated = await self._well_known(domain)
        if delegated is not None:
            return delegated
        srv = await self._srv(domain.host)
        if srv is not None:
            return srv
        return Target(domain.host, DEFAULT_PORT, domain.host)

    async def _well_known(self, domain: Domain) -> Target | None:
        if self._http is None:
            return None
        direct = Target(domain.host, DEFAULT_PORT, domain.host)
        try:
            async with self._http.stream(
                "GET",
                f"https://{domain.host}{WELL_KNOWN_PATH}",
                extensions={TARGET_EXTENSION: direct},
                timeout=LOOKUP_TIMEOUT,
                follow_redirects=False,
            ) as response:
                if response.status_code != 200:
                    return None
                raw = await asyncio.wait_for(
                    read_limited(response, MAX_WELL_KNOWN_BYTES), LOOKUP_TIMEOUT
                )
            doc = WellKnownServer.model_validate(loads_strict(raw))
            return parse_server(doc.server, domain.host)
        except (httpx.HTTPError, EmsgError, ValueError, TimeoutError) as exc:
            log.debug("no well-known delegation for %s: %s", domain, exc)
            return None
