"""Sending and long-poll sync (protocol sections 7 and 8.1), health and metrics."""

from __future__ import annotations

import json
import logging
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from emsg.proto.errors import EmsgError, InternalError
from emsg.proto.ids import TxnId
from emsg.proto.wire import SendRequest, SendResult, SyncResult
from emsg.server.http.deps import Me, Svc
from emsg.server.http.errors import error_response, errors
from emsg.server.services import Services
from emsg.server.services.messages import MAX_SYNC_LIMIT, MAX_SYNC_TIMEOUT_MS

log = logging.getLogger("emsg.server")

router = APIRouter()


def _json(value: object) -> Response:
    # The hot paths build plain dicts; skipping pydantic's re-validation here is
    # measurable. The response models still document the shape.
    body = json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
    return Response(body, media_type="application/json")


@router.put(
    "/send/{txn_id}",
    response_model=SendResult,
    responses=errors(400, 401, 403, 404, 409, 413, 415, 429),
    tags=["messages"],
)
async def send(txn_id: str, body: SendRequest, me: Me, svc: Svc) -> Response:
    result = await svc.messages.send(me, TxnId.parse(txn_id), body.envelopes)
    return _json(result)


@router.get("/sync", response_model=SyncResult, responses=errors(400, 401, 429), tags=["messages"])
async def sync(
    me: Me,
    svc: Svc,
    since: Annotated[int, Query(ge=0, le=2**53 - 1)] = 0,
    timeout_ms: Annotated[int, Query(alias="timeout", ge=0, le=MAX_SYNC_TIMEOUT_MS)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_SYNC_LIMIT)] = 100,
) -> Response:
    page = await svc.messages.sync(me, since, timeout_ms, limit)
    return Response(page.to_json().encode(), media_type="application/json")


@router.get("/health", responses=errors(503), tags=["server"])
async def health(svc: Svc) -> JSONResponse:
    try:
        await svc.uow.ping()
    except Exception:
        err = EmsgError("the database does not answer")
        return JSONResponse(err.to_wire() | {}, status_code=503)
    return JSONResponse({"status": "ok", "domain": svc.settings.domain})


class FastSend:
    """`send` above, for the plain success path, without FastAPI's per-request work.

    Routing through every router, solving the dependency tree and the telemetry
    hooks cost FastAPI about 0.25 ms a request, more than the send itself. This
    pure ASGI middleware (inside the strict-body check) serves a send whose token
    is valid and whose body validates, in the same order the route does: token,
    rate limit, transaction id, service. Anything else (no or a bad token, a body
    that does not validate, an odd path) falls through to the route above, which
    stays the one definition of the API, its OpenAPI and its error replies.
    """

    def __init__(self, app: ASGIApp, prefix: str) -> None:
        self.app = app
        self.prefix = f"{prefix}/send/"
        # Metrics label requests by route template, as FastAPI's routing sets it.
        self.route = next(r for r in router.routes if getattr(r, "name", None) == "send")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "PUT":
            await self.app(scope, receive, send)
            return
        txn_id: str = scope["path"]
        if not txn_id.startswith(self.prefix) or "/" in txn_id[len(self.prefix) :]:
            await self.app(scope, receive, send)
            return
        message = await receive()
        reply = await self._try(scope, txn_id[len(self.prefix) :], message)
        if reply is not None:
            scope["route"] = self.route
            await reply(scope, receive, send)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return message
            return await receive()

        await self.app(scope, replay, send)

    async def _try(self, scope: Scope, txn_id: str, message: Message) -> Response | None:
        token = _bearer_token(scope)
        # The strict-body middleware hands the whole (checked) body in one message.
        body = message.get("body", b"") if message["type"] == "http.request" else b""
        if not txn_id or token is None or not body or message.get("more_body"):
            return None
        svc: Services = scope["app"].state.services
        try:
            me = await svc.accounts.authenticate(token)
            # As FastAPI does: json.loads, then the model in Python mode.
            request = SendRequest.model_validate(json.loads(body))
        except (EmsgError, ValueError, ValidationError):
            return None  # the route answers, with the same checks in its own order
        try:
            svc.account_limiter.hit(me.address)
            return _json(await svc.messages.send(me, TxnId.parse(txn_id), request.envelopes))
        except EmsgError as exc:
            return error_response(exc)
        except Exception:
            log.exception("unhandled error on PUT %s", scope["path"])
            return error_response(InternalError("internal error; nothing was committed"))


def _bearer_token(scope: Scope) -> str | None:
    """The credentials of `Authorization: Bearer ...`, read as FastAPI's HTTPBearer does."""
    for key, value in scope["headers"]:
        if key == b"authorization":
            scheme, _, credentials = value.decode("latin-1").partition(" ")
            credentials = credentials.strip()
            return credentials if scheme.lower() == "bearer" and credentials else None
    return None


__all__ = ["FastSend", "error_response", "router"]
