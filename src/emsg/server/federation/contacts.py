"""Contact actions of our users towards addresses on other domains.

Our side changes at once, in the same transaction as the federation event that
tells the peer's server (delivered in order by the outbox); the peer's answer
comes back as an event of its own (see `inbound.py`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from emsg.proto.errors import AlreadyFriends, NoRequest, NotFound
from emsg.proto.federation import FedContact, FedKind
from emsg.proto.ids import Address
from emsg.proto.wire import Contact, ContactState
from emsg.server.clock import Clock
from emsg.server.fanout import Notifier
from emsg.server.federation.inbound import contact_event
from emsg.server.federation.ports import fed
from emsg.server.services.common import Caller
from emsg.server.services.contacts import release_held
from emsg.server.storage.ports import Tx, UnitOfWork
from emsg.server.storage.records import ContactRow

Wake = Callable[[Iterable[str]], None]


def _contact(row: ContactRow) -> Contact:
    return Contact(address=row.peer, state=row.state, message=row.message,
                   identity_key=row.identity_key, since=row.since)  # fmt: skip


class RemoteContacts:
    def __init__(self, uow: UnitOfWork, clock: Clock, notifier: Notifier, wake: Wake) -> None:
        self._uow = uow
        self._clock = clock
        self._notifier = notifier
        self._wake = wake

    async def _send(self, tx: Tx, kind: FedKind, contact: FedContact, to: Address) -> None:
        item = contact_event(kind, contact, str(to.domain))
        await fed(tx).outbox.enqueue([item], self._clock.now_ms())

    async def _befriend(self, tx: Tx, me: str, peer: Address, mine: ContactRow | None,
                        now: int) -> list[str]:  # fmt: skip
        """`peer` had asked (or written to) us: friends now; tell their server."""
        await tx.contacts.put(ContactRow(me, str(peer), ContactState.FRIEND,
                                         mine.message if mine else "",
                                         mine.identity_key if mine else None, now))  # fmt: skip
        released = await release_held(tx, me, str(peer))
        await tx.events.append(released, now)
        account = await tx.accounts.get(me)
        await self._send(tx, FedKind.CONTACT_ACCEPTED, FedContact(
            sender=me, recipient=str(peer),
            identity_key=account.identity_key if account else None), peer)  # fmt: skip
        return [e.device_id for e in released]

    async def request(self, me: Caller, to: Address, message: str, identity_key: str) -> Contact:
        now = self._clock.now_ms()
        peer = str(to)
        async with self._uow.write() as tx:
            mine = await tx.contacts.get(me.address, peer)
            if mine is not None and mine.state is ContactState.FRIEND:
                raise AlreadyFriends(f"{peer} is already a friend")
            await tx.blocks.remove(me.address, peer)
            asked_us = mine is not None and mine.state is ContactState.INCOMING
            wrote_us = any(h.sender == peer for h in await tx.held.summary(me.address))
            woken: list[str] = []
            if asked_us or wrote_us:
                woken = await self._befriend(tx, me.address, to, mine, now)
            else:
                await tx.contacts.put(
                    ContactRow(me.address, peer, ContactState.OUTGOING, message, None, now)
                )
                await self._send(tx, FedKind.CONTACT_REQUEST, FedContact(
                    sender=me.address, recipient=peer, message=message,
                    identity_key=identity_key), to)  # fmt: skip
            row = await tx.contacts.get(me.address, peer)
        self._wake([str(to.domain)])
        await self._notifier.publish(woken)
        assert row is not None
        return _contact(row)

    async def accept(self, me: Caller, peer: Address) -> Contact:
        now = self._clock.now_ms()
        async with self._uow.write() as tx:
            mine = await tx.contacts.get(me.address, str(peer))
            if mine is None or mine.state is not ContactState.INCOMING:
                raise NoRequest(f"no pending request from {peer}")
            woken = await self._befriend(tx, me.address, peer, mine, now)
            row = await tx.contacts.get(me.address, str(peer))
        self._wake([str(peer.domain)])
        await self._notifier.publish(woken)
        assert row is not None
        return _contact(row)

    async def decline(self, me: Caller, peer: Address) -> None:
        async with self._uow.write() as tx:
            mine = await tx.contacts.get(me.address, str(peer))
            if mine is None or mine.state is not ContactState.INCOMING:
                raise NoRequest(f"no pending request from {peer}")
            await tx.contacts.delete(me.address, str(peer))
            await tx.held.discard_from(me.address, str(peer))
            await self._send(tx, FedKind.CONTACT_DECLINED,
                             FedContact(sender=me.address, recipient=str(peer)), peer)  # fmt: skip
        self._wake([str(peer.domain)])

    async def delete(self, me: Caller, peer: Address) -> None:
        async with self._uow.write() as tx:
            if not await tx.contacts.delete(me.address, str(peer)):
                raise NotFound(f"{peer} is not a contact")
            await self._send(tx, FedKind.CONTACT_REMOVED,
                             FedContact(sender=me.address, recipient=str(peer)), peer)  # fmt: skip
        self._wake([str(peer.domain)])
