"""What federation needs from storage: the outbound queue, the inbound ledger
(transactions, received events, nonces) and the cache of remote server keys."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

from emsg.proto.federation import Backoff
from emsg.server.storage.records import StoredTxn


@dataclass(frozen=True, slots=True)
class OutboxItem:
    destination: str
    kind: str
    event_id: str
    sender: str
    sender_device: str | None
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class OutboxRow:
    id: int
    item: OutboxItem
    created_at: int


@dataclass(frozen=True, slots=True)
class RemoteKey:
    domain: str
    key_id: str
    key: str
    valid_until: int
    expired_at: int | None

    def usable_at(self, t_ms: int) -> bool:
        """May this key verify a signature created at `t_ms`?"""
        limit = self.valid_until if self.expired_at is None else min(self.valid_until,
                                                                     self.expired_at)  # fmt: skip
        return t_ms <= limit


class Outbox(Protocol):
    async def enqueue(self, items: Sequence[OutboxItem], now: int) -> None:
        """Append in order (the same transaction as the message that caused it)."""
        ...

    async def batch(self, destination: str, limit: int) -> list[OutboxRow]:
        """The oldest rows for `destination`, in order."""
        ...

    async def delete(self, ids: Sequence[int]) -> None: ...
    async def older_than(self, destination: str, before: int) -> list[OutboxRow]: ...
    async def pending_destinations(self) -> list[str]: ...
    async def backoff(self, destination: str) -> Backoff: ...
    async def set_backoff(self, destination: str, state: Backoff) -> None: ...
    async def lease(self, destination: str, owner: str, now: int, until: int) -> bool:
        """Take (or renew) the right to send to `destination`; False if another
        process holds an unexpired lease (scaled-out senders share the queue)."""
        ...


class FedInbox(Protocol):
    async def get_txn(self, origin: str, txn_id: str) -> StoredTxn | None: ...
    async def put_txn(
        self, origin: str, txn_id: str, body_hash: str, response: dict[str, Any], now: int
    ) -> None: ...
    async def seen(self, origin: str, event_ids: Sequence[str]) -> set[str]: ...
    async def mark_seen(self, origin: str, event_ids: Sequence[str], now: int) -> None: ...
    async def use_nonce(self, nonce: str, now: int) -> bool:
        """Record a nonce; False if it was seen before (a replay)."""
        ...

    async def prune(self, nonces_before: int, ledger_before: int) -> None: ...


class ServerKeyCache(Protocol):
    async def get(self, domain: str) -> dict[str, RemoteKey]: ...
    async def put(self, keys: Sequence[RemoteKey], now: int) -> None: ...


class FedTx(Protocol):
    """The federation repositories over one transaction."""

    outbox: Outbox
    fed_inbox: FedInbox
    server_keys: ServerKeyCache


def fed(tx: object) -> FedTx:
    """The federation repositories of a storage transaction."""
    return cast(FedTx, tx)
