"""SQLAlchemy Core repositories: every query of the server lives here.

Each repository wraps the connection of the current transaction and returns
records from `storage.records`, never rows.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Insert, delete, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from emsg.proto.wire import ContactState, StrangerPolicy
from emsg.server.storage.records import (
    Account,
    ContactRow,
    Device,
    HeldEnvelope,
    HeldSummary,
    NewEvent,
    QueuedEvent,
    StoredTxn,
    TokenInfo,
)
from emsg.server.storage.sql import tables as t


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _loads_opt(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _insert_ignore(conn: AsyncConnection, table: Any) -> Insert:
    """INSERT that skips rows whose key exists (both backends speak ON CONFLICT)."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    return sqlite.insert(table).on_conflict_do_nothing()


class _Repo:
    __slots__ = ("_c",)

    def __init__(self, conn: AsyncConnection) -> None:
        self._c = conn


class SqlAccounts(_Repo):
    __slots__ = ()

    @staticmethod
    def _record(row: Any) -> Account:
        return Account(
            address=row.address,
            password_hash=row.password_hash,
            policy=StrangerPolicy(row.policy),
            identity_key=row.identity_key,
            device_list=_loads_opt(row.device_list),
            device_list_version=row.device_list_version,
        )

    async def create(self, address: str, password_hash: str, now: int) -> bool:
        stmt = _insert_ignore(self._c, t.accounts).values(
            address=address,
            password_hash=password_hash,
            policy=StrangerPolicy.OPEN.value,
            device_list_version=0,
            created_at=now,
        )
        result = await self._c.execute(stmt)
        return bool(result.rowcount)

    async def get(self, address: str) -> Account | None:
        row = (
            await self._c.execute(select(t.accounts).where(t.accounts.c.address == address))
        ).first()
        return None if row is None else self._record(row)

    async def get_many(self, addresses: Sequence[str]) -> dict[str, Account]:
        rows = await self._c.execute(
            select(t.accounts).where(t.accounts.c.address.in_(list(addresses)))
        )
        return {row.address: self._record(row) for row in rows}

    async def set_policy(self, address: str, policy: StrangerPolicy) -> None:
        await self._c.execute(
            update(t.accounts).where(t.accounts.c.address == address).values(policy=policy.value)
        )

    async def set_device_list(
        self, address: str, identity_key: str, device_list: dict[str, Any], version: int
    ) -> None:
        await self._c.execute(
            update(t.accounts)
            .where(t.accounts.c.address == address)
            .values(
                identity_key=identity_key,
                device_list=_dumps(device_list),
                device_list_version=version,
            )
        )


class SqlDevices(_Repo):
    __slots__ = ()

    @staticmethod
    def _record(row: Any) -> Device:
        return Device(
            device_id=row.device_id,
            address=row.address,
            name=row.name,
            revoked=bool(row.revoked),
            device_keys=_loads_opt(row.device_keys),
        )

    async def create(self, device_id: str, address: str, name: str, now: int) -> None:
        await self._c.execute(
            insert(t.devices).values(
                device_id=device_id, address=address, name=name, revoked=False, created_at=now
            )
        )

    async def get(self, device_id: str) -> Device | None:
        row = (
            await self._c.execute(select(t.devices).where(t.devices.c.device_id == device_id))
        ).first()
        return None if row is None else self._record(row)

    async def get_many(self, device_ids: Sequence[str]) -> dict[str, Device]:
        rows = await self._c.execute(
            select(t.devices).where(t.devices.c.device_id.in_(list(device_ids)))
        )
        return {row.device_id: self._record(row) for row in rows}

    async def active_of(self, address: str) -> list[Device]:
        rows = await self._c.execute(
            select(t.devices)
            .where(t.devices.c.address == address, t.devices.c.revoked.is_(False))
            .order_by(t.devices.c.created_at, t.devices.c.device_id)
        )
        return [self._record(row) for row in rows]

    async def revoke(self, device_id: str) -> None:
        await self._c.execute(
            update(t.devices).where(t.devices.c.device_id == device_id).values(revoked=True)
        )
        # A revoked device will never fetch these again.
        await self._c.execute(delete(t.events).where(t.events.c.device_id == device_id))
        await self._c.execute(
            delete(t.one_time_keys).where(t.one_time_keys.c.device_id == device_id)
        )
        await self._c.execute(
            delete(t.fallback_keys).where(t.fallback_keys.c.device_id == device_id)
        )

    async def set_device_keys(self, device_id: str, keys: dict[str, Any]) -> None:
        await self._c.execute(
            update(t.devices)
            .where(t.devices.c.device_id == device_id)
            .values(device_keys=_dumps(keys))
        )


class SqlTokens(_Repo):
    __slots__ = ()

    async def add(self, token_hash: str, info: TokenInfo) -> None:
        await self._c.execute(
            insert(t.tokens).values(
                token_hash=token_hash,
                device_id=info.device_id,
                address=info.address,
                expires_at=info.expires_at,
            )
        )

    async def get(self, token_hash: str) -> TokenInfo | None:
        row = (
            await self._c.execute(
                select(t.tokens.c.device_id, t.tokens.c.address, t.tokens.c.expires_at).where(
                    t.tokens.c.token_hash == token_hash
                )
            )
        ).first()
        return None if row is None else TokenInfo(row.device_id, row.address, row.expires_at)

    async def delete_for_device(self, device_id: str) -> list[str]:
        rows = await self._c.execute(
            select(t.tokens.c.token_hash).where(t.tokens.c.device_id == device_id)
        )
        hashes = [row.token_hash for row in rows]
        await self._c.execute(delete(t.tokens).where(t.tokens.c.device_id == device_id))
        return hashes


class SqlKeys(_Repo):
    __slots__ = ()

    async def add_one_time(self, device_id: str, keys: Sequence[dict[str, Any]]) -> None:
        if keys:
            await self._c.execute(
                insert(t.one_time_keys),
                [{"device_id": device_id, "key_id": k["key_id"], "body": _dumps(k)} for k in keys],
            )

    async def count_one_time(self, device_id: str) -> int:
        result = await self._c.execute(
            select(func.count()).where(t.one_time_keys.c.device_id == device_id)
        )
        return int(result.scalar_one())

    async def existing_key_ids(self, device_id: str, key_ids: Sequence[str]) -> set[str]:
        rows = await self._c.execute(
            select(t.one_time_keys.c.key_id).where(
                t.one_time_keys.c.device_id == device_id,
                t.one_time_keys.c.key_id.in_(list(key_ids)),
            )
        )
        return {row.key_id for row in rows}

    async def take_one_time(self, device_id: str) -> dict[str, Any] | None:
        while True:
            row = (
                await self._c.execute(
                    select(t.one_time_keys.c.id, t.one_time_keys.c.body)
                    .where(t.one_time_keys.c.device_id == device_id)
                    .order_by(t.one_time_keys.c.id)
                    .limit(1)
                )
            ).first()
            if row is None:
                return None
            gone = await self._c.execute(
                delete(t.one_time_keys).where(t.one_time_keys.c.id == row.id)
            )
            if gone.rowcount:  # else a concurrent claim (PostgreSQL) took it: try the next
                body: dict[str, Any] = json.loads(row.body)
                return body

    async def set_fallback(self, device_id: str, key: dict[str, Any]) -> None:
        await self._c.execute(
            delete(t.fallback_keys).where(t.fallback_keys.c.device_id == device_id)
        )
        await self._c.execute(insert(t.fallback_keys).values(device_id=device_id, body=_dumps(key)))

    async def get_fallback(self, device_id: str) -> dict[str, Any] | None:
        row = (
            await self._c.execute(
                select(t.fallback_keys.c.body).where(t.fallback_keys.c.device_id == device_id)
            )
        ).first()
        return None if row is None else dict(json.loads(row.body))


class SqlContacts(_Repo):
    __slots__ = ()

    @staticmethod
    def _record(row: Any) -> ContactRow:
        return ContactRow(
            owner=row.owner,
            peer=row.peer,
            state=ContactState(row.state),
            message=row.message,
            identity_key=row.identity_key,
            since=row.since,
        )

    async def get(self, owner: str, peer: str) -> ContactRow | None:
        row = (
            await self._c.execute(
                select(t.contacts).where(t.contacts.c.owner == owner, t.contacts.c.peer == peer)
            )
        ).first()
        return None if row is None else self._record(row)

    async def get_for_peers(self, owners: Sequence[str], peer: str) -> dict[str, ContactRow]:
        rows = await self._c.execute(
            select(t.contacts).where(
                t.contacts.c.owner.in_(list(owners)), t.contacts.c.peer == peer
            )
        )
        return {row.owner: self._record(row) for row in rows}

    async def put(self, row: ContactRow) -> None:
        await self.delete(row.owner, row.peer)
        await self._c.execute(
            insert(t.contacts).values(
                owner=row.owner,
                peer=row.peer,
                state=row.state.value,
                message=row.message,
                identity_key=row.identity_key,
                since=row.since,
            )
        )

    async def delete(self, owner: str, peer: str) -> bool:
        result = await self._c.execute(
            delete(t.contacts).where(t.contacts.c.owner == owner, t.contacts.c.peer == peer)
        )
        return bool(result.rowcount)

    async def list(self, owner: str) -> list[ContactRow]:
        rows = await self._c.execute(
            select(t.contacts).where(t.contacts.c.owner == owner).order_by(t.contacts.c.peer)
        )
        return [self._record(row) for row in rows]

    async def set_state(
        self, owner: str, peer: str, state: ContactState, identity_key: str | None, since: int
    ) -> None:
        await self._c.execute(
            update(t.contacts)
            .where(t.contacts.c.owner == owner, t.contacts.c.peer == peer)
            .values(state=state.value, identity_key=identity_key, since=since)
        )


class SqlBlocks(_Repo):
    __slots__ = ()

    async def add(self, owner: str, peer: str, now: int) -> None:
        await self._c.execute(
            _insert_ignore(self._c, t.blocks).values(owner=owner, peer=peer, since=now)
        )

    async def remove(self, owner: str, peer: str) -> None:
        await self._c.execute(
            delete(t.blocks).where(t.blocks.c.owner == owner, t.blocks.c.peer == peer)
        )

    async def blockers_of(self, owners: Sequence[str], peer: str) -> set[str]:
        rows = await self._c.execute(
            select(t.blocks.c.owner).where(
                t.blocks.c.owner.in_(list(owners)), t.blocks.c.peer == peer
            )
        )
        return {row.owner for row in rows}

    async def list(self, owner: str) -> list[str]:
        rows = await self._c.execute(
            select(t.blocks.c.peer).where(t.blocks.c.owner == owner).order_by(t.blocks.c.peer)
        )
        return [row.peer for row in rows]


class SqlEvents(_Repo):
    __slots__ = ()

    async def append(self, events: Sequence[NewEvent], now: int) -> None:
        if events:
            await self._c.execute(
                insert(t.events),
                [
                    {
                        "device_id": e.device_id,
                        "kind": e.kind,
                        "payload": _dumps(e.payload),
                        "created_at": now,
                    }
                    for e in events
                ],
            )

    async def ack(self, device_id: str, upto: int) -> None:
        await self._c.execute(
            delete(t.events).where(t.events.c.device_id == device_id, t.events.c.pos <= upto)
        )

    async def after(self, device_id: str, since: int, limit: int) -> list[QueuedEvent]:
        rows = await self._c.execute(
            select(t.events.c.pos, t.events.c.kind, t.events.c.payload)
            .where(t.events.c.device_id == device_id, t.events.c.pos > since)
            .order_by(t.events.c.pos)
            .limit(limit)
        )
        return [QueuedEvent(row.pos, row.kind, json.loads(row.payload)) for row in rows]


class SqlHeld(_Repo):
    __slots__ = ()

    @staticmethod
    def _record(row: Any) -> HeldEnvelope:
        return HeldEnvelope(
            id=row.id,
            recipient=row.recipient,
            sender=row.sender,
            device_id=row.device_id,
            payload=json.loads(row.payload),
            created_at=row.created_at,
        )

    async def add(self, items: Sequence[HeldEnvelope], now: int) -> None:
        if items:
            await self._c.execute(
                insert(t.held),
                [
                    {
                        "recipient": h.recipient,
                        "sender": h.sender,
                        "device_id": h.device_id,
                        "payload": _dumps(h.payload),
                        "created_at": now,
                    }
                    for h in items
                ],
            )

    def _of(self, recipient: str, sender: str) -> Any:
        return (t.held.c.recipient == recipient) & (t.held.c.sender == sender)

    async def take_from(self, recipient: str, sender: str) -> list[HeldEnvelope]:
        rows = await self._c.execute(
            select(t.held).where(self._of(recipient, sender)).order_by(t.held.c.id)
        )
        items = [self._record(row) for row in rows]
        if items:
            await self.discard_from(recipient, sender)
        return items

    async def discard_from(self, recipient: str, sender: str) -> None:
        await self._c.execute(delete(t.held).where(self._of(recipient, sender)))

    async def summary(self, recipient: str) -> list[HeldSummary]:
        rows = await self._c.execute(
            select(t.held.c.sender, func.count(), func.min(t.held.c.created_at))
            .where(t.held.c.recipient == recipient)
            .group_by(t.held.c.sender)
            .order_by(t.held.c.sender)
        )
        return [HeldSummary(row[0], int(row[1]), int(row[2])) for row in rows]


class SqlTxns(_Repo):
    __slots__ = ()

    async def get(self, device_id: str, txn_id: str) -> StoredTxn | None:
        row = (
            await self._c.execute(
                select(t.transactions.c.body_hash, t.transactions.c.response).where(
                    t.transactions.c.device_id == device_id, t.transactions.c.txn_id == txn_id
                )
            )
        ).first()
        return None if row is None else StoredTxn(row.body_hash, json.loads(row.response))

    async def put(
        self, device_id: str, txn_id: str, body_hash: str, response: dict[str, Any], now: int
    ) -> None:
        await self._c.execute(
            insert(t.transactions).values(
                device_id=device_id,
                txn_id=txn_id,
                body_hash=body_hash,
                response=_dumps(response),
                created_at=now,
            )
        )

    async def prune(self, older_than: int) -> None:
        await self._c.execute(
            delete(t.transactions).where(t.transactions.c.created_at < older_than)
        )
