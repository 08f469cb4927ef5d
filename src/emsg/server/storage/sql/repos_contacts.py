"""Contacts and blocks: the relations every send to a stranger checks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from sqlalchemy import delete, insert, select, update

from emsg.proto.wire import ContactState
from emsg.server.storage.records import ContactRow
from emsg.server.storage.sql import tables as t
from emsg.server.storage.sql.base import Repo, insert_ignore, param, params, split_cached

_OWNER_PEER: Final = (t.contacts.c.owner == param("owner"), t.contacts.c.peer == param("peer"))
_CONTACT_GET: Final = select(t.contacts).where(*_OWNER_PEER)
_CONTACT_FOR_PEERS: Final = select(t.contacts).where(
    t.contacts.c.owner.in_(params("owners")), t.contacts.c.peer == param("peer")
)
_CONTACT_ADD: Final = insert(t.contacts)
_CONTACT_DELETE: Final = delete(t.contacts).where(*_OWNER_PEER)
_CONTACT_UPDATE: Final = update(t.contacts).where(*_OWNER_PEER)
_CONTACT_LIST: Final = (
    select(t.contacts).where(t.contacts.c.owner == param("owner")).order_by(t.contacts.c.peer)
)

_BLOCK_ADD: Final = insert_ignore(t.blocks)
_BLOCK_REMOVE: Final = delete(t.blocks).where(
    t.blocks.c.owner == param("owner"), t.blocks.c.peer == param("peer")
)
_BLOCKERS: Final = select(t.blocks.c.owner).where(
    t.blocks.c.owner.in_(params("owners")), t.blocks.c.peer == param("peer")
)
_BLOCK_LIST: Final = (
    select(t.blocks.c.peer).where(t.blocks.c.owner == param("owner")).order_by(t.blocks.c.peer)
)


class SqlContacts(Repo):
    """Cached by (owner, peer), including the absence of a row."""

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
        return (await self.get_for_peers([owner], peer)).get(owner)

    async def get_for_peers(self, owners: Sequence[str], peer: str) -> dict[str, ContactRow]:
        cache = self._caches.contacts
        usable = self._cache_usable(cache)
        found, missing = split_cached(cache, [(owner, peer) for owner in owners], usable)
        rows = {key[0]: row for key, row in found.items() if row is not None}
        if missing:
            generation = cache.generation
            if len(missing) == 1:
                result = await self._c.execute(
                    _CONTACT_GET, {"b_owner": missing[0][0], "b_peer": peer}
                )
            else:
                result = await self._c.execute(
                    _CONTACT_FOR_PEERS, {"b_owners": [o for o, _ in missing], "b_peer": peer}
                )
            read = {row.owner: self._record(row) for row in result}
            if usable:
                cache.fill(generation, ((key, read.get(key[0])) for key in missing))
            rows.update(read)
        return rows

    async def put(self, row: ContactRow) -> None:
        await self.delete(row.owner, row.peer)
        values = {
            "owner": row.owner,
            "peer": row.peer,
            "state": row.state.value,
            "message": row.message,
            "identity_key": row.identity_key,
            "since": row.since,
        }
        await self._c.execute(_CONTACT_ADD, values)

    async def delete(self, owner: str, peer: str) -> bool:
        self._inv.drop(self._caches.contacts, (owner, peer))
        result = await self._c.execute(_CONTACT_DELETE, {"b_owner": owner, "b_peer": peer})
        return bool(result.rowcount)

    async def list(self, owner: str) -> list[ContactRow]:
        rows = await self._c.execute(_CONTACT_LIST, {"b_owner": owner})
        return [self._record(row) for row in rows]

    async def set_state(
        self, owner: str, peer: str, state: ContactState, identity_key: str | None, since: int
    ) -> None:
        self._inv.drop(self._caches.contacts, (owner, peer))
        values = {
            "b_owner": owner,
            "b_peer": peer,
            "state": state.value,
            "identity_key": identity_key,
            "since": since,
        }
        await self._c.execute(_CONTACT_UPDATE, values)


class SqlBlocks(Repo):
    """Cached by (owner, peer): whether owner blocks peer."""

    __slots__ = ()

    async def add(self, owner: str, peer: str, now: int) -> None:
        self._inv.drop(self._caches.blocks, (owner, peer))
        values = {"owner": owner, "peer": peer, "since": now}
        await self._c.execute(_BLOCK_ADD[self._c.dialect], values)

    async def remove(self, owner: str, peer: str) -> None:
        self._inv.drop(self._caches.blocks, (owner, peer))
        await self._c.execute(_BLOCK_REMOVE, {"b_owner": owner, "b_peer": peer})

    async def blockers_of(self, owners: Sequence[str], peer: str) -> set[str]:
        cache = self._caches.blocks
        usable = self._cache_usable(cache)
        found, missing = split_cached(cache, [(owner, peer) for owner in owners], usable)
        blockers = {key[0] for key, blocks in found.items() if blocks}
        if missing:
            generation = cache.generation
            result = await self._c.execute(
                _BLOCKERS, {"b_owners": [o for o, _ in missing], "b_peer": peer}
            )
            read = {row.owner for row in result}
            if usable:
                cache.fill(generation, ((key, key[0] in read) for key in missing))
            blockers |= read
        return blockers

    async def list(self, owner: str) -> list[str]:
        rows = await self._c.execute(_BLOCK_LIST, {"b_owner": owner})
        return [row.peer for row in rows]
