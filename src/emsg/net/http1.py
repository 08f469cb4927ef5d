"""A small keep-alive HTTP/1.1 client for the hottest requests: the client's
`PUT /send` and the homeserver's federation `PUT .../send/{txn_id}`.

httpx spends about 0.7 ms of CPU on a request (request building, cookies, auth and
redirect hooks, httpcore's connection pool), several times what the server spends
committing a message. A send is one small JSON request and one small JSON reply
on a connection to one server, so this speaks exactly that and nothing more:
Content-Length request bodies, Content-Length, chunked or close-delimited replies
up to a size cap, keep-alive, TLS (by default with the default context, which
honours SSL_CERT_FILE, like httpx), and a timeout per request. It is used for
idempotent requests only: a kept-alive connection the server closed in the
meantime is retried once on a new one. Failures raise httpx's TransportError
subclasses, so callers treat both clients alike.

The base URL says where to connect. Federation connects to the address its SSRF
guard checked, so it also names the TLS server name to verify and the `Host` of
each request, which then differ from that address.
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
_READ_SIZE: Final = 64 * 1024


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    headers: dict[str, str]  # names in lower case
    content: bytes


class _Connection:
    __slots__ = ("max_body", "reader", "writer")

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, max_body: int
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.max_body = max_body

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
            if not 0 <= length <= self.max_body:
                raise ValueError(f"reply body of {length} bytes")
            content = await self.reader.readexactly(length)
        else:
            return Reply(status, headers, await self._until_closed()), False
        keep = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
        return Reply(status, headers, content), keep

    async def _chunked(self) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
            total += size
            if total > self.max_body:
                raise ValueError("reply body too large")
            if size == 0:
                while (await self.reader.readuntil(b"\r\n")) != b"\r\n":
                    pass  # trailers
                return b"".join(parts)
            parts.append(await self.reader.readexactly(size))
            await self.reader.readexactly(2)

    async def _until_closed(self) -> bytes:
        # `read(n)` returns what has arrived so far, not the whole body: read to EOF.
        parts: list[bytes] = []
        total = 0
        while chunk := await self.reader.read(_READ_SIZE):
            total += len(chunk)
            if total > self.max_body:
                raise ValueError("reply body too large")
            parts.append(chunk)
        return b"".join(parts)


class Http1Client:
    """Kept-alive connections to one server (`http://` or `https://`).

    `server_hostname` is the name the server's certificate must carry (and the
    SNI), if not the URL's host; `ssl_context` replaces the default context;
    replies with a body over `max_body` bytes fail. `timeout` bounds each
    request's exchange, `connect_timeout` (default: `timeout`) each new
    connection, TLS handshake included.
    """

    def __init__(
        self,
        base_url: str,
        timeout: float,
        *,
        connect_timeout: float | None = None,
        server_hostname: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        max_body: int = MAX_BODY,
    ) -> None:
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
        self._connect_timeout = timeout if connect_timeout is None else connect_timeout
        self._server_hostname = server_hostname if self._tls else None
        self._ssl = ssl_context
        self._max_body = max_body
        self._idle: list[_Connection] = []
        self._closed = False

    async def request(
        self,
        method: str,
        target: str,
        headers: dict[str, str],
        body: bytes | None = None,
        *,
        authority: str | None = None,
    ) -> Reply:
        """Send one request; `Host` is `authority` if given, else the base URL's."""
        head = [f"{method} {target} HTTP/1.1", f"Host: {authority or self._authority}"]
        head += [f"{name}: {value}" for name, value in headers.items()]
        head.append(f"Content-Length: {len(body or b'')}")
        request = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + (body or b"")
        for attempt in (0, 1):
            # The retry always takes a new connection: the other idle ones are
            # probably as stale as the one that just failed.
            idle = self._take_idle() if attempt == 0 else None
            conn = idle or await self._connect()
            try:
                async with asyncio.timeout(self._timeout):
                    reply, keep = await conn.exchange(request, method)
            except TimeoutError:
                conn.close()
                raise httpx.ReadTimeout(f"no reply to {method} {target} in time") from None
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
                conn.close()
                if idle is not None:
                    continue  # the server had closed the idle connection: once more, anew
                raise httpx.ReadError(f"{method} {target}: {exc}") from None
            except ValueError as exc:  # a reply that is not HTTP as we speak it
                conn.close()
                raise httpx.RemoteProtocolError(f"{method} {target}: {exc}") from None
            # A request that was in flight during `aclose` leaves nothing open.
            if keep and not self._closed and len(self._idle) < MAX_IDLE:
                self._idle.append(conn)
            else:
                conn.close()
            return reply
        raise AssertionError("unreachable")  # pragma: no cover

    def _take_idle(self) -> _Connection | None:
        while self._idle:
            conn = self._idle.pop()
            if not conn.reader.at_eof():
                return conn
            conn.close()  # the server has closed it already: no need to try it
        return None

    async def _connect(self) -> _Connection:
        if self._tls and self._ssl is None:
            self._ssl = ssl.create_default_context()
        try:
            async with asyncio.timeout(self._connect_timeout):
                reader, writer = await asyncio.open_connection(
                    self._host,
                    self._port,
                    ssl=self._ssl if self._tls else None,
                    server_hostname=self._server_hostname,
                    limit=MAX_HEAD,
                )
        except TimeoutError:
            raise httpx.ConnectTimeout(f"connecting to {self._authority} timed out") from None
        except (OSError, ssl.SSLError) as exc:
            raise httpx.ConnectError(f"connecting to {self._authority}: {exc}") from None
        return _Connection(reader, writer, self._max_body)

    async def aclose(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
        for conn in idle:
            with contextlib.suppress(OSError, ssl.SSLError):  # already gone
                await conn.writer.wait_closed()
