"""Applying a verified transaction from another server: envelopes and contact
actions of its users towards ours, under our users' block lists and policies.

The whole transaction is checked before anything is written (every sender on
the origin's domain, every recipient on ours: otherwise `403` and nothing
stored), spends the request's nonce in the same commit as its effects, is
idempotent by transaction id (the same id with another body is
`409 txn_conflict`, logged), de-duplicates events across transactions by their
id, and is acknowledged only after it is committed.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass, field
from typing import Any

from emsg.proto.errors import (
    EmsgError,
    Forbidden,
    InvalidAddress,
    InvalidRequest,
    RecipientRefuses,
    TxnConflict,
    UnknownDevice,
    UnknownRecipient,
)
from emsg.proto.federation import (
    EventResult,
    FedContact,
    FedEvent,
    FedKind,
    Transaction,
    TransactionResult,
)
from emsg.proto.ids import Address
from emsg.proto.wire import ContactState, Envelope, EventKind, StrangerPolicy
from emsg.server.clock import Clock
from emsg.server.federation.auth import Signed, spend_nonce
from emsg.server.federation.ports import OutboxItem, fed
from emsg.server.services.common import contact_payload, parse_address
from emsg.server.services.contacts import release_held
from emsg.server.storage.ports import Tx, UnitOfWork
from emsg.server.storage.records import ContactRow, HeldEnvelope, NewEvent

log = logging.getLogger("emsg.federation")

LEDGER_RETENTION_MS = 7 * 86_400_000


def txn_hash(raw_body: bytes) -> str:
    return hashlib.sha256(raw_body).hexdigest()


def _address(raw: str) -> Address:
    try:
        return parse_address(raw)
    except InvalidAddress:
        raise InvalidRequest(f"not an address: {raw[:80]!r}") from None


def check_transaction(txn: Transaction, origin: str, domain: str) -> None:
    """Every sender on the origin's domain, every recipient here; else `Forbidden`."""
    if txn.origin != origin:
        raise Forbidden("the transaction's origin is not the signing server")
    if txn.destination != domain:
        raise Forbidden(f"the transaction is addressed to {txn.destination}, not {domain}")
    ids = [e.id for e in txn.events]
    if len(set(ids)) != len(ids):
        raise InvalidRequest("duplicate event id in the transaction")
    for event in txn.events:
        sender, recipient = _parties(event)
        if str(_address(sender).domain) != origin:
            raise Forbidden(f"{origin} may not speak for {sender}")
        if str(_address(recipient).domain) != domain:
            raise Forbidden(f"{recipient} is not an address of {domain}")


def _parties(event: FedEvent) -> tuple[str, str]:
    if event.kind is FedKind.ENVELOPE:
        if event.envelope is None or event.contact is not None:
            raise InvalidRequest("an envelope event carries exactly an envelope")
        if event.envelope.id != event.id:
            raise InvalidRequest("an envelope event's id is the envelope's id")
        return event.envelope.sender, event.envelope.recipient
    if event.contact is None or event.envelope is not None:
        raise InvalidRequest("a contact event carries exactly a contact")
    return event.contact.sender, event.contact.recipient


def contact_event(kind: FedKind, contact: FedContact, destination: str) -> OutboxItem:
    event_id = secrets.token_urlsafe(12)
    event = FedEvent(id=event_id, kind=kind, contact=contact)
    return OutboxItem(
        destination, kind.value, event_id, contact.sender, None,
        event.model_dump(mode="json", exclude_none=True),
    )  # fmt: skip


@dataclass
class _Apply:
    """What one transaction does, gathered so it is written in order."""

    tx: Tx
    now: int
    origin: str
    queued: list[NewEvent] = field(default_factory=list)
    held: list[HeldEnvelope] = field(default_factory=list)
    woken: list[str] = field(default_factory=list)
    replies: list[OutboxItem] = field(default_factory=list)

    async def flush(self) -> None:
        if self.queued:
            await self.tx.events.append(self.queued, self.now)
            self.woken += [e.device_id for e in self.queued]
            self.queued = []
        if self.held:
            await self.tx.held.add(self.held, self.now)
            self.held = []

    async def push(self, to: str, kind: EventKind, payload: dict[str, Any]) -> None:
        await self.flush()
        devices = [d.device_id for d in await self.tx.devices.active_of(to)]
        await self.tx.events.append([NewEvent(d, kind.value, dict(payload)) for d in devices],
                                    self.now)  # fmt: skip
        self.woken += devices

    async def envelope(self, env: Envelope) -> None:
        tx = self.tx
        account = await tx.accounts.get(env.recipient)
        if account is None:
            raise UnknownRecipient(f"no account {env.recipient}")
        device = await tx.devices.get(env.device_id)
        if device is None or device.address != env.recipient or device.revoked:
            raise UnknownDevice(f"{env.recipient} has no device {env.device_id}")
        if await tx.blocks.blockers_of([env.recipient], env.sender):
            raise RecipientRefuses("the recipient does not accept messages from you")
        row = await tx.contacts.get(env.recipient, env.sender)
        payload = env.model_dump(mode="json")
        if row is None or row.state is not ContactState.FRIEND:
            if account.policy is StrangerPolicy.CONTACTS_ONLY:
                raise RecipientRefuses("the recipient does not accept messages from you")
            if account.policy is StrangerPolicy.REQUESTS:
                self.held.append(HeldEnvelope(0, env.recipient, env.sender, env.device_id,
                                              payload, self.now))  # fmt: skip
                return
        self.queued.append(NewEvent(env.device_id, EventKind.ENVELOPE.value, payload))

    async def contact(self, kind: FedKind, c: FedContact) -> None:
        tx, me, peer = self.tx, c.recipient, c.sender
        if await tx.accounts.get(me) is None:
            raise UnknownRecipient(f"no account {me}")
        mine = await tx.contacts.get(me, peer)
        if kind is FedKind.CONTACT_REMOVED:
            if mine is not None:
                await tx.contacts.delete(me, peer)
            return
        if kind is FedKind.CONTACT_DECLINED:
            if mine is not None and mine.state is ContactState.OUTGOING:
                await tx.contacts.delete(me, peer)
                await self.push(
                    me,
                    EventKind.CONTACT_DECLINED,
                    contact_payload(peer, ContactState.OUTGOING, "", None, self.now),
                )
            return  # fmt: skip
        if await tx.blocks.blockers_of([me], peer):
            raise RecipientRefuses("the recipient does not accept this request")
        if mine is not None and mine.state is ContactState.FRIEND:
            if kind is FedKind.CONTACT_REQUEST:  # they lost track: confirm again
                await self._confirm(me, peer)
            return
        answered = mine is not None and mine.state is ContactState.OUTGOING
        if kind is FedKind.CONTACT_ACCEPTED and not answered and mine is None:
            kind = FedKind.CONTACT_REQUEST  # an answer to nothing we asked: a request
        if answered or kind is FedKind.CONTACT_ACCEPTED:
            await self._befriend(me, peer, mine, c.identity_key)
            if kind is FedKind.CONTACT_REQUEST:  # crossed requests: tell them too
                await self._confirm(me, peer)
            return
        await tx.contacts.put(
            ContactRow(me, peer, ContactState.INCOMING, c.message, c.identity_key, self.now)
        )
        await self.push(me, EventKind.CONTACT_REQUEST,
                        contact_payload(peer, ContactState.INCOMING, c.message, c.identity_key,
                                        self.now))  # fmt: skip

    async def _befriend(self, me: str, peer: str, mine: ContactRow | None,
                        peer_key: str | None) -> None:  # fmt: skip
        key = peer_key or (mine.identity_key if mine else None)
        await self.flush()
        await self.tx.contacts.put(
            ContactRow(me, peer, ContactState.FRIEND, mine.message if mine else "", key, self.now)
        )
        released = await release_held(self.tx, me, peer)
        await self.tx.events.append(released, self.now)
        self.woken += [e.device_id for e in released]
        await self.push(me, EventKind.CONTACT_ACCEPTED,
                        contact_payload(peer, ContactState.FRIEND, "", key, self.now))  # fmt: skip

    async def _confirm(self, me: str, peer: str) -> None:
        account = await self.tx.accounts.get(me)
        contact = FedContact(sender=me, recipient=peer,
                             identity_key=account.identity_key if account else None)  # fmt: skip
        self.replies.append(contact_event(FedKind.CONTACT_ACCEPTED, contact, self.origin))


@dataclass(frozen=True, slots=True)
class Received:
    result: dict[str, Any]
    woken: list[str]
    replies_to: str | None


class Inbound:
    def __init__(self, domain: str, uow: UnitOfWork, clock: Clock) -> None:
        self._domain = domain
        self._uow = uow
        self._clock = clock
        self._last_prune = 0

    async def receive(self, signed: Signed, txn_id: str, txn: Transaction, digest: str) -> Received:
        origin = signed.origin
        check_transaction(txn, origin, self._domain)
        now = self._clock.now_ms()
        async with self._uow.write() as tx:
            # First, so that a replay changes nothing (the transaction rolls back).
            await spend_nonce(tx, signed, now)
            ledger = fed(tx).fed_inbox
            previous = await ledger.get_txn(origin, txn_id)
            if previous is not None:
                if previous.body_hash != digest:
                    log.warning("%s reused transaction id %s with another body", origin, txn_id)
                    raise TxnConflict("this transaction id was used with a different body")
                return Received(previous.response, [], None)
            seen = await ledger.seen(origin, [e.id for e in txn.events])
            work = _Apply(tx, now, origin)
            results: list[EventResult] = []
            for event in txn.events:
                if event.id in seen:
                    results.append(EventResult(id=event.id))
                    continue
                try:
                    if event.kind is FedKind.ENVELOPE:
                        assert event.envelope is not None
                        await work.envelope(event.envelope)
                    else:
                        assert event.contact is not None
                        await work.contact(event.kind, event.contact)
                except EmsgError as exc:
                    results.append(EventResult(id=event.id, code=exc.code.value,
                                               message=exc.message))  # fmt: skip
                else:
                    results.append(EventResult(id=event.id))
            await work.flush()
            await ledger.mark_seen(origin, [e.id for e in txn.events if e.id not in seen], now)
            result = TransactionResult(txn_id=txn_id, results=results).model_dump(
                mode="json", exclude_none=True
            )
            await ledger.put_txn(origin, txn_id, digest, result, now)
            if work.replies:
                await fed(tx).outbox.enqueue(work.replies, now)
            if now - self._last_prune > 3600_000:
                self._last_prune = now
                await ledger.prune(now - 900_000, now - LEDGER_RETENTION_MS)
        return Received(result, work.woken, origin if work.replies else None)
