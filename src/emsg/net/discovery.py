"""Where a domain's homeserver is (protocol.md §12.1), for servers and clients alike:
the well-known delegation `https://<domain>/.well-known/emsg/server` and DNS SRV
`_emsg._tcp.<domain>`. Every lookup is bounded in time, and the document in size;
a lookup that fails in any way finds nothing, so the caller tries the next step.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

import httpx

from emsg.proto.errors import EmsgError
from emsg.proto.federation import WELL_KNOWN_PATH, Target, WellKnownServer, parse_server
from emsg.proto.ids import Domain
from emsg.proto.jsoncodec import loads_strict

log = logging.getLogger("emsg.discovery")

MAX_WELL_KNOWN_BYTES: Final = 4096
LOOKUP_TIMEOUT: Final = 5.0

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


async def well_known(
    http: httpx.AsyncClient, domain: Domain, extensions: dict[str, Any] | None = None
) -> Target | None:
    """The delegation the domain's web server publishes, if it publishes a valid one.

    Redirects are not followed, and only an `https://` location counts: a domain
    cannot downgrade its server to plain text. `extensions` go to the request (the
    homeserver's transport takes the address its SSRF guard checked from there).
    """
    try:
        async with http.stream(
            "GET",
            f"https://{domain.host}{WELL_KNOWN_PATH}",
            extensions=extensions,
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
