"""The federation service: one object built with the app, used by the client API
services (remote recipients and lookups) and by the federation routes."""

from __future__ import annotations

import hashlib
import socket
import ssl
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote

import httpx

from emsg.proto.errors import Forbidden, RemoteUnavailable
from emsg.proto.federation import (
    FEDERATION_PREFIX,
    FedClaimRequest,
    ServerKeys,
    Transaction,
)
from emsg.proto.ids import Address
from emsg.proto.wire import DeviceList, KeysClaimResult
from emsg.server.clock import Clock
from emsg.server.fanout import Notifier
from emsg.server.federation.auth import Authenticator, RemoteKeys, Signed
from emsg.server.federation.client import FederationClient
from emsg.server.federation.config import FederationSettings
from emsg.server.federation.discovery import Resolver
from emsg.server.federation.inbound import Inbound, txn_hash
from emsg.server.federation.keys import SigningKeyring
from emsg.server.federation.outbox import OutboxSender
from emsg.server.federation.transport import CONNECT_TIMEOUT, GuardedTransport, ssl_context
from emsg.server.storage.ports import UnitOfWork


class Federation:
    def __init__(
        self,
        domain: str,
        settings: FederationSettings,
        keyring: SigningKeyring,
        uow: UnitOfWork,
        clock: Clock,
        notifier: Notifier,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.domain = domain
        self.settings = settings
        self.keyring = keyring
        self._clock = clock
        self._notifier = notifier
        guarded: GuardedTransport | None = None
        if transport is None:
            ctx: ssl.SSLContext = ssl_context(settings.ca_file)
            guarded = GuardedTransport(
                None, ctx, settings.allow_private_addresses, settings.request_timeout
            )
            transport = guarded
        # Closing this client closes its transport, the lean connections included.
        self.http = httpx.AsyncClient(
            transport=transport,
            timeout=httpx.Timeout(settings.request_timeout, connect=CONNECT_TIMEOUT),
            follow_redirects=False,
        )
        self.resolver = Resolver(settings.resolve, self.http, clock.monotonic,
                                 settings.discovery_ttl)  # fmt: skip
        if guarded is not None:
            guarded.set_resolver(self.resolver)
        self.client = FederationClient(domain, keyring, self.http, clock, guarded)
        self.remote_keys = RemoteKeys(uow, self.client, clock)
        self.auth = Authenticator(domain, uow, self.remote_keys, clock)
        self.inbound = Inbound(domain, uow, clock)
        instance = f"{socket.gethostname()}|{keyring.path.resolve()}"
        self.outbox = OutboxSender(
            uow, self.client, clock, notifier, settings.retry_policy, settings.batch_size,
            hashlib.sha256(instance.encode()).hexdigest()[:16],
        )  # fmt: skip

    async def start(self) -> None:
        await self.outbox.start()

    async def close(self) -> None:
        await self.outbox.close()
        await self.http.aclose()

    def wake(self, destinations: Iterable[str]) -> None:
        for destination in set(destinations):
            self.outbox.wake(destination)

    def keys_document(self) -> ServerKeys:
        return self.keyring.document(self.domain, self._clock.now_ms())

    # --- lookups proxied for our own clients ---------------------------------------

    async def device_list(self, address: Address) -> DeviceList:
        path = f"{FEDERATION_PREFIX}/device-list/{quote(str(address), safe='')}"
        reply = await self.client.request("GET", str(address.domain), path)
        try:
            found = DeviceList.model_validate(reply)
        except ValueError:
            raise RemoteUnavailable("the peer sent a malformed device list") from None
        if found.address != str(address):
            raise RemoteUnavailable("the peer sent the device list of another address")
        return found

    async def claim(
        self, requester: str, address: Address, device_ids: list[str] | None
    ) -> KeysClaimResult:
        body = FedClaimRequest(requester=requester, address=str(address), device_ids=device_ids)
        reply = await self.client.request(
            "POST", str(address.domain), f"{FEDERATION_PREFIX}/keys/claim",
            body.model_dump(mode="json", exclude_none=True),
        )  # fmt: skip
        try:
            found = KeysClaimResult.model_validate(reply)
        except ValueError:
            raise RemoteUnavailable("the peer sent a malformed key claim") from None
        if found.address != str(address) or any(
            d.device_keys.address != str(address) for d in found.devices
        ):
            raise RemoteUnavailable("the peer sent keys of another address")
        return found

    # --- the inbound side ---------------------------------------------------------

    async def receive(
        self, signed: Signed, txn_id: str, txn: Transaction, raw: bytes
    ) -> dict[str, Any]:
        await self.outbox.heard_from(signed.origin)
        received = await self.inbound.receive(signed, txn_id, txn, txn_hash(raw))
        if received.woken:
            await self._notifier.publish(received.woken)
        if received.replies_to is not None:
            self.outbox.wake(received.replies_to)
        return received.result

    @staticmethod
    def check_requester(origin: str, body: FedClaimRequest) -> None:
        if str(Address.parse(body.requester).domain) != origin:
            raise Forbidden(f"{origin} may not claim keys for {body.requester}")
