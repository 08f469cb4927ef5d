"""SQL implementations of the federation repositories (tables in migration 0002)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Final

from sqlalchemy import (
    BigInteger,
    Column,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    and_,
    delete,
    insert,
    or_,
    select,
    update,
)

from emsg.proto.federation import Backoff
from emsg.server.federation.ports import OutboxItem, OutboxRow, RemoteKey
from emsg.server.storage.records import StoredTxn
from emsg.server.storage.sql.base import insert_ignore
from emsg.server.storage.sql.conn import Conn
from emsg.server.storage.sql.tables import Pos

metadata = MetaData()

fed_outbox = Table(
    "fed_outbox", metadata,
    Column("id", Pos, primary_key=True, autoincrement=True),
    Column("destination", String(260), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("event_id", String(64), nullable=False),
    Column("sender", String(320), nullable=False),
    Column("sender_device", String(64)),
    Column("payload", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Index("ix_fed_outbox_dest_id", "destination", "id"),
    sqlite_autoincrement=True,
)  # fmt: skip

fed_destinations = Table(
    "fed_destinations", metadata,
    Column("destination", String(260), primary_key=True),
    Column("failures", Integer, nullable=False),
    Column("retry_at", BigInteger, nullable=False),
    Column("lease_owner", String(64)),
    Column("lease_until", BigInteger, nullable=False),
)  # fmt: skip

fed_txns = Table(
    "fed_txns", metadata,
    Column("origin", String(260), primary_key=True),
    Column("txn_id", String(128), primary_key=True),
    Column("body_hash", String(64), nullable=False),
    Column("response", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Index("ix_fed_txns_created", "created_at"),
)  # fmt: skip

fed_received = Table(
    "fed_received", metadata,
    Column("origin", String(260), primary_key=True),
    Column("event_id", String(64), primary_key=True),
    Column("created_at", BigInteger, nullable=False),
    Index("ix_fed_received_created", "created_at"),
)  # fmt: skip

fed_nonces = Table(
    "fed_nonces", metadata,
    Column("nonce", String(400), primary_key=True),
    Column("created_at", BigInteger, nullable=False),
    Index("ix_fed_nonces_created", "created_at"),
)  # fmt: skip

fed_server_keys = Table(
    "fed_server_keys", metadata,
    Column("domain", String(260), primary_key=True),
    Column("key_id", String(64), primary_key=True),
    Column("key", String(64), nullable=False),
    Column("valid_until", BigInteger, nullable=False),
    Column("expired_at", BigInteger),
    Column("fetched_at", BigInteger, nullable=False),
)  # fmt: skip

_o = fed_outbox.c
_BATCH: Final = select(fed_outbox).order_by(_o.id)


def _row(r: Any) -> OutboxRow:
    item = OutboxItem(r.destination, r.kind, r.event_id, r.sender, r.sender_device,
                      json.loads(r.payload))  # fmt: skip
    return OutboxRow(r.id, item, r.created_at)


class SqlOutbox:
    __slots__ = ("_c",)

    def __init__(self, conn: Conn) -> None:
        self._c = conn

    async def enqueue(self, items: Sequence[OutboxItem], now: int) -> None:
        if items:
            await self._c.execute(
                insert(fed_outbox),
                [
                    {
                        "destination": i.destination, "kind": i.kind, "event_id": i.event_id,
                        "sender": i.sender, "sender_device": i.sender_device,
                        "payload": json.dumps(i.payload, separators=(",", ":")),
                        "created_at": now,
                    }
                    for i in items
                ],
            )  # fmt: skip

    async def batch(self, destination: str, limit: int) -> list[OutboxRow]:
        stmt = _BATCH.where(_o.destination == destination).limit(limit)
        return [_row(r) for r in await self._c.execute(stmt)]

    async def delete(self, ids: Sequence[int]) -> None:
        if ids:
            await self._c.execute(delete(fed_outbox).where(_o.id.in_(list(ids))))

    async def older_than(self, destination: str, before: int) -> list[OutboxRow]:
        stmt = _BATCH.where(_o.destination == destination, _o.created_at < before)
        return [_row(r) for r in await self._c.execute(stmt)]

    async def pending_destinations(self) -> list[str]:
        rows = await self._c.execute(select(_o.destination).distinct())
        return [r.destination for r in rows]

    async def backoff(self, destination: str) -> Backoff:
        stmt = select(fed_destinations).where(fed_destinations.c.destination == destination)
        row = (await self._c.execute(stmt)).first()
        return Backoff() if row is None else Backoff(row.failures, row.retry_at)

    async def _ensure(self, destination: str) -> None:
        await self._c.execute(
            insert_ignore(fed_destinations)[self._c.dialect],
            {"destination": destination, "failures": 0, "retry_at": 0, "lease_until": 0},
        )

    async def set_backoff(self, destination: str, state: Backoff) -> None:
        await self._ensure(destination)
        await self._c.execute(
            update(fed_destinations)
            .where(fed_destinations.c.destination == destination)
            .values(failures=state.failures, retry_at=state.retry_at)
        )

    async def lease(self, destination: str, owner: str, now: int, until: int) -> bool:
        await self._ensure(destination)
        d = fed_destinations.c
        result = await self._c.execute(
            update(fed_destinations)
            .where(d.destination == destination, or_(d.lease_until < now, d.lease_owner == owner))
            .values(lease_owner=owner, lease_until=until)
        )
        return bool(result.rowcount == 1)


class SqlFedInbox:
    __slots__ = ("_c",)

    def __init__(self, conn: Conn) -> None:
        self._c = conn

    async def get_txn(self, origin: str, txn_id: str) -> StoredTxn | None:
        t = fed_txns.c
        row = (
            await self._c.execute(
                select(t.body_hash, t.response).where(t.origin == origin, t.txn_id == txn_id)
            )
        ).first()
        return None if row is None else StoredTxn(row.body_hash, json.loads(row.response))

    async def put_txn(
        self, origin: str, txn_id: str, body_hash: str, response: dict[str, Any], now: int
    ) -> None:
        await self._c.execute(
            insert(fed_txns),
            {"origin": origin, "txn_id": txn_id, "body_hash": body_hash,
             "response": json.dumps(response), "created_at": now},
        )  # fmt: skip

    async def seen(self, origin: str, event_ids: Sequence[str]) -> set[str]:
        if not event_ids:
            return set()
        r = fed_received.c
        rows = await self._c.execute(
            select(r.event_id).where(r.origin == origin, r.event_id.in_(list(event_ids)))
        )
        return {row.event_id for row in rows}

    async def mark_seen(self, origin: str, event_ids: Sequence[str], now: int) -> None:
        if event_ids:
            await self._c.execute(
                insert_ignore(fed_received)[self._c.dialect],
                [{"origin": origin, "event_id": e, "created_at": now} for e in event_ids],
            )

    async def use_nonce(self, nonce: str, now: int) -> bool:
        result = await self._c.execute(
            insert_ignore(fed_nonces)[self._c.dialect], {"nonce": nonce, "created_at": now}
        )
        return bool(result.rowcount == 1)

    async def prune(self, nonces_before: int, ledger_before: int) -> None:
        await self._c.execute(delete(fed_nonces).where(fed_nonces.c.created_at < nonces_before))
        await self._c.execute(delete(fed_txns).where(fed_txns.c.created_at < ledger_before))
        await self._c.execute(delete(fed_received).where(fed_received.c.created_at < ledger_before))


class SqlServerKeys:
    __slots__ = ("_c",)

    def __init__(self, conn: Conn) -> None:
        self._c = conn

    async def get(self, domain: str) -> dict[str, RemoteKey]:
        k = fed_server_keys.c
        rows = await self._c.execute(select(fed_server_keys).where(k.domain == domain))
        return {
            r.key_id: RemoteKey(r.domain, r.key_id, r.key, r.valid_until, r.expired_at)
            for r in rows
        }

    async def put(self, keys: Sequence[RemoteKey], now: int) -> None:
        k = fed_server_keys.c
        for key in keys:
            await self._c.execute(
                delete(fed_server_keys).where(and_(k.domain == key.domain, k.key_id == key.key_id))
            )
            await self._c.execute(
                insert(fed_server_keys),
                {"domain": key.domain, "key_id": key.key_id, "key": key.key,
                 "valid_until": key.valid_until, "expired_at": key.expired_at,
                 "fetched_at": now},
            )  # fmt: skip
