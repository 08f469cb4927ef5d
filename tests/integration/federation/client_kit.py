"""Real E2E clients of real homeserver processes that federate over TLS on loopback:
the helpers the multi-process story tests share."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from emsg.client import Client
from emsg.crypto.keys import FAST_KDF_FOR_TESTS
from emsg.testing.tls import TlsServer

PASSWORD = "correct horse battery staple"
T = TypeVar("T")


@contextmanager
def running(*servers: TlsServer) -> Iterator[None]:
    try:
        for server in servers:
            server.start()
        yield
    finally:
        for server in servers:
            server.stop()


async def register(server: TlsServer, homes: Path, local: str) -> Client:
    return await Client.register(
        homes / f"{local}.{server.domain}",
        f"{local}#{server.domain}",
        PASSWORD,
        server.url,
        kdf=FAST_KDF_FOR_TESTS,
    )


async def eventually(check: Callable[[], Awaitable[T]], limit: float = 30.0) -> T:
    """Federation is asynchronous: ask again until the other server has it. The limit
    only stops a hang; nothing here measures speed."""
    deadline = time.monotonic() + limit
    while True:
        value = await check()
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.1)


async def befriend(a: Client, b: Client) -> None:
    """`a` asks, `b` accepts, and both see the other as a friend."""
    await a.add_contact(str(b.address), f"hello from {a.address.domain}")

    async def asked() -> bool:
        return any(c.address == str(a.address) for c in await b.contact_requests())

    assert await eventually(asked), f"{b.address} never saw the request of {a.address}"
    await b.accept_contact(str(a.address))

    async def friends() -> bool:
        return any(c.address == str(b.address) and c.state == "friend" for c in await a.contacts())

    assert await eventually(friends), f"{a.address} never learned that {b.address} accepted"


async def received(client: Client, want: int, sender: str | None = None) -> list[str]:
    """Fetch until `want` messages (from `sender`, if given) arrived; their texts."""
    got: list[str] = []

    async def enough() -> bool:
        got.extend(m.body for m in await client.fetch() if sender in (None, m.sender))
        return len(got) >= want

    await eventually(enough)
    return got


async def bounced(client: Client, peer: str) -> list[tuple[str, str | None]]:
    """The texts `client` sent to `peer` with their bounce reasons, once one bounced."""

    async def check() -> list[tuple[str, str | None]]:
        await client.fetch()  # bounce notices arrive as events
        sent = [m for m in client.history(peer) if m.direction == "out"]
        return [(m.body, m.bounced) for m in sent] if any(m.bounced for m in sent) else []

    return await eventually(check)


def assert_no_plaintext(servers: Iterable[TlsServer], texts: Iterable[str]) -> None:
    """No server's data folder holds any of `texts` in clear."""
    needles = [t.encode() for t in texts]
    for server in servers:
        for path in server.data.rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                for needle in needles:
                    assert needle not in data, f"{needle!r} in clear in {path}"
