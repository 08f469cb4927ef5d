"""The one place where errors become HTTP replies, and the OpenAPI that says so."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, Final

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from emsg.proto.errors import (
    EmsgError,
    InternalError,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    RateLimited,
    describe_invalid,
)
from emsg.proto.wire import ErrorBody

log = logging.getLogger("emsg.server")

_DESCRIPTIONS: Final = {
    400: "Bad request (bad_json, invalid_request, invalid_address, ...)",
    401: "Missing, unknown, revoked or expired token, or wrong credentials",
    403: "Forbidden, or the recipient refuses",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Payload too large",
    415: "Unsupported media type",
    429: "Rate limited; see Retry-After",
    502: "The server of the address's domain cannot be reached (remote_unavailable)",
    503: "The database does not answer",
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The `responses=` of a route: ErrorBody for each status it can return."""
    return {s: {"model": ErrorBody, "description": _DESCRIPTIONS[s]} for s in statuses}


def error_response(exc: EmsgError) -> JSONResponse:
    headers = None
    if isinstance(exc, RateLimited):
        headers = {"Retry-After": str(max(1, int(exc.retry_after + 0.999)))}
    return JSONResponse(exc.to_wire(), status_code=exc.status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    async def on_emsg(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, EmsgError)
        return error_response(exc)

    async def on_validation(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return error_response(InvalidRequest(describe_invalid(exc.errors(), under="body")))

    async def on_http(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 404:
            return error_response(NotFound("no such path"))
        if exc.status_code == 405:
            reply = error_response(MethodNotAllowed("the path exists, the method does not"))
            # RFC 9110 §15.5.6: a 405 names the methods the path has (Starlette's `Allow`).
            reply.headers.update(exc.headers or {})
            return reply
        body = {"error": {"code": "invalid_request", "message": str(exc.detail)}}
        return JSONResponse(body, status_code=exc.status_code)

    async def on_crash(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(InternalError("internal error; nothing was committed"))

    app.add_exception_handler(EmsgError, on_emsg)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_crash)


def _strip_validation(schema: dict[str, Any]) -> None:
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            if isinstance(operation, dict):
                operation.get("responses", {}).pop("422", None)
    schemas = schema.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)


def install_openapi(app: FastAPI, extra_tags: Iterable[dict[str, str]] = ()) -> None:
    """FastAPI's OpenAPI without its 422 entries: we answer 400 in our own schema."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
                tags=list(extra_tags) or None,
            )
            _strip_validation(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
