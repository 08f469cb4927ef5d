"""Accounts, sessions and keys (protocol sections 4 and 5)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from emsg.proto.wire import (
    DeviceList,
    KeyCounts,
    KeysClaimRequest,
    KeysClaimResult,
    KeysUpload,
    LoginRequest,
    Ok,
    RegisterRequest,
    Session,
    WhoAmI,
)
from emsg.server.http.deps import Me, Svc, client_ip
from emsg.server.http.errors import errors

router = APIRouter(tags=["accounts"])

_AUTH = (400, 401, 413, 415, 429)


@router.post(
    "/accounts", status_code=201, responses=errors(400, 409, 413, 415, 429), tags=["accounts"]
)
async def register(body: RegisterRequest, request: Request, svc: Svc) -> Session:
    svc.ip_auth_limiter.hit(client_ip(request))
    return await svc.accounts.register(body.address, body.password, body.device_name)


@router.post("/login", responses=errors(400, 401, 403, 404, 413, 415, 429))
async def login(body: LoginRequest, request: Request, svc: Svc) -> Session:
    svc.ip_auth_limiter.hit(client_ip(request))
    return await svc.accounts.login(body.address, body.password, body.device_name, body.device_id)


@router.post("/logout", responses=errors(*_AUTH))
async def logout(me: Me, svc: Svc) -> Ok:
    await svc.accounts.logout(me)
    return Ok()


@router.get("/whoami", responses=errors(401, 429))
async def whoami(me: Me) -> WhoAmI:
    return WhoAmI(address=me.address, device_id=me.device_id)


@router.post("/keys/upload", responses=errors(*_AUTH, 403), tags=["keys"])
async def upload_keys(body: KeysUpload, me: Me, svc: Svc) -> KeyCounts:
    return await svc.keys.upload(me, body)


@router.put("/keys/device-list", responses=errors(*_AUTH, 403, 409), tags=["keys"])
async def put_device_list(body: DeviceList, me: Me, svc: Svc) -> Ok:
    await svc.keys.put_device_list(me, body)
    return Ok()


# 502: the address is on another domain, whose server did not answer (§12).
@router.get("/keys/device-list/{address}", responses=errors(400, 401, 404, 429, 502), tags=["keys"])
async def get_device_list(address: str, me: Me, svc: Svc) -> DeviceList:
    return await svc.keys.get_device_list(address)


@router.post("/keys/claim", responses=errors(*_AUTH, 404, 502), tags=["keys"])
async def claim_keys(body: KeysClaimRequest, me: Me, svc: Svc) -> KeysClaimResult:
    return await svc.keys.claim(body.address, body.device_ids, requester=me.address)
