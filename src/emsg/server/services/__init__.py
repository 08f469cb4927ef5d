"""Domain services and the one place that wires them together."""

from __future__ import annotations

from dataclasses import dataclass

from emsg.server.clock import Clock
from emsg.server.fanout import Notifier
from emsg.server.metrics import Metrics
from emsg.server.ratelimit import RateLimiter
from emsg.server.services.accounts import AccountService
from emsg.server.services.common import AddressRules
from emsg.server.services.contacts import ContactService
from emsg.server.services.keys import KeyService
from emsg.server.services.messages import MessageService
from emsg.server.settings import Settings
from emsg.server.storage.ports import UnitOfWork


@dataclass(frozen=True, slots=True)
class Services:
    settings: Settings
    clock: Clock
    uow: UnitOfWork
    notifier: Notifier
    metrics: Metrics
    accounts: AccountService
    keys: KeyService
    contacts: ContactService
    messages: MessageService
    account_limiter: RateLimiter
    ip_auth_limiter: RateLimiter

    @classmethod
    def build(
        cls,
        settings: Settings,
        clock: Clock,
        uow: UnitOfWork,
        notifier: Notifier,
        metrics: Metrics,
    ) -> Services:
        rules = AddressRules(settings.parsed_domain, settings.allow_port_in_domain)
        limits = settings.limits
        return cls(
            settings=settings,
            clock=clock,
            uow=uow,
            notifier=notifier,
            metrics=metrics,
            accounts=AccountService(uow, clock, rules, int(settings.token_ttl * 1000)),
            keys=KeyService(uow, rules),
            contacts=ContactService(uow, clock, rules, notifier),
            messages=MessageService(uow, clock, rules, notifier, metrics),
            account_limiter=RateLimiter(limits.account_rate, limits.account_burst, clock),
            ip_auth_limiter=RateLimiter(
                limits.ip_auth_rate_per_minute / 60.0, limits.ip_auth_burst, clock
            ),
        )

    async def close(self) -> None:
        await self.notifier.close()
        await self.uow.close()
