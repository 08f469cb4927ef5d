"""A small keep-alive HTTP/1.1 client for the client's hottest request, `PUT /send`.

httpx spends about 0.7 ms of CPU on a request (request building, cookies, auth and
redirect hooks, httpcore's connection pool), several times what the server spends
committing a message. A send is one small JSON request and one small JSON reply
on a connection to one server, so this speaks exactly that and nothing more:
Content-Length request bodies, Content-Length or chunked replies, keep-alive, TLS
with the default context (which honours SSL_CERT_FILE, like httpx), and a timeout
per request. It is used for idempotent requests only: a kept-alive connection
the server closed in the meantime is retried once on a new one. Failures raise
httpx's TransportError subclasses, so callers treat both clients alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

import httpx

MAX_HEAD: Final = 64 * 1024
MAX_BODY: Final = 16 * 1024 * 1024
MAX_IDLE: Final = 8


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    headers: dict[str, str]  # names in lower case
    content: bytes


class _Connection:
    __slots__ = ("reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    def close(self) -> None:
        self.writer.close()

    async def exchange(self, request: bytes, method: str) -> tuple[Reply, bool]:
        """Write one request and read its reply; and whether the connection stays open."""
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        version, _, rest = lines[0].partition(" ")
        status = int(rest[:3])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            content = b""
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            content = await self._chunked()
        elif "content-length" in headers:
            length = int(headers["content-length"])
            if not 0 <= length <= MAX_BODY:
                raise ValueError(f"reply body of {length} bytes")
            content = await self.reader.readexactly(length)
        else:
            content = await self.reader.read(MAX_BODY)  # until the server closes
            return Reply(status, headers, content), False
        keep = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
        return Reply(status, headers, content), keep

    async def _chunked(self) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
            total += size
            if total > MAX_BODY:
                raise ValueError("reply body too large")
            if size == 0:
                while (await self.reader.readuntil(b"\r\n")) != b"\r\n":
                    pass  # trailers
                return b"".join(parts)
            parts.append(await self.reader.readexactly(size))
            await self.reader.readexactly(2)


class Http1Client:
    """Kept-alive connections to one origin (`http://` or `https://`)."""

    def __init__(self, base_url: str, timeout: float) -> None:
        url = urlsplit(base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"not an http(s) URL: {base_url}")
        self._tls = url.scheme == "https"
        self._host = url.hostname
        self._port = url.port or (443 if self._tls else 80)
        default_port = self._port == (443 if self._tls else 80)
        host = f"[{self._host}]" if ":" in self._host else self._host
        self._authority = host if default_port else f"{host}:{self._port}"
        self._timeout = timeout
        self._ssl: ssl.SSLContext | None = None
        self._idle: list[_Connection] = []

    async def request(
        self, method: str, target: str, headers: dict[str, str], body: bytes | None = None
    ) -> Reply:
        head = [f"{method} {target} HTTP/1.1", f"Host: {self._authority}"]
        head += [f"{name}: {value}" for name, value in headers.items()]
        head.append(f"Content-Length: {len(body or b'')}")
        request = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + (body or b"")
        for attempt in (0, 1):
            reused = bool(self._idle)
            conn = self._idle.pop() if reused else await self._connect()
            try:
                async with asyncio.timeout(self._timeout):
                    reply, keep = await conn.exchange(request, method)
            except TimeoutError:
                conn.close()
                raise httpx.ReadTimeout(f"no reply to {method} {target} in time") from None
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
                conn.close()
                if reused and attempt == 0:
                    continue  # the server had closed the idle connection: once more, anew
                raise httpx.ReadError(f"{method} {target}: {exc}") from None
            except ValueError as exc:  # a reply that is not HTTP as we speak it
                conn.close()
                raise httpx.RemoteProtocolError(f"{method} {target}: {exc}") from None
            if keep and len(self._idle) < MAX_IDLE:
                self._idle.append(conn)
            else:
                conn.close()
            return reply
        raise AssertionError("unreachable")  # pragma: no cover

    async def _connect(self) -> _Connection:
        if self._tls and self._ssl is None:
            self._ssl = ssl.create_default_context()
        try:
            async with asyncio.timeout(self._timeout):
                reader, writer = await asyncio.open_connection(
                    self._host, self._port, ssl=self._ssl, limit=MAX_HEAD
                )
        except TimeoutError:
            raise httpx.ConnectTimeout(f"connecting to {self._authority} timed out") from None
        except (OSError, ssl.SSLError) as exc:
            raise httpx.ConnectError(f"connecting to {self._authority}: {exc}") from None
        return _Connection(reader, writer)

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
        for conn in idle:
            with contextlib.suppress(OSError, ssl.SSLError):  # already gone
                await conn.writer.wait_closed()
