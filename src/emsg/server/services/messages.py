"""Sending envelopes (idempotent, all-or-nothing) and reading a device's queue."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from emsg.proto.errors import (
    EmsgError,
    InternalError,
    RecipientRefuses,
    TxnConflict,
    UnknownDevice,
    UnknownRecipient,
)
from emsg.proto.ids import TxnId
from emsg.proto.wire import (
    ContactState,
    Disposition,
    EventKind,
    OutgoingEnvelope,
    StrangerPolicy,
)
from emsg.proto.wire import envelope_id as derived_envelope_id
from emsg.server.clock import Clock
from emsg.server.fanout import Notifier
from emsg.server.federation.ports import OutboxItem
from emsg.server.metrics import Metrics
from emsg.server.services.common import AddressRules, Caller, event_json
from emsg.server.storage.ports import Tx, UnitOfWork
from emsg.server.storage.records import HeldEnvelope, NewEvent

TXN_RETENTION_MS: Final = 48 * 3600 * 1000
# Stream acks are applied together, this long after the first one waiting.
ACK_FLUSH_S: Final = 0.05
MAX_SYNC_LIMIT: Final = 1000
MAX_SYNC_TIMEOUT_MS: Final = 30_000
_ENVELOPE: Final = EventKind.ENVELOPE.value
log = logging.getLogger("emsg.server.messages")


def body_hash(envelopes: Sequence[OutgoingEnvelope]) -> str:
    """Hash of the parsed body: key order and whitespace do not make a new request."""
    digest = hashlib.sha256()
    for env in envelopes:
        digest.update(env.model_dump_json().encode())
        digest.update(b"\n")
    return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class WireEvent:
    """A queued event and its wire form (`Event` as compact JSON text)."""

    pos: int
    json: str


@dataclass(frozen=True, slots=True)
class SyncPage:
    """A `SyncResult`: the events in order, and the cursor after them."""

    events: list[WireEvent]
    next: int

    def to_json(self) -> str:
        return f'{{"events":[{",".join(e.json for e in self.events)}],"next":{self.next}}}'


@dataclass(slots=True)
class SendOutcome:
    """One send's reply body, and the devices to wake once it is committed."""

    result: dict[str, Any]
    woken: list[str] = field(default_factory=list)
    accepted: int = 0
    remote: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Waiting:
    """A send waiting for its group's commit."""

    me: Caller
    txn_id: TxnId
    envelopes: Sequence[OutgoingEnvelope]
    done: asyncio.Future[dict[str, Any]]


class MessageService:
    def __init__(
        self,
        uow: UnitOfWork,
        clock: Clock,
        rules: AddressRules,
        notifier: Notifier,
        metrics: Metrics,
        wake_remote: Callable[[Iterable[str]], None] | None = None,
    ) -> None:
        self._uow = uow
        self._wake_remote = wake_remote
        self._clock = clock
        self._rules = rules
        self._notifier = notifier
        self._metrics = metrics
        self._local_domain = str(rules.domain)
        self._last_prune = 0
        # device -> highest position acknowledged on a stream and not yet deleted
        self._acks: dict[str, int] = {}
        self._ack_timer: asyncio.TimerHandle | None = None
        self._ack_flushes: set[asyncio.Task[None]] = set()
        self._waiting: list[_Waiting] = []
        # Group commits and wake-ups in flight (awaited by `close`).
        self._groups: set[asyncio.Task[None]] = set()

    async def send(
        self, me: Caller, txn_id: TxnId, envelopes: Sequence[OutgoingEnvelope]
    ) -> dict[str, Any]:
        """One send. Sends that arrive in the same turn of the event loop (concurrent
        HTTP requests) are committed together: one commit, each answered alone."""
        done: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Waiting(me, txn_id, envelopes, done))
        if len(self._waiting) == 1:
            asyncio.get_running_loop().call_soon(self._commit_waiting)
        return await done

    def _commit_waiting(self) -> None:
        group, self._waiting = self._waiting, []
        task = asyncio.get_running_loop().create_task(self._commit_group(group))
        self._groups.add(task)
        task.add_done_callback(self._groups.discard)

    async def _commit_group(self, group: list[_Waiting]) -> None:
        try:
            results = await self.send_batch([(w.me, w.txn_id, w.envelopes) for w in group])
        except BaseException as exc:  # nothing was committed: every send fails alike
            if not isinstance(exc, EmsgError):
                log.exception("a group of %d sends failed; nothing was committed", len(group))
            for w in group:
                if not w.done.done():
                    w.done.set_exception(
                        exc
                        if isinstance(exc, EmsgError)
                        else InternalError("internal error; nothing was committed")
                    )
            if not isinstance(exc, Exception):
                raise
            return
        for w, result in zip(group, results, strict=True):
            if w.done.done():  # the caller went away; its send is committed all the same
                continue
            if isinstance(result, EmsgError):
                w.done.set_exception(result)
            else:
                w.done.set_result(result)

    async def send_batch(
        self, sends: Sequence[tuple[Caller, TxnId, Sequence[OutgoingEnvelope]]]
    ) -> list[dict[str, Any] | EmsgError]:
        """Several sends (of any callers) in one transaction (one commit); each
        succeeds or fails alone.

        `send_in` checks everything before it writes anything, so a refused send
        leaves nothing behind in the shared transaction.
        """
        results: list[dict[str, Any] | EmsgError] = []
        outcomes: list[SendOutcome] = []
        async with self._uow.write() as tx:
            for me, txn_id, envelopes in sends:
                try:
                    outcome = await self.send_in(tx, me, txn_id, envelopes)
                except EmsgError as exc:
                    results.append(exc)
                else:
                    outcomes.append(outcome)
                    results.append(outcome.result)
        await self._after_commit(outcomes)
        return results

    async def _after_commit(self, outcomes: Sequence[SendOutcome]) -> None:
        woken = [d for o in outcomes for d in o.woken]
        accepted = sum(o.accepted for o in outcomes)
        if accepted:
            self._metrics.envelopes_accepted.inc(accepted)
        remote = [d for o in outcomes for d in o.remote]
        if remote and self._wake_remote is not None:
            self._wake_remote(remote)
        if woken:
            # In a task of its own, so that the senders' replies (resolved when this
            # returns) are written before the recipients' streams wake: a sender goes
            # on with its next message while the pushes are served, instead of its
            # reply waiting behind them.
            task = asyncio.get_running_loop().create_task(self._publish(woken))
            self._groups.add(task)
            task.add_done_callback(self._groups.discard)

    async def _publish(self, device_ids: list[str]) -> None:
        try:
            await self._notifier.publish(device_ids)
        except Exception:  # the events are committed: streams find them on their next wake
            log.exception("could not wake %d devices", len(device_ids))

    async def send_in(
        self, tx: Tx, me: Caller, txn_id: TxnId, envelopes: Sequence[OutgoingEnvelope]
    ) -> SendOutcome:
        digest = body_hash(envelopes)
        # The common case is a new transaction id: check and write first, and look
        # for an earlier use of the id only when that fails or the id is taken. A
        # repeat is answered from the stored reply even if it would fail now.
        try:
            targets, held_for = await self._check(tx, me, envelopes)
        except EmsgError:
            replay = await self._replay(tx, me, txn_id, digest)
            if replay is None:
                raise
            return replay
        now = self._clock.now_ms()
        queued: list[NewEvent] = []
        held: list[HeldEnvelope] = []
        sent: list[dict[str, Any]] = []
        outgoing: list[OutboxItem] = []
        for index, (to, env) in enumerate(targets):
            envelope_id = derived_envelope_id(me.address, me.device_id, txn_id.value, index)
            payload = {
                "id": envelope_id,
                "sender": me.address,
                "sender_device": me.device_id,
                "recipient": to,
                "device_id": env.device_id,
                "ciphertext": env.ciphertext.model_dump(mode="json"),
                "sent_at": now,
            }
            domain = to.partition("#")[2]
            if domain != self._local_domain:  # another server's user: its queue
                event = {"id": envelope_id, "kind": _ENVELOPE, "envelope": payload}
                outgoing.append(
                    OutboxItem(domain, _ENVELOPE, envelope_id, me.address, me.device_id, event)
                )
                disposition = Disposition.QUEUED
            elif to in held_for:
                held.append(HeldEnvelope(0, to, me.address, env.device_id, payload, now))
                disposition = Disposition.HELD
            else:
                queued.append(NewEvent(env.device_id, _ENVELOPE, payload))
                disposition = Disposition.QUEUED
            sent.append(
                {
                    "id": envelope_id,
                    "to": to,
                    "device_id": env.device_id,
                    "disposition": disposition.value,
                }
            )
        result = {"txn_id": txn_id.value, "envelopes": sent, "accepted_at": now}
        if not await tx.txns.put(me.device_id, txn_id.value, digest, result, now):
            replay = await self._replay(tx, me, txn_id, digest)
            if replay is None:  # the row that was in the way is gone: cannot happen
                raise InternalError("the transaction id is taken but not readable")
            return replay
        await tx.events.append(queued, now)
        await tx.held.add(held, now)
        if outgoing:
            await tx.outbox.enqueue(outgoing, now)
        if now - self._last_prune > 3600_000:
            self._last_prune = now
            await tx.txns.prune(now - TXN_RETENTION_MS)
        return SendOutcome(
            result, [e.device_id for e in queued], len(targets),
            list({i.destination for i in outgoing}),
        )  # fmt: skip

    async def _check(
        self, tx: Tx, me: Caller, envelopes: Sequence[OutgoingEnvelope]
    ) -> tuple[list[tuple[str, OutgoingEnvelope]], set[str]]:
        """Every envelope's recipient and device, and who holds it as a stranger's."""
        targets = [(self._rules.target(e.to), e) for e in envelopes]
        local = [(to, e) for to, e in targets if to.partition("#")[2] == self._local_domain]
        recipients = list({to for to, _ in local})
        accounts = await tx.accounts.get_many(recipients)
        for to in recipients:
            if to not in accounts:
                raise UnknownRecipient(f"no account {to}")
        devices = await tx.devices.get_many(list({e.device_id for _, e in local}))
        for to, env in local:
            device = devices.get(env.device_id)
            if device is None or device.address != to or device.revoked:
                raise UnknownDevice(f"{to} has no device {env.device_id}")

        held_for: set[str] = set()
        strangers = [to for to in recipients if to != me.address]
        if strangers:
            if await tx.blocks.blockers_of(strangers, me.address):
                raise RecipientRefuses("a recipient does not accept messages from you")
            contacts = await tx.contacts.get_for_peers(strangers, me.address)
            for to in strangers:
                row = contacts.get(to)
                if row is not None and row.state is ContactState.FRIEND:
                    continue
                policy = accounts[to].policy
                if policy is StrangerPolicy.CONTACTS_ONLY:
                    raise RecipientRefuses("a recipient does not accept messages from you")
                if policy is StrangerPolicy.REQUESTS:
                    held_for.add(to)
        return targets, held_for

    async def _replay(self, tx: Tx, me: Caller, txn_id: TxnId, digest: str) -> SendOutcome | None:
        """The stored reply of an earlier send with this id, if there was one."""
        previous = await tx.txns.get(me.device_id, txn_id.value)
        if previous is None:
            return None
        if previous.body_hash != digest:
            raise TxnConflict("this transaction id was used with a different body")
        return SendOutcome(previous.response)

    async def ack(self, me: Caller, upto: int) -> None:
        if upto > 0:
            async with self._uow.write() as tx:
                await tx.events.ack(me.device_id, upto)

    def ack_soon(self, me: Caller, upto: int) -> None:
        """Acknowledge from a busy stream: deleted with the others waiting, within
        ACK_FLUSH_S, in one commit. Reads in this process honour it at once; a crash
        before the commit only redelivers, which clients de-duplicate (§8.2)."""
        if upto <= self._acks.get(me.device_id, 0):
            return
        self._acks[me.device_id] = upto
        if self._ack_timer is None:
            self._ack_timer = asyncio.get_running_loop().call_later(ACK_FLUSH_S, self._flush_soon)

    def _flush_soon(self) -> None:
        self._ack_timer = None
        task = asyncio.get_running_loop().create_task(self.flush_acks())
        self._ack_flushes.add(task)
        task.add_done_callback(self._ack_flushes.discard)

    async def flush_acks(self) -> None:
        acks = dict(self._acks)
        if not acks:
            return
        try:
            async with self._uow.write() as tx:
                for device_id, upto in acks.items():
                    await tx.events.ack(device_id, upto)
        except Exception:
            log.exception("%d acknowledgements failed; their events come again", len(acks))
        # Forgotten only now: until the delete is committed, reads must still skip.
        for device_id, upto in acks.items():
            if self._acks.get(device_id) == upto:
                del self._acks[device_id]

    async def close(self) -> None:
        await asyncio.gather(*self._groups, return_exceptions=True)
        if self._ack_timer is not None:
            self._ack_timer.cancel()
            self._ack_timer = None
        await asyncio.gather(*self._ack_flushes, return_exceptions=True)
        await self.flush_acks()

    async def events_after(self, me: Caller, since: int, limit: int) -> list[WireEvent]:
        since = max(since, self._acks.get(me.device_id, 0))
        async with self._uow.read() as tx:
            events = await tx.events.after(me.device_id, since, limit)
        delivered = sum(1 for e in events if e.kind == _ENVELOPE)
        if delivered:
            self._metrics.envelopes_delivered.inc(delivered)
        return [WireEvent(e.pos, event_json(e.pos, e.kind, e.payload_json)) for e in events]

    async def sync(self, me: Caller, since: int, timeout_ms: int, limit: int) -> SyncPage:
        await self.ack(me, since)
        sub = self._notifier.subscribe(me.device_id)
        try:
            events = await self.events_after(me, since, limit)
            if not events and timeout_ms > 0 and await sub.wait(timeout_ms / 1000):
                events = await self.events_after(me, since, limit)
        finally:
            sub.close()
        return SyncPage(events, events[-1].pos if events else since)
