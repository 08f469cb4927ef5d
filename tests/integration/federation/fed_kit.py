"""Several homeservers in one process: each app mounted on httpx's ASGI transport,
federation requests routed by domain, queues drained deterministically."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from tests.integration.server.server_kit import PASSWORD, User

from emsg.server.app import create_app
from emsg.server.clock import Clock
from emsg.server.services import Services
from emsg.server.settings import Limits, Settings


class RoutingTransport(httpx.AsyncBaseTransport):
    """`https://<domain>/...` goes to that domain's app (unknown domains: refused)."""

    def __init__(self) -> None:
        self.apps: dict[str, httpx.ASGITransport] = {}
        self.down: set[str] = set()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        host = request.url.netloc.decode()
        if host in self.down or host not in self.apps:
            raise httpx.ConnectError(f"{host} is down", request=request)
        return await self.apps[host].handle_async_request(request)


@dataclass
class Home:
    domain: str
    app: FastAPI
    client: httpx.AsyncClient

    @property
    def services(self) -> Services:
        services: Services = self.app.state.services
        return services

    async def drain(self) -> None:
        assert self.services.federation is not None
        await self.services.federation.outbox.idle()

    async def register(self, local: str) -> User:
        resp = await self.client.post(
            "/_emsg/v1/accounts",
            json={"address": f"{local}#{self.domain}", "password": PASSWORD},
        )
        assert resp.status_code == 201, resp.text
        s = resp.json()
        return User(self.client, s["address"], s["device_id"], s["token"])


def fed_settings(domain: str, data: Path, **federation: Any) -> Settings:
    limits = Limits(
        account_rate=100_000, account_burst=100_000,
        ip_auth_rate_per_minute=100_000, ip_auth_burst=100_000,
    )  # fmt: skip
    fed = {"retry_base": 0.02, "retry_cap": 0.2, **federation}
    return Settings(domain=domain, data=data, limits=limits, federation=fed)


@asynccontextmanager
async def homes(
    tmp: Path, *domains: str, clock: Clock | None = None, **federation: Any
) -> AsyncIterator[tuple[RoutingTransport, list[Home]]]:
    routes = RoutingTransport()
    async with AsyncExitStack() as stack:
        out = []
        for domain in domains:
            settings = fed_settings(domain, tmp / domain, **federation)
            app = create_app(settings, clock=clock, federation_transport=routes)
            await stack.enter_async_context(app.router.lifespan_context(app))
            transport = httpx.ASGITransport(app=app)
            routes.apps[domain] = transport
            client = await stack.enter_async_context(
                httpx.AsyncClient(transport=transport, base_url=f"https://{domain}")
            )
            out.append(Home(domain, app, client))
        yield routes, out
