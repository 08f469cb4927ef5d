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
from collections.abc import Callable
from typing import Final

import httpx

from emsg.net.discovery import SrvLookup, srv_lookup, well_known
from emsg.proto.federation import DEFAULT_PORT, Target, parse_server
from emsg.proto.ids import Domain
from emsg.server.federation.transport import TARGET_EXTENSION

log = logging.getLogger("emsg.federation")

MAX_CACHED: Final = 10_000


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
            return parse_server(static, domain.host, plain_http=True)
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
        return await well_known(self._http, domain, {TARGET_EXTENSION: direct})
