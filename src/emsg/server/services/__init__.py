"""Domain services and the one place that wires them together."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx

from emsg.server.clock import Clock
from emsg.server.fanout import Notifier
from emsg.server.federation.keys import SigningKeyring
from emsg.server.metrics import Metrics
from emsg.server.ratelimit import RateLimiter
from emsg.server.services.accounts import AccountService
from emsg.server.services.common import AddressRules
from emsg.server.services.contacts import ContactService
from emsg.server.services.devices import DeviceService
from emsg.server.services.keys import KeyService
from emsg.server.services.messages import MessageService
from emsg.server.settings import Settings
from emsg.server.storage.ports import UnitOfWork

if TYPE_CHECKING:
    from emsg.server.federation.service import Federation


@dataclass(frozen=True, slots=True)
class Services:
    settings: Settings
    clock: Clock
    uow: UnitOfWork
    notifier: Notifier
    metrics: Metrics
    accounts: AccountService
    devices: DeviceService
    keys: KeyService
    contacts: ContactService
    messages: MessageService
    account_limiter: RateLimiter
    ip_auth_limiter: RateLimiter
    federation: Federation | None = None

    @classmethod
    def build(
        cls,
        settings: Settings,
        clock: Clock,
        uow: UnitOfWork,
        notifier: Notifier,
        metrics: Metrics,
        federation_transport: httpx.AsyncBaseTransport | None = None,
    ) -> Services:
        fed_settings = settings.federation
        rules = AddressRules(
            settings.parsed_domain, settings.allow_port_in_domain, fed_settings.enabled
        )
        # Imported here: the federation modules use the services' building blocks.
        from emsg.server.federation.contacts import RemoteContacts
        from emsg.server.federation.service import Federation

        federation = None
        remote = None
        if fed_settings.enabled:
            keyring = SigningKeyring.load(
                settings.data, clock.now_ms(), int(fed_settings.key_validity * 1000)
            )
            federation = Federation(
                settings.domain, fed_settings, keyring, uow, clock, notifier, federation_transport
            )
            remote = RemoteContacts(uow, clock, notifier, federation.wake)
        limits = settings.limits
        accounts = AccountService(uow, clock, rules, int(settings.token_ttl * 1000), notifier)
        return cls(
            settings=settings,
            clock=clock,
            uow=uow,
            notifier=notifier,
            metrics=metrics,
            accounts=accounts,
            devices=DeviceService(uow, clock, notifier, accounts),
            keys=KeyService(uow, rules, federation),
            contacts=ContactService(uow, clock, rules, notifier, remote),
            messages=MessageService(
                uow, clock, rules, notifier, metrics, federation.wake if federation else None
            ),
            account_limiter=RateLimiter(limits.account_rate, limits.account_burst, clock),
            ip_auth_limiter=RateLimiter(
                limits.ip_auth_rate_per_minute / 60.0, limits.ip_auth_burst, clock
            ),
            federation=federation,
        )

    async def start(self) -> None:
        if self.federation is not None:
            await self.federation.start()

    async def close(self) -> None:
        if self.federation is not None:
            await self.federation.close()
        await self.messages.close()
        await self.notifier.close()
        await self.uow.close()
