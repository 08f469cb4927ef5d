"""Signed requests to other homeservers, and their replies read within bounds."""

from __future__ import annotations

import logging
from typing import Any, Final

import httpx

from emsg.proto.errors import EmsgError, RemoteUnavailable, error_from_wire
from emsg.proto.federation import KEYS_PATH
from emsg.proto.jsoncodec import dumps, loads_strict
from emsg.server.clock import Clock
from emsg.server.federation import signing
from emsg.server.federation.discovery import read_limited
from emsg.server.federation.keys import SigningKeyring
from emsg.server.federation.transport import DOMAIN_EXTENSION

log = logging.getLogger("emsg.federation")

MAX_REPLY_BYTES: Final = 4 * 1024 * 1024


class FederationClient:
    def __init__(
        self,
        origin: str,
        keyring: SigningKeyring,
        http: httpx.AsyncClient,
        clock: Clock,
    ) -> None:
        self.origin = origin
        self._keyring = keyring
        self.http = http
        self._clock = clock

    async def request(self, method: str, destination: str, path: str, body: Any = None) -> Any:
        """Send a signed request; return the JSON reply, or raise the peer's error
        (`EmsgError`), or `RemoteUnavailable` if it cannot be reached."""
        content = b"" if body is None else dumps(body)
        headers = {"content-type": "application/json"} if body is not None else {}
        request = self.http.build_request(
            method, f"https://{destination}{path}", content=content, headers=headers,
            extensions={DOMAIN_EXTENSION: destination},
        )  # fmt: skip
        now = self._clock.now_ms()
        signing.sign(request, content, self.origin, self._keyring.current(now), now // 1000)
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
        except EmsgError:
            raise
        except (httpx.HTTPError, OSError, ValueError) as exc:
            raise RemoteUnavailable(
                f"{request.extensions.get(DOMAIN_EXTENSION)}: {type(exc).__name__}: {exc}"
            ) from None
        try:
            value = loads_strict(raw) if raw else None
        except EmsgError:
            raise RemoteUnavailable(f"malformed reply (HTTP {response.status_code})") from None
        if response.status_code >= 400:
            if response.status_code >= 500 or response.status_code in (401, 408, 429):
                err = error_from_wire(response.status_code, value)
                raise RemoteUnavailable(f"the peer answered {response.status_code}: {err.message}")
            raise error_from_wire(response.status_code, value)
        return value
