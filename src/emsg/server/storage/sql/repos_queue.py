"""Device queues, envelopes held for a stranger's answer, and send transactions."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Final

from sqlalchemy import delete, func, insert, select

from emsg.server.storage.records import HeldEnvelope, HeldSummary, NewEvent, QueuedEvent, StoredTxn
from emsg.server.storage.sql import tables as t
from emsg.server.storage.sql.base import Repo, dumps, insert_ignore, param

_EVENT_ADD: Final = insert(t.events)
_EVENT_ACK: Final = delete(t.events).where(
    t.events.c.device_id == param("device_id"), t.events.c.pos <= param("upto")
)
_EVENT_AFTER: Final = (
    select(t.events.c.pos, t.events.c.kind, t.events.c.payload)
    .where(t.events.c.device_id == param("device_id"), t.events.c.pos > param("since"))
    .order_by(t.events.c.pos)
    .limit(param("limit"))
)

_HELD_OF: Final = (t.held.c.recipient == param("recipient")) & (t.held.c.sender == param("sender"))
_HELD_ADD: Final = insert(t.held)
_HELD_FROM: Final = select(t.held).where(_HELD_OF).order_by(t.held.c.id)
_HELD_DISCARD: Final = delete(t.held).where(_HELD_OF)
_HELD_SUMMARY: Final = (
    select(t.held.c.sender, func.count().label("n"), func.min(t.held.c.created_at).label("first"))
    .where(t.held.c.recipient == param("recipient"))
    .group_by(t.held.c.sender)
    .order_by(t.held.c.sender)
)

_TXN_GET: Final = select(t.transactions.c.body_hash, t.transactions.c.response).where(
    t.transactions.c.device_id == param("device_id"), t.transactions.c.txn_id == param("txn_id")
)
_TXN_ADD: Final = insert_ignore(t.transactions)
_TXN_PRUNE: Final = delete(t.transactions).where(t.transactions.c.created_at < param("older_than"))


class SqlEvents(Repo):
    __slots__ = ()

    async def append(self, events: Sequence[NewEvent], now: int) -> None:
        if events:
            await self._c.execute(
                _EVENT_ADD,
                [
                    {
                        "device_id": e.device_id,
                        "kind": e.kind,
                        "payload": dumps(e.payload),
                        "created_at": now,
                    }
                    for e in events
                ],
            )

    async def ack(self, device_id: str, upto: int) -> None:
        await self._c.execute(_EVENT_ACK, {"b_device_id": device_id, "b_upto": upto})

    async def after(self, device_id: str, since: int, limit: int) -> list[QueuedEvent]:
        rows = await self._c.execute(
            _EVENT_AFTER, {"b_device_id": device_id, "b_since": since, "b_limit": limit}
        )
        return [QueuedEvent(row.pos, row.kind, row.payload) for row in rows]


class SqlHeld(Repo):
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
                _HELD_ADD,
                [
                    {
                        "recipient": h.recipient,
                        "sender": h.sender,
                        "device_id": h.device_id,
                        "payload": dumps(h.payload),
                        "created_at": now,
                    }
                    for h in items
                ],
            )

    async def take_from(self, recipient: str, sender: str) -> list[HeldEnvelope]:
        rows = await self._c.execute(_HELD_FROM, {"b_recipient": recipient, "b_sender": sender})
        items = [self._record(row) for row in rows]
        if items:
            await self.discard_from(recipient, sender)
        return items

    async def discard_from(self, recipient: str, sender: str) -> None:
        await self._c.execute(_HELD_DISCARD, {"b_recipient": recipient, "b_sender": sender})

    async def summary(self, recipient: str) -> list[HeldSummary]:
        rows = await self._c.execute(_HELD_SUMMARY, {"b_recipient": recipient})
        return [HeldSummary(row.sender, int(row.n), int(row.first)) for row in rows]


class SqlTxns(Repo):
    __slots__ = ()

    async def get(self, device_id: str, txn_id: str) -> StoredTxn | None:
        row = (
            await self._c.execute(_TXN_GET, {"b_device_id": device_id, "b_txn_id": txn_id})
        ).first()
        return None if row is None else StoredTxn(row.body_hash, json.loads(row.response))

    async def put(
        self, device_id: str, txn_id: str, body_hash: str, response: dict[str, Any], now: int
    ) -> bool:
        values = {
            "device_id": device_id,
            "txn_id": txn_id,
            "body_hash": body_hash,
            "response": dumps(response),
            "created_at": now,
        }
        result = await self._c.execute(_TXN_ADD[self._c.dialect], values)
        return bool(result.rowcount)

    async def prune(self, older_than: int) -> None:
        await self._c.execute(_TXN_PRUNE, {"b_older_than": older_than})
