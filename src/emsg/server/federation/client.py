"""Signed requests to other homeservers, and their replies read within bounds."""

from __future__ import annotations

import logging
from typing import Any, Final

import httpx

from emsg.net.discovery import read_limited
from emsg.proto import httpsig
from emsg.proto.errors import EmsgError, RemoteUnavailable, error_from_wire
from emsg.proto.federation import FEDERATION_PREFIX, KEYS_PATH
from emsg.proto.jsoncodec import dumps, loads_strict
from emsg.server.clock import Clock
from emsg.server.federation import signing
from emsg.server.federation.keys import SigningKeyring
from emsg.server.federation.transport import (
    DOMAIN_EXTENSION,
    MAX_REPLY_BYTES,
    GuardedTransport,
)

log = logging.getLogger("emsg.federation")

_SEND_PREFIX: Final = f"{FEDERATION_PREFIX}/send/"
# Headers about the transfer itself, which the lean client writes (or cannot honour:
# it decodes no compressed reply); every other header of the signed request is kept.
_TRANSFER_HEADERS: Final = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "accept-encoding"}
)


class FederationClient:
    def __init__(
        self,
        origin: str,
        keyring: SigningKeyring,
        http: httpx.AsyncClient,
        clock: Clock,
        lean: GuardedTransport | None = None,
    ) -> None:
        self.origin = origin
        self._keyring = keyring
        self.http = http
        self._clock = clock
        # Transactions, the outbox's hot path, bypass httpx when the transport is
        # the guarded one (in-process tests inject an ASGI router instead).
        self._lean = lean
        self._lean_headers = {k: v for k, v in http.headers.items() if k not in _TRANSFER_HEADERS}

    async def request(
        self,
        method: str,
        destination: str,
        path: str,
        body: Any = None,
        *,
        encoded: bytes | None = None,
    ) -> Any:
        """Send a signed request; return the JSON reply, or raise the peer's error
        (`EmsgError`), or `RemoteUnavailable` if it cannot be reached.

        `encoded` is `body` already serialised (the outbox needs the bytes anyway)."""
        content = encoded if encoded is not None else b"" if body is None else dumps(body)
        headers = {"content-type": "application/json"} if content else {}
        url = f"https://{destination}{path}"
        now = self._clock.now_ms()
        key, created = self._keyring.current(now), now // 1000
        lean = self._lean if method == "PUT" and path.startswith(_SEND_PREFIX) else None
        if lean is not None:
            # Idempotent by transaction id: safe for the lean client's one retry.
            # The headers are httpx's, written directly (building an httpx.Request
            # just to copy them cost as much as signing).
            at = httpsig.target(url)
            fields = None
            if at is not None and at.authority == destination:
                fields = signing.profile_fields(method, at, content, self.origin, key, created)
            if fields is not None:
                headers = {**self._lean_headers, **headers, **fields}
                return await self._send_lean(
                    lean, destination, destination, method, path, headers, content
                )
        request = self.http.build_request(
            method, url, content=content, headers=headers,
            extensions={DOMAIN_EXTENSION: destination},
        )  # fmt: skip
        signing.sign(request, content, self.origin, key, created)
        if lean is not None:
            headers = {k: v for k, v in request.headers.items() if k not in _TRANSFER_HEADERS}
            target = request.url.raw_path.decode("ascii")
            return await self._send_lean(
                lean, destination, request.headers["host"], method, target, headers, content
            )
        return await self._send(request)

    async def fetch_keys(self, destination: str) -> Any:
        request = self.http.build_request(
            "GET", f"https://{destination}{KEYS_PATH}",
            extensions={DOMAIN_EXTENSION: destination},
        )  # fmt: skip
        return await self._send(request)

    async def _send(self, request: httpx.Request) -> Any:
        try:
            response = await self.http.send(request, stream=True)
            try:
                raw = await read_limited(response, MAX_REPLY_BYTES)
            finally:
                await response.aclose()
        except (httpx.HTTPError, OSError, ValueError) as exc:
            raise RemoteUnavailable(
                f"{request.extensions.get(DOMAIN_EXTENSION)}: {type(exc).__name__}: {exc}"
            ) from None
        return _reply(response.status_code, raw)

    async def _send_lean(
        self,
        lean: GuardedTransport,
        destination: str,
        authority: str,
        method: str,
        target: str,
        headers: dict[str, str],
        content: bytes,
    ) -> Any:
        """`_send` on a lean connection, with `Host: <authority>` (the signed one);
        the same errors."""
        try:
            reply = await lean.send_lean(destination, method, target, authority, headers, content)
        except (httpx.HTTPError, OSError, ValueError) as exc:
            raise RemoteUnavailable(f"{destination}: {type(exc).__name__}: {exc}") from None
        return _reply(reply.status, reply.content)


def _reply(status: int, raw: bytes) -> Any:
    """The JSON value of a success, or the error a failure stands for, raised."""
    try:
        value = loads_strict(raw) if raw else None
    except EmsgError:
        raise RemoteUnavailable(f"malformed reply (HTTP {status})") from None
    if status >= 400:
        if status >= 500 or status in (401, 408, 429):
            err = error_from_wire(status, value)
            raise RemoteUnavailable(f"the peer answered {status}: {err.message}")
        raise error_from_wire(status, value)
    return value
