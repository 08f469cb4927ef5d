"""The homeserver's ASGI app: its hot paths served in front of FastAPI's stack.

A send and the stream are nearly all of a busy server's traffic, and a
federation transaction is every message between servers. Through FastAPI each
request passes its error, telemetry and body-limit middleware and ours, the
route matching and the dependency machinery before the route; the stream needs
none of that (FastAPI's WebSocket routing also keeps about 8 KiB of frames alive
per idle socket), and a send whose token (or a transaction whose signature) is
valid and whose body validates needs only the body checks, the metrics and the
service. So `HomeserverApp.__call__` takes those first, and everything else,
including every send it does not serve itself (no or a bad token, a body that
does not validate), goes through FastAPI, whose route stays the one definition
of the API, its OpenAPI and its error replies.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

from fastapi import FastAPI
from fastapi.routing import APIRoute
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send
from starlette.websockets import WebSocket

from emsg.proto.errors import EmsgError, InternalError
from emsg.proto.federation import FEDERATION_PREFIX, Transaction
from emsg.proto.ids import TxnId
from emsg.proto.jsoncodec import dumps
from emsg.proto.wire import SendRequest
from emsg.server.federation import routes as federation_routes
from emsg.server.http import routes_messages
from emsg.server.http.errors import error_response
from emsg.server.http.middleware import read_checked_body, send_error
from emsg.server.http.stream import stream
from emsg.server.metrics import Metrics
from emsg.server.services import Services

log = logging.getLogger("emsg.server")

_JSON_HEADERS: Final = (b"content-type", b"application/json")


class HomeserverApp(FastAPI):
    """FastAPI, with `PUT {prefix}/send/{txn_id}`, the stream and the federation's
    `PUT .../send/{txn_id}` served first."""

    def __init__(self, *, prefix: str, metrics: Metrics, max_body: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._stream_path = f"{prefix}/stream"
        # Labelled as the metrics middleware labels the routes' own requests.
        self._fast: dict[str, _FastRoute] = {
            f"{prefix}/send/": _FastSend(metrics, max_body, _path(routes_messages, "send")),
            f"{FEDERATION_PREFIX}/send/": _FastTransaction(
                metrics, max_body, _path(federation_routes, "receive")
            ),
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http" and scope["method"] == "PUT":
            path: str = scope["path"]
            for prefix, fast in self._fast.items():
                txn_id = path[len(prefix) :]
                if path.startswith(prefix) and txn_id and "/" not in txn_id:
                    scope["app"] = self
                    services: Services = self.state.services
                    await fast(services, txn_id, scope, receive, send, super().__call__)
                    return
        elif kind == "websocket" and scope["path"] == self._stream_path:
            scope["app"] = self
            await stream(WebSocket(scope, receive, send))
            return
        await super().__call__(scope, receive, send)


Fallback = Callable[[Scope, Receive, Send], Awaitable[None]]


def _path(module: Any, name: str) -> str:
    route = next(r for r in module.router.routes if isinstance(r, APIRoute) and r.name == name)
    return str(route.path)


class _FastRoute:
    """A route's plain success path: the body read and checked as the middleware
    does, the route's metrics, and `_try` for the rest."""

    def __init__(self, metrics: Metrics, max_body: int, route: str) -> None:
        self._metrics = metrics
        self._max_body = max_body
        self._route = route
        self._latency = metrics.latency.labels(route)
        self._counters: dict[int, Any] = {}

    async def __call__(
        self,
        svc: Services,
        txn_id: str,
        scope: Scope,
        receive: Receive,
        send: Send,
        fallback: Fallback,
    ) -> None:
        start = time.perf_counter()
        try:
            body, value = await read_checked_body(scope, receive, self._max_body)
        except EmsgError as exc:
            # As the metrics middleware counts a body refused before routing.
            await send_error(send, exc)
            self._metrics.requests.labels("unmatched", "PUT", str(exc.status)).inc()
            self._metrics.latency.labels("unmatched").observe(time.perf_counter() - start)
            return
        reply = await self._try(svc, txn_id, scope, value, body)
        if reply is None:
            await fallback(scope, _replay(body, receive), send)
            return
        if isinstance(reply, bytes):
            status = 200
            headers = [_JSON_HEADERS, (b"content-length", str(len(reply)).encode())]
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": reply})
        else:
            status = reply.status_code
            await reply(scope, receive, send)
        counter = self._counters.get(status)
        if counter is None:
            counter = self._counters[status] = self._metrics.requests.labels(
                self._route, "PUT", str(status)
            )
        counter.inc()
        self._latency.observe(time.perf_counter() - start)

    async def _try(
        self, svc: Services, txn_id: str, scope: Scope, value: Any, body: bytes
    ) -> bytes | Response | None:
        """The reply's body, an error reply, or None where the route is to answer
        (with the same checks, in its own order)."""
        raise NotImplementedError


class _FastSend(_FastRoute):
    """The client's send, checked in the route's order: body, token, body model,
    rate limit, transaction id, service."""

    async def _try(
        self, svc: Services, txn_id: str, scope: Scope, value: Any, body: bytes
    ) -> bytes | Response | None:
        token = _bearer_token(scope)
        if token is None or value is None:
            return None
        try:
            me = await svc.accounts.authenticate(token)
            # As FastAPI does: the parsed JSON, then the model in Python mode.
            request = SendRequest.model_validate(value)
        except (EmsgError, ValueError, ValidationError):
            return None
        try:
            svc.account_limiter.hit(me.address)
            result = await svc.messages.send(me, TxnId.parse(txn_id), request.envelopes)
        except EmsgError as exc:
            return error_response(exc)
        except Exception:
            log.exception("unhandled error on PUT %s", scope["path"])
            return error_response(InternalError("internal error; nothing was committed"))
        # The service builds a plain dict; pydantic's re-validation is skipped here.
        return json.dumps(result, separators=(",", ":"), ensure_ascii=False).encode()


class _FastTransaction(_FastRoute):
    """A peer server's transaction (`federation/routes.py`, `receive`), checked in
    the route's order: body, signature (the route's dependency, whose refusal is
    the route's answer whatever the body), body model, transaction id, service."""

    async def _try(
        self, svc: Services, txn_id: str, scope: Scope, value: Any, body: bytes
    ) -> bytes | Response | None:
        federation = svc.federation
        if federation is None or value is None:
            return None
        try:
            signed = await federation.auth.verify(
                federation_routes.as_message(Request(scope)), body
            )
        except EmsgError as exc:
            return error_response(exc)
        try:
            txn = Transaction.model_validate(value)
            txn_value = TxnId.parse(txn_id).value
        except (EmsgError, ValueError, ValidationError):
            return None
        try:
            result = await federation.receive(signed, txn_value, txn, body)
        except EmsgError as exc:
            return error_response(exc)
        except Exception:
            log.exception("unhandled error on PUT %s", scope["path"])
            return error_response(InternalError("internal error; nothing was committed"))
        return dumps(result)


def _replay(body: bytes, receive: Receive) -> Receive:
    """`receive` for the route: the body already read, then the connection's own."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _bearer_token(scope: Scope) -> str | None:
    """The credentials of `Authorization: Bearer ...`, read as FastAPI's HTTPBearer does."""
    for key, value in scope["headers"]:
        if key == b"authorization":
            scheme, _, credentials = value.decode("latin-1").partition(" ")
            credentials = credentials.strip()
            return credentials if scheme.lower() == "bearer" and credentials else None
    return None
