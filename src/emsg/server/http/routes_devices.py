"""The devices of the caller's account and its identity backup (protocol.md §3.3)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from emsg.proto.devices import DevicesView, IdentityBackup, RevokeRequest
from emsg.proto.ids import DeviceId
from emsg.proto.wire import Ok
from emsg.server.http.deps import Me, Svc, client_ip
from emsg.server.http.errors import errors

router = APIRouter(tags=["devices"])

_BODY = (400, 401, 413, 415, 429)


@router.get("/devices", responses=errors(401, 429))
async def list_devices(me: Me, svc: Svc) -> DevicesView:
    return await svc.devices.list(me)


@router.post("/devices/{device_id}/revoke", responses=errors(*_BODY, 403, 404))
async def revoke_device(
    device_id: str, body: RevokeRequest, request: Request, me: Me, svc: Svc
) -> Ok:
    # It checks the account password: as slow to guess through as a login, from one
    # address and for one account (a stolen token may come from many addresses).
    svc.ip_auth_limiter.hit(client_ip(request))
    svc.ip_auth_limiter.hit(f"revoke:{me.address}")
    await svc.devices.revoke(me, DeviceId.parse(device_id).value, body.password)
    return Ok()


@router.put("/account/identity-backup", responses=errors(*_BODY, 403))
async def put_identity_backup(body: IdentityBackup, me: Me, svc: Svc) -> Ok:
    await svc.devices.put_backup(me, body)
    return Ok()


@router.get("/account/identity-backup", responses=errors(401, 404, 429))
async def get_identity_backup(me: Me, svc: Svc) -> IdentityBackup:
    return await svc.devices.get_backup(me)
