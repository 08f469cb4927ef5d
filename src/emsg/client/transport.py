"""HTTP and WebSocket access to a homeserver's client API.

Error replies become the same `EmsgError` subclasses the server raised (via
`proto.errors.error_from_wire`), so callers catch `Unauthorized` or `RateLimited`
by class. Network failures stay `httpx.TransportError` / `OSError`, which callers
may retry: every request the client repeats is idempotent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Final, TypeVar
from urllib.parse import quote, urlsplit

import httpx
from pydantic import BaseModel, TypeAdapter, ValidationError
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from emsg.client.inputs import server_url as checked_server_url
from emsg.net.http1 import Http1Client
from emsg.proto.errors import (
    EmsgError,
    ProtocolViolation,
    TokenExpired,
    Unauthorized,
    error_from_wire,
)
from emsg.proto.jsoncodec import dumps, loads_strict
from emsg.proto.wire import (
    API_PREFIX,
    QUIET,
    ErrorFrame,
    Event,
    EventFrame,
    OutgoingEnvelope,
    PongFrame,
    ReadyFrame,
    SendResult,
    SentFrame,
    ServerFrame,
    model_dump,
    why_refused,
)

log = logging.getLogger(__name__)
M = TypeVar("M", bound=BaseModel)
_SERVER_FRAME: Final = TypeAdapter[ServerFrame](ServerFrame, config=QUIET)
_SERVER_FRAMES: Final = TypeAdapter[list[ServerFrame]](list[ServerFrame], config=QUIET)
AUTH_FAILED_CLOSE: Final = 4401
# Acks only let the server drop what was delivered (an event not acknowledged is
# sent again after a reconnect and dropped as a duplicate), so they can wait:
# at 10 ms a stream receiving a message every few milliseconds acked nearly every
# one, which cost the receiving client about a fifth of its CPU per message and
# the server a tenth (benchmarks/load.py, HTTP with 10 and 50 senders).
ACK_DELAY_S: Final = 0.2


def path_address(address: str) -> str:
    """An address as one URL path segment (`#` must be escaped)."""
    return quote(address, safe="")


def _proxied(url: str) -> bool:
    """Whether the environment routes requests to `url` through a proxy."""
    parts = urlsplit(url)
    proxies = urllib.request.getproxies()
    if not (proxies.get(parts.scheme) or proxies.get("all")):
        return False
    return not urllib.request.proxy_bypass(parts.hostname or "")


def _payload(status: int, content: bytes, retry_after: str | None) -> Any:
    """The parsed JSON reply of a success, or the error it stands for, raised."""
    try:
        payload = loads_strict(content) if content else None
    except EmsgError:
        payload = None
    if 200 <= status < 300:
        return payload
    try:
        wait = float(retry_after) if retry_after is not None else None
    except ValueError:
        wait = None
    raise error_from_wire(status, payload, wait)


class HttpApi:
    """The client API over httpx, with the bearer token of one device."""

    def __init__(
        self,
        server_url: str,
        token: str | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.server_url = checked_server_url(server_url)
        self.token = token
        # Given a token the server refused and why, sets a new `token` or raises.
        self.renew: Callable[[str, EmsgError], Awaitable[None]] | None = None
        self._http = httpx.AsyncClient(
            base_url=self.server_url + API_PREFIX, transport=transport, timeout=timeout
        )
        # Sends take the lean path (see emsg/net/http1.py), unless a test injects a
        # transport or the environment names a proxy for this server (httpx honours
        # it; the lean path speaks only directly).
        lean = transport is None and not _proxied(self.server_url)
        self._fast = Http1Client(self.server_url, timeout) if lean else None
        # A server behind a reverse proxy may live under a path: keep it.
        self._fast_prefix = urlsplit(self.server_url).path.rstrip("/") + API_PREFIX

    async def aclose(self) -> None:
        if self._fast is not None:
            await self._fast.aclose()
        await self._http.aclose()

    async def call(
        self,
        method: str,
        path: str,
        body: BaseModel | Mapping[str, Any] | None = None,
        *,
        params: Mapping[str, str | int] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - per request, passed to httpx
        auth: bool = True,
    ) -> Any:
        """Send one request and return the parsed JSON reply, or raise its error.

        With `auth`, the request carries the bearer token; if the server refuses the
        token, `renew` may find a new one and the request goes once more (the
        server did nothing with the refused token)."""
        token = self.token if auth else None
        try:
            return await self._call(method, path, body, params, timeout, token)
        except (TokenExpired, Unauthorized) as exc:
            if self.renew is None or token is None:
                raise
            await self.renew(token, exc)
        return await self._call(method, path, body, params, timeout, self.token)

    async def _call(
        self,
        method: str,
        path: str,
        body: BaseModel | Mapping[str, Any] | None,
        params: Mapping[str, str | int] | None,
        timeout: float | None,  # noqa: ASYNC109 - per request, passed to httpx
        token: str | None,
    ) -> Any:
        headers = {"Accept": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        content: bytes | None = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            content = dumps(model_dump(body) if isinstance(body, BaseModel) else dict(body))
        if self._fast is not None and method == "PUT" and params is None and timeout is None:
            reply = await self._fast.request(method, self._fast_prefix + path, headers, content)
            return _payload(reply.status, reply.content, reply.headers.get("retry-after"))
        for attempt in (0, 1):
            try:
                response = await self._http.request(
                    method,
                    path,
                    content=content,
                    headers=headers,
                    params=params,
                    timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
                )
                break
            except (httpx.RemoteProtocolError, httpx.ReadError):
                # A kept-alive connection the server closed just as the request went
                # out (both sides drop idle connections after about 5 s): a GET is
                # safe to send again, once, and httpx will open a new connection.
                if method != "GET" or attempt:
                    raise
        return _payload(response.status_code, response.content, response.headers.get("retry-after"))

    async def get_model(self, model: type[M], path: str, **params: str | int) -> M:
        return model.model_validate(await self.call("GET", path, params=params or None))

    async def call_model(
        self,
        model: type[M],
        method: str,
        path: str,
        body: BaseModel | None = None,
        *,
        auth: bool = True,
    ) -> M:
        return model.model_validate(await self.call(method, path, body, auth=auth))

    def stream_url(self) -> str:
        base = self.server_url
        if base.startswith("https://"):
            base = "wss://" + base.removeprefix("https://")
        elif base.startswith("http://"):
            base = "ws://" + base.removeprefix("http://")
        return base + API_PREFIX + "/stream"


class StreamSession:
    """One authenticated WebSocket on `/stream`: events in, acks and sends out.

    A reader task owns the socket's receiving side: events go to a queue that
    `events()` drains, and `sent`/`error` replies resolve the futures of pipelined
    sends by `txn_id`.
    """

    def __init__(self, ws: ClientConnection, ready: ReadyFrame) -> None:
        self._ws = ws
        self.ready = ready
        self._events: asyncio.Queue[Event | BaseException] = asyncio.Queue()
        self._pending: dict[str, asyncio.Future[SendResult]] = {}
        self._reader = asyncio.create_task(self._read())
        self._ack_upto = 0  # highest position to acknowledge
        self._acked = 0  # highest position acknowledged
        self._ack_timer: asyncio.TimerHandle | None = None
        self._ack_task: asyncio.Task[None] | None = None
        # The error frame (with no txn_id) the server closed the stream after.
        self._closing_error: EmsgError | None = None

    @classmethod
    async def connect(cls, url: str, token: str, since: int) -> StreamSession:
        # No permessage-deflate: frames are mostly base64 ciphertext, which barely
        # compresses, and deflating costs both ends more CPU than the frame itself.
        ws = await connect(url, max_size=1024 * 1024, open_timeout=15, compression=None)
        try:
            await ws.send(dumps({"type": "auth", "token": token, "since": since}).decode())
            frames = _parse(await ws.recv())
            frame = frames[0]
        except ConnectionClosed as exc:
            await ws.close()
            if exc.rcvd is not None and exc.rcvd.code == AUTH_FAILED_CLOSE:
                raise Unauthorized("the stream refused the token") from None
            raise
        except BaseException:
            await ws.close()
            raise
        if isinstance(frame, ErrorFrame):
            await ws.close()
            raise error_from_wire(401, {"error": model_dump(frame.error)})
        if not isinstance(frame, ReadyFrame):
            await ws.close()
            raise ProtocolViolation(f"expected a ready frame, got {frame.type}")
        return cls(ws, frame)

    async def _read(self) -> None:
        failure: BaseException
        try:
            async for raw in self._ws:
                for frame in _parse(raw):
                    self._dispatch(frame)
            failure = ConnectionError("the server closed the stream")
        except ConnectionClosed as exc:
            failure = exc
        except Exception as exc:  # a malformed frame: the session is unusable
            failure = exc
        for future in self._pending.values():
            if not future.done():
                future.set_exception(failure)
        self._pending.clear()
        self._events.put_nowait(failure)

    def _dispatch(self, frame: ServerFrame) -> None:
        if isinstance(frame, EventFrame):
            self._events.put_nowait(frame.event)
        elif isinstance(frame, SentFrame):
            future = self._pending.pop(frame.result.txn_id, None)
            if future is not None and not future.done():
                future.set_result(frame.result)
        elif isinstance(frame, ErrorFrame):
            error = error_from_wire(400, {"error": model_dump(frame.error)})
            future = self._pending.pop(frame.txn_id or "", None)
            if future is not None and not future.done():
                future.set_exception(error)
            elif frame.txn_id is None:
                self._closing_error = error
                if not isinstance(error, TokenExpired):  # that one is routine: renewed
                    log.warning("stream error: %s", frame.error.message)
        elif not isinstance(frame, PongFrame | ReadyFrame):  # pragma: no cover
            log.debug("ignoring frame %s", frame)

    async def batches(self, limit: int = 256) -> AsyncIterator[list[Event]]:
        """Events in queue order, as many at a time as have arrived (up to `limit`),
        until the connection ends; then its error is raised."""
        failure: BaseException | None = None
        while failure is None:
            item = await self._events.get()
            batch: list[Event] = []
            while True:
                if isinstance(item, BaseException):
                    failure = item
                    break
                batch.append(item)
                if len(batch) >= limit or self._events.empty():
                    break
                item = self._events.get_nowait()
            if batch:
                yield batch
        rcvd = failure.rcvd if isinstance(failure, ConnectionClosed) else None
        if rcvd is not None and rcvd.code == AUTH_FAILED_CLOSE:
            if isinstance(self._closing_error, TokenExpired):
                raise self._closing_error  # the token lived out its time: renew it
            raise Unauthorized("the stream closed: token refused")
        raise failure

    async def ack(self, pos: int) -> None:
        await self._ws.send(dumps({"type": "ack", "pos": pos}).decode())
        self._acked = max(self._acked, pos)

    def ack_soon(self, pos: int) -> None:
        """Acknowledge up to `pos` within ACK_DELAY_S, with whatever follows by then:
        a busy stream sends one ack frame per delay, not one per event. An ack that
        is lost only makes the server send those events again (they are dropped as
        duplicates)."""
        self._ack_upto = max(self._ack_upto, pos)
        if self._ack_timer is None and self._ack_task is None:
            self._ack_timer = asyncio.get_running_loop().call_later(ACK_DELAY_S, self._ack_now)

    def _ack_now(self) -> None:
        self._ack_timer = None
        self._ack_task = asyncio.get_running_loop().create_task(self._send_ack())

    async def _send_ack(self) -> None:
        try:
            while self._acked < self._ack_upto:
                await self.ack(self._ack_upto)
        except (OSError, ConnectionClosed) as exc:
            log.info("ack not sent (%s): those events will come again", exc)
        finally:
            self._ack_task = None

    async def send(self, txn_id: str, envelopes: list[OutgoingEnvelope]) -> SendResult:
        """Send and wait for its `sent` reply; other sends may be in flight meanwhile."""
        return await (await self.submit(txn_id, envelopes))

    async def submit(
        self, txn_id: str, envelopes: list[OutgoingEnvelope]
    ) -> asyncio.Future[SendResult]:
        """Write the send frame now; the returned future resolves with its `sent` reply."""
        future: asyncio.Future[SendResult] = asyncio.get_running_loop().create_future()
        self._pending[txn_id] = future
        frame = {"type": "send", "txn_id": txn_id, "envelopes": [model_dump(e) for e in envelopes]}
        try:
            await self._ws.send(dumps(frame).decode())
        except BaseException:
            self._pending.pop(txn_id, None)
            raise
        return future

    async def ping(self) -> None:
        await self._ws.send('{"type":"ping"}')

    async def aclose(self) -> None:
        if self._ack_timer is not None:
            self._ack_timer.cancel()
            self._ack_timer = None
        if self._ack_task is not None:
            await asyncio.gather(self._ack_task, return_exceptions=True)
        with contextlib.suppress(OSError, ConnectionClosed):
            if self._acked < self._ack_upto:
                await self.ack(self._ack_upto)
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._reader
        await self._ws.close()


def _parse(raw: str | bytes) -> list[ServerFrame]:
    """The frames of one message: one object, or an array of them in order."""
    try:
        obj = loads_strict(raw)
        if isinstance(obj, list):
            return _SERVER_FRAMES.validate_python(obj)
        return [_SERVER_FRAME.validate_python(obj)]
    except (EmsgError, ValidationError) as exc:
        raise ProtocolViolation(f"malformed frame from the server: {why_refused(exc)}") from None
