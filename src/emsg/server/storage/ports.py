"""What the services need from storage, as Protocols.

One `Tx` is one database transaction (the unit of work): every repository in it
shares the transaction, and nothing is visible to others until it commits.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from emsg.proto.wire import ContactState, StrangerPolicy
from emsg.server.federation.ports import FedInbox, Outbox, ServerKeyCache
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


class Accounts(Protocol):
    async def create(self, address: str, password_hash: str, now: int) -> bool:
        """False if the address is taken."""
        ...

    async def get(self, address: str) -> Account | None: ...
    async def get_many(self, addresses: Sequence[str]) -> dict[str, Account]: ...
    async def set_policy(self, address: str, policy: StrangerPolicy) -> None: ...
    async def set_device_list(
        self, address: str, identity_key: str, device_list: dict[str, Any], version: int
    ) -> None: ...


class Devices(Protocol):
    async def create(self, device_id: str, address: str, name: str, now: int) -> None: ...
    async def get(self, device_id: str) -> Device | None: ...
    async def get_many(self, device_ids: Sequence[str]) -> dict[str, Device]: ...
    async def active_of(self, address: str) -> list[Device]: ...
    async def all_of(self, address: str) -> list[Device]:
        """Every device of the account, revoked ones too, oldest first."""
        ...

    async def revoke(self, device_id: str) -> None: ...
    async def set_device_keys(self, device_id: str, keys: dict[str, Any]) -> None: ...


class Tokens(Protocol):
    async def add(self, token_hash: str, info: TokenInfo) -> None: ...
    async def get(self, token_hash: str) -> TokenInfo | None: ...
    async def delete_for_device(self, device_id: str) -> list[str]:
        """Delete the device's tokens; return their hashes (for cache invalidation)."""
        ...

    async def delete_expired_for_device(self, device_id: str, now: int) -> list[str]:
        """Delete the device's tokens that expired by `now`; return their hashes."""
        ...


class IdentityBackups(Protocol):
    async def get(self, address: str) -> dict[str, Any] | None: ...
    async def put(self, address: str, body: dict[str, Any], now: int) -> None:
        """Store the account's sealed backup, replacing any earlier one."""
        ...


class Keys(Protocol):
    async def add_one_time(self, device_id: str, keys: Sequence[dict[str, Any]]) -> None: ...
    async def count_one_time(self, device_id: str) -> int: ...
    async def existing_key_ids(self, device_id: str, key_ids: Sequence[str]) -> set[str]: ...
    async def take_one_time(self, device_id: str) -> dict[str, Any] | None: ...
    async def set_fallback(self, device_id: str, key: dict[str, Any]) -> None: ...
    async def get_fallback(self, device_id: str) -> dict[str, Any] | None: ...


class Contacts(Protocol):
    async def get(self, owner: str, peer: str) -> ContactRow | None: ...
    async def get_for_peers(self, owners: Sequence[str], peer: str) -> dict[str, ContactRow]:
        """The rows `owner -> peer` for every owner in `owners` that has one."""
        ...

    async def put(self, row: ContactRow) -> None: ...
    async def delete(self, owner: str, peer: str) -> bool: ...
    async def list(self, owner: str) -> list[ContactRow]: ...
    async def set_state(
        self, owner: str, peer: str, state: ContactState, identity_key: str | None, since: int
    ) -> None: ...


class Blocks(Protocol):
    async def add(self, owner: str, peer: str, now: int) -> None: ...
    async def remove(self, owner: str, peer: str) -> None: ...
    async def blockers_of(self, owners: Sequence[str], peer: str) -> set[str]:
        """Which of `owners` block `peer`."""
        ...

    async def list(self, owner: str) -> list[str]: ...


class Events(Protocol):
    async def append(self, events: Sequence[NewEvent], now: int) -> None:
        """Append in order; positions grow across the whole table."""
        ...

    async def ack(self, device_id: str, upto: int) -> None: ...
    async def after(self, device_id: str, since: int, limit: int) -> list[QueuedEvent]: ...


class Held(Protocol):
    async def add(self, items: Sequence[HeldEnvelope], now: int) -> None: ...
    async def take_from(self, recipient: str, sender: str) -> list[HeldEnvelope]:
        """Remove and return what `sender` sent to `recipient`, in order."""
        ...

    async def discard_from(self, recipient: str, sender: str) -> None: ...
    async def summary(self, recipient: str) -> list[HeldSummary]: ...


class Txns(Protocol):
    async def get(self, device_id: str, txn_id: str) -> StoredTxn | None: ...
    async def put(
        self, device_id: str, txn_id: str, body_hash: str, response: dict[str, Any], now: int
    ) -> bool:
        """Store the reply of a new send; False (and nothing stored) if the id is taken."""
        ...

    async def prune(self, older_than: int) -> None: ...


class Tx(Protocol):
    accounts: Accounts
    devices: Devices
    tokens: Tokens
    backups: IdentityBackups
    keys: Keys
    contacts: Contacts
    blocks: Blocks
    events: Events
    held: Held
    txns: Txns
    outbox: Outbox
    fed_inbox: FedInbox
    server_keys: ServerKeyCache


class UnitOfWork(Protocol):
    def write(self) -> AbstractAsyncContextManager[Tx]:
        """A transaction that commits on success and rolls back on any exception."""
        ...

    def read(self) -> AbstractAsyncContextManager[Tx]:
        """A read-only transaction."""
        ...

    async def ping(self) -> None: ...
    async def close(self) -> None: ...
