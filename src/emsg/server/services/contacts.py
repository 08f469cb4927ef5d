"""Contact requests, friendship, blocks and the stranger policy."""

from __future__ import annotations

from typing import TYPE_CHECKING

from emsg.proto.errors import (
    AlreadyFriends,
    InvalidRequest,
    NoRequest,
    NotFound,
    RecipientRefuses,
    UnknownRecipient,
)
from emsg.proto.wire import (
    Contact,
    ContactState,
    ContactsView,
    EventKind,
    MessageRequest,
    StrangerPolicy,
)
from emsg.server.clock import Clock
from emsg.server.fanout import Notifier
from emsg.server.services.common import AddressRules, Caller, contact_payload
from emsg.server.storage.ports import Tx, UnitOfWork

if TYPE_CHECKING:
    from emsg.server.federation.contacts import RemoteContacts
from emsg.server.storage.records import ContactRow, NewEvent


def _contact(row: ContactRow) -> Contact:
    return Contact(
        address=row.peer,
        state=row.state,
        message=row.message,
        identity_key=row.identity_key,
        since=row.since,
    )


async def release_held(tx: Tx, recipient: str, sender: str) -> list[NewEvent]:
    """Move what `sender` sent to `recipient` while a stranger into the queue, in order."""
    held = await tx.held.take_from(recipient, sender)
    if not held:
        return []
    devices = await tx.devices.get_many(list({h.device_id for h in held}))
    return [
        NewEvent(h.device_id, EventKind.ENVELOPE.value, h.payload)
        for h in held
        if h.device_id in devices and not devices[h.device_id].revoked
    ]


class ContactService:
    def __init__(
        self,
        uow: UnitOfWork,
        clock: Clock,
        rules: AddressRules,
        notifier: Notifier,
        remote: RemoteContacts | None = None,
    ) -> None:
        self._remote = remote
        self._uow = uow
        self._clock = clock
        self._rules = rules
        self._notifier = notifier

    async def _peer(self, raw: str, me: Caller) -> str:
        peer = self._rules.local(raw)
        if peer == me.address:
            raise InvalidRequest("that is your own address")
        return peer

    async def _push(
        self, tx: Tx, to: str, kind: EventKind, payload: dict[str, object]
    ) -> list[str]:
        devices = [d.device_id for d in await tx.devices.active_of(to)]
        await tx.events.append(
            [NewEvent(d, kind.value, dict(payload)) for d in devices], self._clock.now_ms()
        )
        return devices

    async def _befriend(self, tx: Tx, me: str, peer: str, now: int) -> list[str]:
        """Make `me` and `peer` friends; `peer` had asked. Return devices to wake."""
        mine = await tx.contacts.get(me, peer)
        theirs = await tx.contacts.get(peer, me)
        my_account = await tx.accounts.get(me)
        my_key = my_account.identity_key if my_account else None
        peer_key: str | None
        if mine is not None and mine.identity_key is not None:
            peer_key = mine.identity_key
        else:  # no request stated a key (a stranger who wrote under `requests`)
            peer_account = await tx.accounts.get(peer)
            peer_key = peer_account.identity_key if peer_account else None
        await tx.contacts.put(
            ContactRow(me, peer, ContactState.FRIEND, mine.message if mine else "", peer_key, now)
        )
        await tx.contacts.put(
            ContactRow(peer, me, ContactState.FRIEND, theirs.message if theirs else "",
                       my_key, now)
        )  # fmt: skip
        released = await release_held(tx, me, peer) + await release_held(tx, peer, me)
        await tx.events.append(released, now)
        woken = [e.device_id for e in released]
        woken += await self._push(
            tx, peer, EventKind.CONTACT_ACCEPTED,
            contact_payload(me, ContactState.FRIEND, "", my_key, now),
        )  # fmt: skip
        return woken

    async def request(self, me: Caller, raw_to: str, message: str, identity_key: str) -> Contact:
        if self._remote is not None and self._rules.is_remote(raw_to):
            return await self._remote.request(me, self._rules.parse(raw_to), message, identity_key)
        to = await self._peer(raw_to, me)
        now = self._clock.now_ms()
        async with self._uow.write() as tx:
            if await tx.accounts.get(to) is None:
                raise UnknownRecipient(f"no account {to}")
            if await tx.blocks.blockers_of([to], me.address):
                raise RecipientRefuses("the recipient does not accept this request")
            mine = await tx.contacts.get(me.address, to)
            if mine is not None and mine.state is ContactState.FRIEND:
                raise AlreadyFriends(f"{to} is already a friend")
            # Asking someone is a clear sign one no longer blocks them.
            await tx.blocks.remove(me.address, to)
            asked_us = mine is not None and mine.state is ContactState.INCOMING
            # Messages a stranger wrote under our `requests` policy are a request to
            # talk: answering them makes friends and releases what was held.
            wrote_us = any(h.sender == to for h in await tx.held.summary(me.address))
            if asked_us or wrote_us:
                woken = await self._befriend(tx, me.address, to, now)
            else:
                await tx.contacts.put(
                    ContactRow(me.address, to, ContactState.OUTGOING, message, None, now)
                )
                await tx.contacts.put(
                    ContactRow(to, me.address, ContactState.INCOMING, message, identity_key, now)
                )
                woken = await self._push(
                    tx, to, EventKind.CONTACT_REQUEST,
                    contact_payload(me.address, ContactState.INCOMING, message, identity_key, now),
                )  # fmt: skip
            row = await tx.contacts.get(me.address, to)
        await self._notifier.publish(woken)
        assert row is not None
        return _contact(row)

    async def accept(self, me: Caller, raw_peer: str) -> Contact:
        if self._remote is not None and self._rules.is_remote(raw_peer):
            return await self._remote.accept(me, self._rules.parse(raw_peer))
        peer = await self._peer(raw_peer, me)
        now = self._clock.now_ms()
        async with self._uow.write() as tx:
            await self._pending_request(tx, me, peer)
            woken = await self._befriend(tx, me.address, peer, now)
            row = await tx.contacts.get(me.address, peer)
        await self._notifier.publish(woken)
        assert row is not None
        return _contact(row)

    @staticmethod
    async def _pending_request(tx: Tx, me: Caller, peer: str) -> ContactRow:
        mine = await tx.contacts.get(me.address, peer)
        if mine is None or mine.state is not ContactState.INCOMING:
            raise NoRequest(f"no pending request from {peer}")
        return mine

    async def decline(self, me: Caller, raw_peer: str) -> None:
        if self._remote is not None and self._rules.is_remote(raw_peer):
            return await self._remote.decline(me, self._rules.parse(raw_peer))
        peer = await self._peer(raw_peer, me)
        now = self._clock.now_ms()
        woken: list[str] = []
        async with self._uow.write() as tx:
            mine = await tx.contacts.get(me.address, peer)
            asked = mine is not None and mine.state is ContactState.INCOMING
            # A stranger's held messages are a request too: declining discards them.
            wrote = any(h.sender == peer for h in await tx.held.summary(me.address))
            if not asked and not wrote:
                raise NoRequest(f"no pending request from {peer}")
            await tx.held.discard_from(me.address, peer)
            if asked:
                await tx.contacts.delete(me.address, peer)
                await tx.contacts.delete(peer, me.address)
                woken = await self._push(
                    tx, peer, EventKind.CONTACT_DECLINED,
                    contact_payload(me.address, ContactState.OUTGOING, "", None, now),
                )  # fmt: skip
        await self._notifier.publish(woken)

    async def view(self, me: Caller) -> ContactsView:
        async with self._uow.read() as tx:
            rows = await tx.contacts.list(me.address)
            blocked = await tx.blocks.list(me.address)
            held = await tx.held.summary(me.address)
        return ContactsView(
            contacts=[_contact(r) for r in rows],
            blocked=blocked,
            message_requests=[
                MessageRequest(address=h.sender, held_messages=h.count, first_at=h.first_at)
                for h in held
            ],
        )

    async def delete(self, me: Caller, raw_peer: str) -> None:
        if self._remote is not None and self._rules.is_remote(raw_peer):
            return await self._remote.delete(me, self._rules.parse(raw_peer))
        peer = await self._peer(raw_peer, me)
        async with self._uow.write() as tx:
            if not await tx.contacts.delete(me.address, peer):
                raise NotFound(f"{peer} is not a contact")
            # Friendship is mutual: ending it ends it on both sides.
            await tx.contacts.delete(peer, me.address)

    async def block(self, me: Caller, raw_peer: str) -> None:
        peer = self._rules.parse(raw_peer)
        text = str(peer)
        if text == me.address:
            raise InvalidRequest("you cannot block yourself")
        async with self._uow.write() as tx:
            await tx.contacts.delete(me.address, text)
            await tx.contacts.delete(text, me.address)
            await tx.held.discard_from(me.address, text)
            await tx.blocks.add(me.address, text, self._clock.now_ms())

    async def unblock(self, me: Caller, raw_peer: str) -> None:
        text = str(self._rules.parse(raw_peer))
        async with self._uow.write() as tx:
            await tx.blocks.remove(me.address, text)

    async def get_policy(self, me: Caller) -> StrangerPolicy:
        async with self._uow.read() as tx:
            account = await tx.accounts.get(me.address)
        return account.policy if account is not None else StrangerPolicy.OPEN

    async def set_policy(self, me: Caller, policy: StrangerPolicy) -> StrangerPolicy:
        async with self._uow.write() as tx:
            await tx.accounts.set_policy(me.address, policy)
        return policy
