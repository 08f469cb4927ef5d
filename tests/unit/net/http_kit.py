"""A scripted HTTP/1.1 server on loopback (plain or TLS) for tests of the clients
that speak to it: the lean client itself, and federation's lean path."""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass, field
from http import HTTPStatus

import trustme

# A reply written in pieces, the server draining between them.
Pieces = tuple[bytes, ...]


@dataclass
class Script:
    """Answers each request with the next reply; `close_after` closes after that many.

    With `hang_up`, the connection then reads one more request and closes without
    answering it (a server whose idle timer fires as the request arrives)."""

    replies: list[bytes | Pieces]
    close_after: int = 1_000
    hang_up: bool = False
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)
    writers: list[asyncio.StreamWriter] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)


async def serve(script: Script, tls: ssl.SSLContext | None = None) -> tuple[asyncio.Server, int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        script.connections += 1
        script.writers.append(writer)
        served = 0
        try:
            while served < script.close_after:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length")
                    ),
                    0,  # httpx sends none with a GET
                )
                script.requests.append(head + await reader.readexactly(length))
                if not script.replies:
                    await script.done.wait()  # never answers
                    break
                reply = script.replies.pop(0)
                for piece in reply if isinstance(reply, tuple) else (reply,):
                    writer.write(piece)
                    await writer.drain()
                    await asyncio.sleep(0.01 if isinstance(reply, tuple) else 0)
                served += 1
            if script.hang_up:
                await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=tls)
    return server, server.sockets[0].getsockname()[1]


async def stop(server: asyncio.Server, script: Script) -> None:
    """Close the script's connections and the server before the loop ends."""
    script.done.set()
    for writer in script.writers:
        writer.close()
    server.close()
    await server.wait_closed()


def reply(status: int, body: bytes) -> bytes:
    head = f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\ncontent-length: {len(body)}"
    return head.encode() + b"\r\n\r\n" + body


def ok(body: bytes = b'{"ok":true}') -> bytes:
    return reply(200, body)


def parse_request(raw: bytes) -> tuple[str, str, dict[str, str], bytes]:
    """A request the script recorded: method, target, headers (lower-case names), body."""
    head, _, body = raw.partition(b"\r\n\r\n")
    line, *fields = head.decode("latin-1").split("\r\n")
    headers = {}
    for f in fields:
        name, _, value = f.partition(":")
        headers[name.strip().lower()] = value.strip()
    method, target, _ = line.split(" ")
    return method, target, headers, body


def tls_server(ca: trustme.CA, name: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(name).configure_cert(ctx)
    return ctx


def trusting(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    return ctx
