"""SQLAlchemy Core repositories: every query of the server lives here.

Each repository wraps the connection of the current transaction and returns
records from `storage.records`, never rows. Statements are built once, at import,
with named parameters: building and hashing a statement per call costs several
times more than executing it on SQLite.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Final

from sqlalchemy import delete, func, insert, select, update

from emsg.proto.wire import StrangerPolicy
from emsg.server.storage.records import Account, Device, TokenInfo
from emsg.server.storage.sql import tables as t
from emsg.server.storage.sql.base import (
    Repo,
    dumps,
    insert_ignore,
    loads_opt,
    param,
    params,
    split_cached,
)

# --- accounts ---------------------------------------------------------------------

_ACCOUNT_CREATE: Final = insert_ignore(t.accounts)
_ACCOUNT_GET: Final = select(t.accounts).where(t.accounts.c.address == param("address"))
_ACCOUNT_GET_MANY: Final = select(t.accounts).where(t.accounts.c.address.in_(params("addresses")))
_ACCOUNT_UPDATE: Final = update(t.accounts).where(t.accounts.c.address == param("address"))


class SqlAccounts(Repo):
    __slots__ = ()

    @staticmethod
    def _record(row: Any) -> Account:
        return Account(
            address=row.address,
            password_hash=row.password_hash,
            policy=StrangerPolicy(row.policy),
            identity_key=row.identity_key,
            device_list=loads_opt(row.device_list),
            device_list_version=row.device_list_version,
        )

    async def create(self, address: str, password_hash: str, now: int) -> bool:
        values = {
            "address": address,
            "password_hash": password_hash,
            "policy": StrangerPolicy.OPEN.value,
            "device_list_version": 0,
            "created_at": now,
        }
        result = await self._c.execute(_ACCOUNT_CREATE[self._c.dialect], values)
        return bool(result.rowcount)

    async def get(self, address: str) -> Account | None:
        return (await self.get_many([address])).get(address)

    async def get_many(self, addresses: Sequence[str]) -> dict[str, Account]:
        cache = self._caches.accounts
        usable = self._cache_usable(cache)
        found, missing = split_cached(cache, addresses, usable)
        if missing:
            generation = cache.generation
            if len(missing) == 1:
                rows = await self._c.execute(_ACCOUNT_GET, {"b_address": missing[0]})
            else:
                rows = await self._c.execute(_ACCOUNT_GET_MANY, {"b_addresses": missing})
            read = {row.address: self._record(row) for row in rows}
            if usable:
                cache.fill(generation, read.items())
            found.update(read)
        return found

    async def set_policy(self, address: str, policy: StrangerPolicy) -> None:
        self._inv.drop(self._caches.accounts, address)
        await self._c.execute(_ACCOUNT_UPDATE, {"b_address": address, "policy": policy.value})

    async def set_device_list(
        self, address: str, identity_key: str, device_list: dict[str, Any], version: int
    ) -> None:
        self._inv.drop(self._caches.accounts, address)
        values = {
            "b_address": address,
            "identity_key": identity_key,
            "device_list": dumps(device_list),
            "device_list_version": version,
        }
        await self._c.execute(_ACCOUNT_UPDATE, values)


# --- devices ----------------------------------------------------------------------

_DEVICE_CREATE: Final = insert(t.devices)
_DEVICE_GET: Final = select(t.devices).where(t.devices.c.device_id == param("device_id"))
_DEVICE_GET_MANY: Final = select(t.devices).where(t.devices.c.device_id.in_(params("device_ids")))
_DEVICE_ACTIVE_OF: Final = (
    select(t.devices)
    .where(t.devices.c.address == param("address"), t.devices.c.revoked.is_(False))
    .order_by(t.devices.c.created_at, t.devices.c.device_id)
)
_DEVICE_ALL_OF: Final = (
    select(t.devices)
    .where(t.devices.c.address == param("address"))
    .order_by(t.devices.c.created_at, t.devices.c.device_id)
)
_DEVICE_UPDATE: Final = update(t.devices).where(t.devices.c.device_id == param("device_id"))
_DEVICE_FORGET: Final = tuple(
    delete(table).where(table.c.device_id == param("device_id"))
    for table in (t.events, t.one_time_keys, t.fallback_keys)
)


class SqlDevices(Repo):
    __slots__ = ()

    @staticmethod
    def _record(row: Any) -> Device:
        return Device(
            device_id=row.device_id,
            address=row.address,
            name=row.name,
            revoked=bool(row.revoked),
            device_keys=loads_opt(row.device_keys),
            created_at=row.created_at,
        )

    async def create(self, device_id: str, address: str, name: str, now: int) -> None:
        values = {
            "device_id": device_id,
            "address": address,
            "name": name,
            "revoked": False,
            "created_at": now,
        }
        await self._c.execute(_DEVICE_CREATE, values)

    async def get(self, device_id: str) -> Device | None:
        return (await self.get_many([device_id])).get(device_id)

    async def get_many(self, device_ids: Sequence[str]) -> dict[str, Device]:
        cache = self._caches.devices
        usable = self._cache_usable(cache)
        found, missing = split_cached(cache, device_ids, usable)
        if missing:
            generation = cache.generation
            if len(missing) == 1:
                rows = await self._c.execute(_DEVICE_GET, {"b_device_id": missing[0]})
            else:
                rows = await self._c.execute(_DEVICE_GET_MANY, {"b_device_ids": missing})
            read = {row.device_id: self._record(row) for row in rows}
            if usable:
                cache.fill(generation, read.items())
            found.update(read)
        return found

    async def active_of(self, address: str) -> list[Device]:
        rows = await self._c.execute(_DEVICE_ACTIVE_OF, {"b_address": address})
        return [self._record(row) for row in rows]

    async def all_of(self, address: str) -> list[Device]:
        rows = await self._c.execute(_DEVICE_ALL_OF, {"b_address": address})
        return [self._record(row) for row in rows]

    async def revoke(self, device_id: str) -> None:
        self._inv.drop(self._caches.devices, device_id)
        await self._c.execute(_DEVICE_UPDATE, {"b_device_id": device_id, "revoked": True})
        # A revoked device will never fetch these again.
        for stmt in _DEVICE_FORGET:
            await self._c.execute(stmt, {"b_device_id": device_id})

    async def set_device_keys(self, device_id: str, keys: dict[str, Any]) -> None:
        self._inv.drop(self._caches.devices, device_id)
        values = {"b_device_id": device_id, "device_keys": dumps(keys)}
        await self._c.execute(_DEVICE_UPDATE, values)


# --- tokens -----------------------------------------------------------------------

_TOKEN_ADD: Final = insert(t.tokens)
_TOKEN_GET: Final = select(t.tokens.c.device_id, t.tokens.c.address, t.tokens.c.expires_at).where(
    t.tokens.c.token_hash == param("token_hash")
)
_TOKEN_OF_DEVICE: Final = select(t.tokens.c.token_hash).where(
    t.tokens.c.device_id == param("device_id")
)
_TOKEN_DELETE_FOR_DEVICE: Final = delete(t.tokens).where(t.tokens.c.device_id == param("device_id"))
_TOKEN_EXPIRED_OF_DEVICE: Final = select(t.tokens.c.token_hash).where(
    t.tokens.c.device_id == param("device_id"), t.tokens.c.expires_at <= param("now")
)
_TOKEN_DELETE_EXPIRED_FOR_DEVICE: Final = delete(t.tokens).where(
    t.tokens.c.device_id == param("device_id"), t.tokens.c.expires_at <= param("now")
)


class SqlTokens(Repo):
    __slots__ = ()

    async def add(self, token_hash: str, info: TokenInfo) -> None:
        values = {
            "token_hash": token_hash,
            "device_id": info.device_id,
            "address": info.address,
            "expires_at": info.expires_at,
        }
        await self._c.execute(_TOKEN_ADD, values)

    async def get(self, token_hash: str) -> TokenInfo | None:
        row = (await self._c.execute(_TOKEN_GET, {"b_token_hash": token_hash})).first()
        return None if row is None else TokenInfo(row.device_id, row.address, row.expires_at)

    async def delete_for_device(self, device_id: str) -> list[str]:
        rows = await self._c.execute(_TOKEN_OF_DEVICE, {"b_device_id": device_id})
        hashes = [row.token_hash for row in rows]
        await self._c.execute(_TOKEN_DELETE_FOR_DEVICE, {"b_device_id": device_id})
        return hashes

    async def delete_expired_for_device(self, device_id: str, now: int) -> list[str]:
        values = {"b_device_id": device_id, "b_now": now}
        hashes = [row.token_hash for row in await self._c.execute(_TOKEN_EXPIRED_OF_DEVICE, values)]
        await self._c.execute(_TOKEN_DELETE_EXPIRED_FOR_DEVICE, values)
        return hashes


# --- identity backups ----------------------------------------------------------------

_BACKUP_GET: Final = select(t.identity_backups.c.body).where(
    t.identity_backups.c.address == param("address")
)
_BACKUP_DELETE: Final = delete(t.identity_backups).where(
    t.identity_backups.c.address == param("address")
)
_BACKUP_ADD: Final = insert(t.identity_backups)


class SqlIdentityBackups(Repo):
    __slots__ = ()

    async def get(self, address: str) -> dict[str, Any] | None:
        row = (await self._c.execute(_BACKUP_GET, {"b_address": address})).first()
        return None if row is None else dict(json.loads(row.body))

    async def put(self, address: str, body: dict[str, Any], now: int) -> None:
        await self._c.execute(_BACKUP_DELETE, {"b_address": address})
        values = {"address": address, "body": dumps(body), "updated_at": now}
        await self._c.execute(_BACKUP_ADD, values)


# --- one-time and fallback keys -----------------------------------------------------

_OTK_ADD: Final = insert(t.one_time_keys)
_OTK_COUNT: Final = select(func.count()).where(t.one_time_keys.c.device_id == param("device_id"))
_OTK_EXISTING: Final = select(t.one_time_keys.c.key_id).where(
    t.one_time_keys.c.device_id == param("device_id"),
    t.one_time_keys.c.key_id.in_(params("key_ids")),
)
_OTK_FIRST: Final = (
    select(t.one_time_keys.c.id, t.one_time_keys.c.body)
    .where(t.one_time_keys.c.device_id == param("device_id"))
    .order_by(t.one_time_keys.c.id)
    .limit(1)
)
_OTK_DELETE: Final = delete(t.one_time_keys).where(t.one_time_keys.c.id == param("id"))
_FALLBACK_DELETE: Final = delete(t.fallback_keys).where(
    t.fallback_keys.c.device_id == param("device_id")
)
_FALLBACK_ADD: Final = insert(t.fallback_keys)
_FALLBACK_GET: Final = select(t.fallback_keys.c.body).where(
    t.fallback_keys.c.device_id == param("device_id")
)


class SqlKeys(Repo):
    __slots__ = ()

    async def add_one_time(self, device_id: str, keys: Sequence[dict[str, Any]]) -> None:
        if keys:
            await self._c.execute(
                _OTK_ADD,
                [{"device_id": device_id, "key_id": k["key_id"], "body": dumps(k)} for k in keys],
            )

    async def count_one_time(self, device_id: str) -> int:
        result = await self._c.execute(_OTK_COUNT, {"b_device_id": device_id})
        return int(result.scalar_one())

    async def existing_key_ids(self, device_id: str, key_ids: Sequence[str]) -> set[str]:
        rows = await self._c.execute(
            _OTK_EXISTING, {"b_device_id": device_id, "b_key_ids": list(key_ids)}
        )
        return {row.key_id for row in rows}

    async def take_one_time(self, device_id: str) -> dict[str, Any] | None:
        while True:
            row = (await self._c.execute(_OTK_FIRST, {"b_device_id": device_id})).first()
            if row is None:
                return None
            gone = await self._c.execute(_OTK_DELETE, {"b_id": row.id})
            if gone.rowcount:  # else a concurrent claim (PostgreSQL) took it: try the next
                body: dict[str, Any] = json.loads(row.body)
                return body

    async def set_fallback(self, device_id: str, key: dict[str, Any]) -> None:
        await self._c.execute(_FALLBACK_DELETE, {"b_device_id": device_id})
        await self._c.execute(_FALLBACK_ADD, {"device_id": device_id, "body": dumps(key)})

    async def get_fallback(self, device_id: str) -> dict[str, Any] | None:
        row = (await self._c.execute(_FALLBACK_GET, {"b_device_id": device_id})).first()
        return None if row is None else dict(json.loads(row.body))
