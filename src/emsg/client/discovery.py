"""Where the homeserver of an address's domain is, when no `--server` names it.

The order of protocol.md §12.1 without a server's static map: an address whose
domain carries a port (`alice#localhost:8448`) names its server directly; else the
well-known delegation `https://<domain>/.well-known/emsg/server`, then DNS SRV
`_emsg._tcp.<domain>`, then the domain itself on 443. So `alice#example.org` finds
a server that runs at `im.example.org`, as people expect from e-mail.
"""

from __future__ import annotations

import httpx

from emsg.net.discovery import LOOKUP_TIMEOUT, SrvLookup, srv_lookup, well_known
from emsg.proto.federation import DEFAULT_PORT, Target
from emsg.proto.ids import Domain


async def homeserver_url(
    domain: Domain,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    srv: SrvLookup = srv_lookup,
) -> str:
    """The base URL of `domain`'s homeserver (`https://host[:port]`)."""
    if domain.port is not None:
        return _url(Target(domain.host, domain.port, domain.host))
    async with httpx.AsyncClient(transport=transport, timeout=LOOKUP_TIMEOUT) as http:
        found = await well_known(http, domain)
    if found is None:
        found = await srv(domain.host)
    return _url(found or Target(domain.host, DEFAULT_PORT, domain.host))


def _url(target: Target) -> str:
    # Every target found here is https; the URL the profile keeps omits its port.
    return target.base_url.removesuffix(f":{DEFAULT_PORT}")
