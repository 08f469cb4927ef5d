"""Pure ASGI middleware: strict request bodies and request metrics.

Bodies are checked here, before FastAPI sees them, so that an oversize body is
refused without being buffered and malformed JSON never reaches a handler.
"""

from __future__ import annotations

import json
import time
from typing import Any, Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from emsg.proto.errors import (
    BadJson,
    EmsgError,
    InvalidRequest,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from emsg.proto.jsoncodec import loads_strict
from emsg.server.metrics import Metrics

_API: Final = "/_emsg/"
_BODYLESS: Final = frozenset({"GET", "HEAD", "OPTIONS"})


async def send_error(send: Send, exc: EmsgError) -> None:
    body = json.dumps(exc.to_wire()).encode()
    await send(
        {
            "type": "http.response.start",
            "status": exc.status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                # The rest of the body was not read: do not reuse this connection.
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


def _is_json(content_type: bytes | None) -> bool:
    if content_type is None:
        return False
    media = content_type.split(b";", 1)[0].strip().lower()
    return media == b"application/json"


class StrictBodyMiddleware:
    def __init__(self, app: ASGIApp, max_body: int) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] in _BODYLESS
            or not scope["path"].startswith(_API)
        ):
            await self.app(scope, receive, send)
            return
        try:
            body, _ = await read_checked_body(scope, receive, self.max_body)
        except EmsgError as exc:
            await send_error(send, exc)
            return
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def read_checked_body(scope: Scope, receive: Receive, max_body: int) -> tuple[bytes, Any]:
    """The whole body and its parsed JSON (None if empty), or the `EmsgError` that
    refuses it: a size over `max_body` before it is buffered, another media type,
    JSON that `loads_strict` refuses."""
    length_text = _header(scope, b"content-length")
    chunked = _header(scope, b"transfer-encoding") is not None
    if length_text is not None:
        if not length_text.isdigit():
            raise InvalidRequest("Content-Length is not a number")
        if int(length_text) > max_body:
            raise PayloadTooLarge(f"the body exceeds {max_body} bytes")
    has_body = chunked or (length_text is not None and int(length_text) > 0)
    if has_body and not _is_json(_header(scope, b"content-type")):
        raise UnsupportedMediaType("the body must be application/json")
    chunks: list[bytes] = []
    size = 0
    more = True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            break  # the client went away; the app will see the disconnect
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_body:
            raise PayloadTooLarge(f"the body exceeds {max_body} bytes")
        chunks.append(chunk)
        more = message.get("more_body", False)
    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    if not body:
        if has_body:
            raise BadJson("empty body")
        return body, None
    if not _is_json(_header(scope, b"content-type")):
        raise UnsupportedMediaType("the body must be application/json")
    return body, loads_strict(body)  # raises BadJson


class MetricsMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record)
        finally:
            route: Any = scope.get("route")
            # Templates, not raw paths: unknown paths must not explode the label set.
            name = getattr(route, "path", None) or "unmatched"
            self.metrics.requests.labels(name, scope["method"], str(status)).inc()
            self.metrics.latency.labels(name).observe(time.perf_counter() - start)
