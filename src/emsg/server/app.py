"""The app factory: one `Services` object built in the lifespan, routers on top."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI
from fastapi.responses import Response

from emsg.proto.wire import API_PREFIX
from emsg.server.clock import Clock, SystemClock
from emsg.server.fanout import LocalNotifier, Notifier
from emsg.server.federation import routes as federation_routes
from emsg.server.http import routes_accounts, routes_contacts, routes_devices, routes_messages
from emsg.server.http.edge import HomeserverApp
from emsg.server.http.errors import install_error_handlers, install_openapi
from emsg.server.http.middleware import MetricsMiddleware, StrictBodyMiddleware
from emsg.server.metrics import Metrics
from emsg.server.services import Services
from emsg.server.settings import Settings
from emsg.server.storage.sql.uow import open_unit_of_work


def create_app(
    settings: Settings,
    clock: Clock | None = None,
    notifier: Notifier | None = None,
    federation_transport: httpx.AsyncBaseTransport | None = None,
) -> HomeserverApp:
    clock = clock or SystemClock()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        uow = await open_unit_of_work(settings.db_url)
        services = Services.build(settings, clock, uow, notifier or LocalNotifier(), metrics,
                                  federation_transport)  # fmt: skip
        app.state.services = services
        await services.start()
        try:
            yield
        finally:
            await services.close()

    app = HomeserverApp(
        prefix=API_PREFIX,
        metrics=metrics,
        max_body=settings.limits.max_body_bytes,
        title="EMSG homeserver client API",
        version="1",
        description="The client API of docs/protocol.md. Errors are "
        '`{"error": {"code", "message"}}`.',
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        # FastAPI's native OpenTelemetry looks up the global providers on every
        # request (environment reads, about 10 us); EMSG reports through /metrics.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    install_error_handlers(app)
    install_openapi(app)
    for module in (routes_accounts, routes_contacts, routes_devices, routes_messages):
        app.include_router(module.router, prefix=API_PREFIX)
    if settings.federation.enabled:
        app.include_router(federation_routes.router)

    @app.get("/metrics", include_in_schema=False)
    async def metrics_endpoint() -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    # Sends and the stream are served in front of these (`HomeserverApp`).
    app.add_middleware(StrictBodyMiddleware, max_body=settings.limits.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app
