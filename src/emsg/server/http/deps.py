"""`Depends` lives only here, at the HTTP edge."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from emsg.server.services import Services
from emsg.server.services.common import Caller

_bearer = HTTPBearer(auto_error=False, description="The token from register or login")


async def get_services(request: Request) -> Services:
    # async: FastAPI runs a plain `def` dependency in a worker thread, per request.
    services: Services = request.app.state.services
    return services


Svc = Annotated[Services, Depends(get_services)]


async def current_device(
    svc: Svc,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    caller = await svc.accounts.authenticate(creds.credentials if creds else None)
    svc.account_limiter.hit(caller.address)
    return caller


Me = Annotated[Caller, Depends(current_device)]


def client_ip(request: Request) -> str:
    return request.client.host if request.client is not None else "unknown"
