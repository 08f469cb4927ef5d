"""Contacts, blocks and the stranger policy (protocol section 6)."""

from __future__ import annotations

from fastapi import APIRouter

from emsg.proto.wire import Contact, ContactRequestBody, ContactsView, Ok, PolicyBody
from emsg.server.http.deps import Me, Svc
from emsg.server.http.errors import errors

router = APIRouter(tags=["contacts"])

_PATH = (400, 401, 404, 413, 415, 429)


@router.post("/contacts/requests", responses=errors(*_PATH, 403, 409))
async def request_contact(body: ContactRequestBody, me: Me, svc: Svc) -> Contact:
    return await svc.contacts.request(me, body.to, body.message, body.identity_key)


@router.post("/contacts/requests/{address}/accept", responses=errors(*_PATH))
async def accept_contact(address: str, me: Me, svc: Svc) -> Contact:
    return await svc.contacts.accept(me, address)


@router.post("/contacts/requests/{address}/decline", responses=errors(*_PATH))
async def decline_contact(address: str, me: Me, svc: Svc) -> Ok:
    await svc.contacts.decline(me, address)
    return Ok()


@router.get("/contacts", responses=errors(401, 429))
async def list_contacts(me: Me, svc: Svc) -> ContactsView:
    return await svc.contacts.view(me)


@router.delete("/contacts/{address}", responses=errors(*_PATH))
async def delete_contact(address: str, me: Me, svc: Svc) -> Ok:
    await svc.contacts.delete(me, address)
    return Ok()


@router.put("/blocks/{address}", responses=errors(*_PATH))
async def block(address: str, me: Me, svc: Svc) -> Ok:
    await svc.contacts.block(me, address)
    return Ok()


@router.delete("/blocks/{address}", responses=errors(*_PATH))
async def unblock(address: str, me: Me, svc: Svc) -> Ok:
    await svc.contacts.unblock(me, address)
    return Ok()


@router.get("/policy", responses=errors(401, 429))
async def get_policy(me: Me, svc: Svc) -> PolicyBody:
    return PolicyBody(strangers=await svc.contacts.get_policy(me))


@router.put("/policy", responses=errors(*_PATH))
async def put_policy(body: PolicyBody, me: Me, svc: Svc) -> PolicyBody:
    return PolicyBody(strangers=await svc.contacts.set_policy(me, body.strangers))
