"""Registration, login, logout and token authentication."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from typing import Final

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from emsg.proto.errors import (
    AddressTaken,
    Forbidden,
    ReservedAddress,
    TokenExpired,
    Unauthorized,
    UnknownDevice,
    WrongDomain,
)
from emsg.proto.wire import Session
from emsg.server.clock import Clock
from emsg.server.fanout import Notifier
from emsg.server.services.common import AddressRules, Caller
from emsg.server.storage.ports import Tx, UnitOfWork
from emsg.server.storage.records import TokenInfo

_CACHE_MAX: Final = 50_000


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


class AccountService:
    def __init__(
        self,
        uow: UnitOfWork,
        clock: Clock,
        rules: AddressRules,
        token_ttl_ms: int,
        notifier: Notifier,
    ) -> None:
        self._uow = uow
        self._notifier = notifier
        self._clock = clock
        self._rules = rules
        self._ttl_ms = token_ttl_ms
        self._hasher = PasswordHasher()  # argon2id with the library's current defaults
        # Hashed once so that an unknown address costs as much as a wrong password.
        self._dummy_hash = self._hasher.hash(secrets.token_hex(16))
        # token hash -> token info; the hot path then needs no query. Logout and
        # revocation end a token early, and evict it here (`forget_tokens`) after
        # their commit. One process only: several server processes would have to
        # pass the eviction on over the notifier before sharing a database.
        self._cache: dict[str, TokenInfo] = {}

    def _address_here(self, raw: str) -> str:
        address = self._rules.parse(raw)
        if address.domain != self._rules.domain:
            raise WrongDomain(f"this server serves {self._rules.domain}, not {address.domain}")
        return str(address)

    async def register(self, raw_address: str, password: str, device_name: str) -> Session:
        address = self._address_here(raw_address)
        if self._rules.parse(raw_address).is_reserved:
            raise ReservedAddress(f"{address.partition('#')[0]!r} is reserved")
        async with self._uow.read() as tx:
            if await tx.accounts.get(address) is not None:
                raise AddressTaken(f"{address} is taken")
        password_hash = await asyncio.to_thread(self._hasher.hash, password)
        now = self._clock.now_ms()
        async with self._uow.write() as tx:
            if not await tx.accounts.create(address, password_hash, now):
                raise AddressTaken(f"{address} is taken")
            session, info, token_hash = await self._new_device(tx, address, device_name, now)
        self._cache[token_hash] = info
        return session

    async def check_password(self, address: str, password: str) -> None:
        """`unauthorized` unless `password` is the account's (argon2, off the loop)."""
        async with self._uow.read() as tx:
            account = await tx.accounts.get(address)
        stored = account.password_hash if account is not None else self._dummy_hash
        try:
            await asyncio.to_thread(self._hasher.verify, stored, password)
        except (VerificationError, InvalidHashError):
            raise Unauthorized("wrong address or password") from None
        if account is None:
            raise Unauthorized("wrong address or password")

    async def login(
        self, raw_address: str, password: str, device_name: str, device_id: str | None = None
    ) -> Session:
        """A new device with its token; or, with `device_id`, a new token for that
        existing device of the account, which keeps its keys, its queue and its place
        in the device list (its old tokens stay valid until they expire)."""
        address = self._address_here(raw_address)
        await self.check_password(address, password)
        now = self._clock.now_ms()
        expired: list[str] = []
        async with self._uow.write() as tx:
            if device_id is None:
                session, info, token_hash = await self._new_device(tx, address, device_name, now)
            else:
                session, info, token_hash = await self._same_device(tx, address, device_id, now)
                expired = await tx.tokens.delete_expired_for_device(device_id, now)
        self.forget_tokens(expired)
        self._cache[token_hash] = info
        return session

    async def _same_device(
        self, tx: Tx, address: str, device_id: str, now: int
    ) -> tuple[Session, TokenInfo, str]:
        device = await tx.devices.get(device_id)
        if device is None or device.address != address:
            raise UnknownDevice(f"{address} has no device {device_id}")
        if device.revoked:
            raise Forbidden(f"device {device_id} was logged out or revoked; log in as a new device")
        return await self._new_token(tx, address, device_id, now)

    async def _new_device(
        self, tx: Tx, address: str, device_name: str, now: int
    ) -> tuple[Session, TokenInfo, str]:
        device_id = secrets.token_urlsafe(9).replace("-", "A").replace("_", "B")
        await tx.devices.create(device_id, address, device_name, now)
        return await self._new_token(tx, address, device_id, now)

    async def _new_token(
        self, tx: Tx, address: str, device_id: str, now: int
    ) -> tuple[Session, TokenInfo, str]:
        token = secrets.token_urlsafe(32)
        info = TokenInfo(device_id, address, now + self._ttl_ms)
        await tx.tokens.add(hash_token(token), info)
        return (
            Session(address=address, device_id=device_id, token=token, expires_at=info.expires_at),
            info,
            hash_token(token),
        )

    async def authenticate(self, token: str | None) -> Caller:
        caller, _ = await self.authenticate_until(token)
        return caller

    async def authenticate_until(self, token: str | None) -> tuple[Caller, int]:
        """The caller, and when its token expires (Unix ms)."""
        if not token:
            raise Unauthorized("missing bearer token")
        token_hash = hash_token(token)
        info = self._cache.get(token_hash)
        if info is None:
            async with self._uow.read() as tx:
                info = await tx.tokens.get(token_hash)
            if info is None:
                raise Unauthorized("unknown or revoked token")
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
            self._cache[token_hash] = info
        if info.expires_at <= self._clock.now_ms():
            raise TokenExpired("the token has expired; log in again")
        return Caller(info.address, info.device_id), info.expires_at

    async def refusal(self, token: str) -> Unauthorized | TokenExpired | None:
        """Why a token that authenticated earlier no longer works (logged out,
        revoked, expired), or None: a WebSocket asks each time it is woken."""
        try:
            await self.authenticate(token)
        except (Unauthorized, TokenExpired) as exc:
            return exc
        return None

    def forget_tokens(self, token_hashes: list[str]) -> None:
        """Evict tokens deleted by a committed transaction (logout, revocation)."""
        for token_hash in token_hashes:
            self._cache.pop(token_hash, None)

    async def logout(self, caller: Caller) -> None:
        async with self._uow.write() as tx:
            hashes = await tx.tokens.delete_for_device(caller.device_id)
            await tx.devices.revoke(caller.device_id)
        self.forget_tokens(hashes)
        # As a revocation does: the device's open stream wakes, finds its token gone
        # and closes with 4401, instead of staying open and silent.
        await self._notifier.publish([caller.device_id])
