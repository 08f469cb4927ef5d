"""Encrypting contents to verified devices and sending the envelopes.

Shared by text messages and device-to-device contents (identity and history
shares, verification). Sends go over the open stream when `listen()` holds one,
else over HTTP with retries; both carry the same transaction id, so a send that
failed on the stream and is repeated over HTTP is stored once.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable
from typing import Final

import httpx
from websockets.exceptions import WebSocketException

from emsg.client.errors import NotLoggedIn
from emsg.client.transport import HttpApi, StreamSession
from emsg.crypto.errors import CryptoError
from emsg.crypto.identity import VerifiedDeviceList
from emsg.crypto.olm import Olm
from emsg.proto.content import ContentHeader
from emsg.proto.errors import ProtocolViolation, RateLimited
from emsg.proto.wire import (
    MAX_ENVELOPES_PER_SEND,
    ClaimedDevice,
    KeysClaimRequest,
    KeysClaimResult,
    OutgoingEnvelope,
    SendRequest,
    SendResult,
)

log = logging.getLogger(__name__)

_SEND_ATTEMPTS: Final = 6
_MAX_BACKOFF: Final = 30.0


class Sender:
    def __init__(self, api: HttpApi, olm: Olm) -> None:
        self._api = api
        self._olm = olm
        # The stream `listen()` holds open, if any: sends are pipelined over it.
        self.stream: StreamSession | None = None
        # Held from encryption until the ciphertexts are on the wire. A receiving Olm
        # chain keeps only 40 skipped message keys, so ciphertexts that overtake each
        # other by more than that can never be decrypted (and people expect their
        # messages in the order they wrote them).
        self.order = asyncio.Lock()

    def _authed(self) -> HttpApi:
        if self._api.token is None:
            raise NotLoggedIn()
        return self._api

    async def claim(
        self, devices: VerifiedDeviceList, device_ids: list[str]
    ) -> dict[str, ClaimedDevice]:
        """One-time keys for the devices this device has no session with yet."""
        need = [d for d in device_ids if not self._olm.has_session(devices.device(d).curve25519)]
        if not need:
            return {}
        result = await self._authed().call_model(
            KeysClaimResult,
            "POST",
            "/keys/claim",
            KeysClaimRequest(address=devices.address, device_ids=need),
        )
        # Only keys of devices we asked for: a server cannot add one by answering more.
        return {
            c.device_keys.device_id: c for c in result.devices if c.device_keys.device_id in need
        }

    def encrypt_to(
        self,
        content: ContentHeader,
        devices: VerifiedDeviceList,
        device_ids: list[str],
        claimed: dict[str, ClaimedDevice],
    ) -> list[OutgoingEnvelope]:
        out = []
        for device_id in device_ids:
            try:
                out.append(self._olm.encrypt(content, devices, device_id, claimed.get(device_id)))
            except CryptoError as exc:  # no key left, or a key that does not verify
                log.warning("not sending to %s/%s: %s", devices.address, device_id, exc)
        return out

    async def send(self, envelopes: list[OutgoingEnvelope]) -> list[SendResult]:
        """Send envelopes encrypted under `order`, which the caller still holds."""
        return list(await asyncio.gather(*await self.submit(envelopes)))

    @staticmethod
    def plan(envelopes: list[OutgoingEnvelope]) -> list[tuple[str, SendRequest]]:
        """The sends that carry `envelopes`, each with a fresh transaction id."""
        return [
            (
                secrets.token_urlsafe(18),
                SendRequest(envelopes=envelopes[start : start + MAX_ENVELOPES_PER_SEND]),
            )
            for start in range(0, len(envelopes), MAX_ENVELOPES_PER_SEND)
        ]

    async def submit(self, envelopes: list[OutgoingEnvelope]) -> list[Awaitable[SendResult]]:
        return await self.submit_planned(self.plan(envelopes))

    async def submit_planned(
        self, sends: list[tuple[str, SendRequest]]
    ) -> list[Awaitable[SendResult]]:
        """Put the sends on the wire in order; return what to await for the replies.

        Call with `order` held. Over the stream only the frame is written, so sends
        stay pipelined; over HTTP, where concurrent requests can overtake each other,
        each request completes before the next one starts.
        """
        replies: list[Awaitable[SendResult]] = []
        for txn_id, batch in sends:
            stream = self.stream
            if stream is not None:
                try:
                    sent = await stream.submit(txn_id, list(batch.envelopes))
                except (OSError, WebSocketException, ProtocolViolation) as exc:
                    log.info("stream send %s failed (%s); sending over HTTP", txn_id, exc)
                else:
                    replies.append(self._settle(sent, txn_id, batch))
                    continue
            try:
                result = await self._put_send(txn_id, batch)
            except Exception as exc:  # this send's outcome; the others still go
                replies.append(_failed(exc))
            else:
                replies.append(_done(result))
        return replies

    async def _settle(
        self, sent: asyncio.Future[SendResult], txn_id: str, batch: SendRequest
    ) -> SendResult:
        try:
            return await sent
        except (OSError, WebSocketException, ProtocolViolation) as exc:
            # The same transaction id over HTTP: stored once if the frame did arrive.
            log.info("stream send %s failed (%s); falling back to HTTP", txn_id, exc)
            return await self._put_send(txn_id, batch)

    async def _put_send(self, txn_id: str, batch: SendRequest) -> SendResult:
        """PUT the same transaction until the server answers: it is idempotent."""
        delay = 0.25
        for attempt in range(_SEND_ATTEMPTS):
            try:
                return await self._authed().call_model(SendResult, "PUT", f"/send/{txn_id}", batch)
            except (httpx.TransportError, RateLimited) as exc:
                if attempt == _SEND_ATTEMPTS - 1:
                    raise
                wait = exc.retry_after if isinstance(exc, RateLimited) else delay
                log.info("send %s failed (%s); retrying in %.2fs", txn_id, exc, wait)
                await asyncio.sleep(min(wait, _MAX_BACKOFF))
                delay = min(delay * 2, _MAX_BACKOFF)
        raise AssertionError("unreachable")  # pragma: no cover

    async def put_once(self, txn_id: str, batch: SendRequest) -> SendResult:
        """PUT a send once, without retries (for a send repeated from the outbox)."""
        return await self._authed().call_model(SendResult, "PUT", f"/send/{txn_id}", batch)

    async def send_to_devices(
        self, content: ContentHeader, devices: VerifiedDeviceList, device_ids: list[str]
    ) -> int:
        """Encrypt one device-to-device content to `device_ids` and send it; how many went."""
        async with self.order:
            claimed = await self.claim(devices, device_ids)
            envelopes = self.encrypt_to(content, devices, device_ids, claimed)
            if envelopes:
                await self.send(envelopes)
        return len(envelopes)


async def _done(result: SendResult) -> SendResult:
    return result


async def _failed(exc: Exception) -> SendResult:
    raise exc
