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
    delete,
    insert,
    or_,
    select,
    update,
)

from emsg.proto.federation import Backoff
from emsg.server.federation.ports import OutboxItem, OutboxRow, RemoteKey
from emsg.server.storage.records import StoredTxn
from emsg.server.storage.sql.base import insert_ignore, param, params
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

# Every statement is built once, here, with named parameters: SQLite's fast path
# (`storage/sql/conn.py`) plans a statement object it sees again, and building and
# hashing one per call costs several times what running it does.

_o = fed_outbox.c
_OUTBOX_ADD: Final = insert(fed_outbox)
_OUTBOX_BATCH: Final = (
    select(fed_outbox)
    .where(_o.destination == param("destination"))
    .order_by(_o.id)
    .limit(param("limit"))
)
_OUTBOX_OLDER_THAN: Final = (
    select(fed_outbox)
    .where(_o.destination == param("destination"), _o.created_at < param("before"))
    .order_by(_o.id)
)
_OUTBOX_DELETE: Final = delete(fed_outbox).where(_o.id.in_(params("ids")))
_OUTBOX_DESTINATIONS: Final = select(_o.destination).distinct()

_d = fed_destinations.c
_DEST_ENSURE: Final = insert_ignore(fed_destinations)
_DEST_GET: Final = select(_d.failures, _d.retry_at).where(_d.destination == param("destination"))
_DEST_UPDATE: Final = update(fed_destinations).where(_d.destination == param("destination"))
# Free, expired, or already ours (a renewal, or our own lease after a restart).
_DEST_LEASE: Final = update(fed_destinations).where(
    _d.destination == param("destination"),
    or_(_d.lease_until < param("now"), _d.lease_owner == param("owner")),
)

_t = fed_txns.c
_TXN_GET: Final = select(_t.body_hash, _t.response).where(
    _t.origin == param("origin"), _t.txn_id == param("txn_id")
)
_TXN_ADD: Final = insert(fed_txns)
_r = fed_received.c
_RECEIVED_OF: Final = select(_r.event_id).where(
    _r.origin == param("origin"), _r.event_id.in_(params("event_ids"))
)
_RECEIVED_ADD: Final = insert_ignore(fed_received)
_NONCE_ADD: Final = insert_ignore(fed_nonces)
_NONCE_PRUNE: Final = delete(fed_nonces).where(fed_nonces.c.created_at < param("before"))
_TXN_PRUNE: Final = delete(fed_txns).where(_t.created_at < param("before"))
_RECEIVED_PRUNE: Final = delete(fed_received).where(_r.created_at < param("before"))

_k = fed_server_keys.c
_KEYS_GET: Final = select(fed_server_keys).where(_k.domain == param("domain"))
_KEY_DELETE: Final = delete(fed_server_keys).where(
    _k.domain == param("domain"), _k.key_id == param("key_id")
)
_KEY_ADD: Final = insert(fed_server_keys)


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
                _OUTBOX_ADD,
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
        rows = await self._c.execute(
            _OUTBOX_BATCH, {"b_destination": destination, "b_limit": limit}
        )
        return [_row(r) for r in rows]

    async def delete(self, ids: Sequence[int]) -> None:
        if ids:  # nothing to delete (and an empty IN list has no plan)
            await self._c.execute(_OUTBOX_DELETE, {"b_ids": list(ids)})

    async def older_than(self, destination: str, before: int) -> list[OutboxRow]:
        rows = await self._c.execute(
            _OUTBOX_OLDER_THAN, {"b_destination": destination, "b_before": before}
        )
        return [_row(r) for r in rows]

    async def pending_destinations(self) -> list[str]:
        rows = await self._c.execute(_OUTBOX_DESTINATIONS)
        return [r.destination for r in rows]

    async def backoff(self, destination: str) -> Backoff:
        row = (await self._c.execute(_DEST_GET, {"b_destination": destination})).first()
        return Backoff() if row is None else Backoff(row.failures, row.retry_at)

    async def _ensure(self, destination: str) -> None:
        await self._c.execute(
            _DEST_ENSURE[self._c.dialect],
            {"destination": destination, "failures": 0, "retry_at": 0, "lease_until": 0},
        )

    async def set_backoff(self, destination: str, state: Backoff) -> None:
        await self._ensure(destination)
        await self._c.execute(
            _DEST_UPDATE,
            {"b_destination": destination, "failures": state.failures,
             "retry_at": state.retry_at},
        )  # fmt: skip

    async def lease(self, destination: str, owner: str, now: int, until: int) -> bool:
        await self._ensure(destination)
        result = await self._c.execute(
            _DEST_LEASE,
            {"b_destination": destination, "b_now": now, "b_owner": owner,
             "lease_owner": owner, "lease_until": until},
        )  # fmt: skip
        return bool(result.rowcount == 1)


class SqlFedInbox:
    __slots__ = ("_c",)

    def __init__(self, conn: Conn) -> None:
        self._c = conn

    async def get_txn(self, origin: str, txn_id: str) -> StoredTxn | None:
        row = (await self._c.execute(_TXN_GET, {"b_origin": origin, "b_txn_id": txn_id})).first()
        return None if row is None else StoredTxn(row.body_hash, json.loads(row.response))

    async def put_txn(
        self, origin: str, txn_id: str, body_hash: str, response: dict[str, Any], now: int
    ) -> None:
        await self._c.execute(
            _TXN_ADD,
            {"origin": origin, "txn_id": txn_id, "body_hash": body_hash,
             "response": json.dumps(response), "created_at": now},
        )  # fmt: skip

    async def seen(self, origin: str, event_ids: Sequence[str]) -> set[str]:
        if not event_ids:
            return set()
        rows = await self._c.execute(
            _RECEIVED_OF, {"b_origin": origin, "b_event_ids": list(event_ids)}
        )
        return {row.event_id for row in rows}

    async def mark_seen(self, origin: str, event_ids: Sequence[str], now: int) -> None:
        if event_ids:
            await self._c.execute(
                _RECEIVED_ADD[self._c.dialect],
                [{"origin": origin, "event_id": e, "created_at": now} for e in event_ids],
            )

    async def use_nonce(self, nonce: str, now: int) -> bool:
        result = await self._c.execute(
            _NONCE_ADD[self._c.dialect], {"nonce": nonce, "created_at": now}
        )
        return bool(result.rowcount == 1)

    async def prune(self, nonces_before: int, ledger_before: int) -> None:
        await self._c.execute(_NONCE_PRUNE, {"b_before": nonces_before})
        await self._c.execute(_TXN_PRUNE, {"b_before": ledger_before})
        await self._c.execute(_RECEIVED_PRUNE, {"b_before": ledger_before})


class SqlServerKeys:
    __slots__ = ("_c",)

    def __init__(self, conn: Conn) -> None:
        self._c = conn

    async def get(self, domain: str) -> dict[str, RemoteKey]:
        rows = await self._c.execute(_KEYS_GET, {"b_domain": domain})
        return {
            r.key_id: RemoteKey(r.domain, r.key_id, r.key, r.valid_until, r.expired_at)
            for r in rows
        }

    async def put(self, keys: Sequence[RemoteKey], now: int) -> None:
        for key in keys:
            await self._c.execute(_KEY_DELETE, {"b_domain": key.domain, "b_key_id": key.key_id})
            await self._c.execute(
                _KEY_ADD,
                {"domain": key.domain, "key_id": key.key_id, "key": key.key,
                 "valid_until": key.valid_until, "expired_at": key.expired_at,
                 "fetched_at": now},
            )  # fmt: skip
