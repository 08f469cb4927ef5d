"""Sending and long-poll sync (protocol sections 7 and 8.1), health and metrics."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse, Response

from emsg.proto.errors import EmsgError
from emsg.proto.ids import TxnId
from emsg.proto.wire import SendRequest, SendResult, SyncResult
from emsg.server.http.deps import Me, Svc
from emsg.server.http.errors import errors
from emsg.server.services.messages import MAX_SYNC_LIMIT, MAX_SYNC_TIMEOUT_MS

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


# HEAD as well: load balancers and uptime checkers often probe with it. Two routes,
# so that each method has an operation id of its own in the OpenAPI document.
@router.get("/health", responses=errors(503), tags=["server"], operation_id="health")
@router.head("/health", responses=errors(503), tags=["server"], operation_id="health_head")
async def health(svc: Svc) -> JSONResponse:
    try:
        await svc.uow.ping()
    except Exception:
        err = EmsgError("the database does not answer")
        return JSONResponse(err.to_wire() | {}, status_code=503)
    return JSONResponse({"status": "ok", "domain": svc.settings.domain})


__all__ = ["router"]
