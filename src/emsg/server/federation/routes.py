"""The federation API (`/_emsg/v1/federation/`): thin routes over `Federation`.

Every route but `keys` requires a valid RFC 9421 signature of a peer server,
verified before the handler runs: `Origin` also spends the request's nonce in a
commit of its own; `Verified` (for `send`) leaves it to the transaction that
applies the request, so a replay is refused there before anything is written.
"""

from __future__ import annotations

from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from emsg.proto.federation import (
    FEDERATION_PREFIX,
    FedClaimRequest,
    ServerKeys,
    Transaction,
    TransactionResult,
)
from emsg.proto.ids import TxnId
from emsg.proto.jsoncodec import dumps
from emsg.proto.wire import DeviceList, KeysClaimResult
from emsg.server.federation.auth import Signed
from emsg.server.federation.service import Federation
from emsg.server.http.errors import errors

router = APIRouter(prefix=FEDERATION_PREFIX, tags=["federation"])


def _services(request: Request) -> Any:
    return request.app.state.services


async def get_federation(request: Request) -> Federation:
    federation: Federation = _services(request).federation
    return federation


Fed = Annotated[Federation, Depends(get_federation)]


def as_message(request: Request) -> httpx.Request:
    """The request as the signature saw it: the raw path (still percent-encoded)
    and query, and the `Host` it was addressed to."""
    scope = request.scope
    host = request.headers.get("host", "")
    target = scope.get("raw_path") or scope["path"].encode()
    query = scope.get("query_string", b"")
    url = f"https://{host}{target.decode('latin-1')}" + (f"?{query.decode('latin-1')}" if query
                                                        else "")  # fmt: skip
    return httpx.Request(request.method, url, headers=request.headers.raw)


async def verified_origin(request: Request, federation: Fed) -> str:
    body = await request.body()
    return await federation.auth.origin_of(as_message(request), body)


Origin = Annotated[str, Depends(verified_origin)]


async def verified_signature(request: Request, federation: Fed) -> Signed:
    body = await request.body()
    return await federation.auth.verify(as_message(request), body)


# For `send`, whose transaction spends the nonce along with everything it writes.
Verified = Annotated[Signed, Depends(verified_signature)]


@router.get("/keys", responses=errors(404))
async def server_keys(federation: Fed) -> ServerKeys:
    return federation.keys_document()


@router.put(
    "/send/{txn_id}", response_model=TransactionResult, responses=errors(400, 401, 403, 409, 413)
)
async def receive(
    txn_id: str, body: Transaction, signed: Verified, federation: Fed, request: Request
) -> Response:
    raw = await request.body()
    result = await federation.receive(signed, TxnId.parse(txn_id).value, body, raw)
    return Response(dumps(result), media_type="application/json")


@router.get("/device-list/{address}", responses=errors(400, 401, 404))
async def device_list(address: str, origin: Origin, request: Request) -> DeviceList:
    list_: DeviceList = await _services(request).keys.get_device_list(address)
    return list_


@router.post("/keys/claim", responses=errors(400, 401, 403, 404))
async def claim(body: FedClaimRequest, origin: Origin, request: Request) -> KeysClaimResult:
    Federation.check_requester(origin, body)
    result: KeysClaimResult = await _services(request).keys.claim(body.address, body.device_ids)
    return result
