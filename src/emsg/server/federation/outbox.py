"""The durable outbound queue: one sender task per destination.

Rows are written in the same transaction as the message that caused them. A
destination's task sends its oldest rows as one transaction, deletes them once
the peer acknowledged (after its commit), and otherwise waits per the retry
schedule (exponential, capped near an hour, reset when the peer is heard from).
Tasks are independent, so a slow or dead peer never delays the others. Rows
still undelivered past the retry window bounce back to their senders' devices,
as do the events a peer refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from emsg.proto.errors import EmsgError, ErrorCode, RemoteUnavailable
from emsg.proto.federation import (
    FEDERATION_PREFIX,
    Backoff,
    RetryPolicy,
    TransactionResult,
)
from emsg.proto.jsoncodec import dumps
from emsg.proto.wire import Bounce, BouncedEnvelope, ContactState, EventKind
from emsg.server.clock import Clock
from emsg.server.fanout import Notifier
from emsg.server.federation.client import FederationClient
from emsg.server.federation.ports import OutboxRow, fed
from emsg.server.storage.ports import Tx, UnitOfWork
from emsg.server.storage.records import NewEvent

log = logging.getLogger("emsg.federation")

IDLE_EXIT_S: Final = 60.0
LEASE_MS: Final = 120_000


def txn_id_for(rows: Sequence[OutboxRow], body: bytes) -> str:
    """Stable for a given batch, so a retry of it is recognised as the same."""
    return f"{rows[0].id}-{rows[-1].id}-{hashlib.sha256(body).hexdigest()[:16]}"


async def bounce(
    tx: Tx, rows: Sequence[OutboxRow], destination: str, reason: str, message: str, now: int
) -> list[str]:
    """Tell each sender's devices which of its envelopes (or contact actions) bounced."""
    by_sender: dict[str, list[OutboxRow]] = {}
    for row in rows:
        by_sender.setdefault(row.item.sender, []).append(row)
    woken: list[str] = []
    for sender, items in by_sender.items():
        envelopes = [
            BouncedEnvelope(id=r.item.event_id, to=env["recipient"], device_id=env["device_id"])
            for r in items
            if (env := r.item.payload.get("envelope")) is not None
        ]
        payloads = []
        if envelopes:
            payloads.append(Bounce(destination=destination, reason=reason, message=message,
                                   envelopes=envelopes))  # fmt: skip
        for r in items:
            contact = r.item.payload.get("contact")
            if contact is None:
                continue
            payloads.append(Bounce(destination=destination, reason=reason, message=message,
                                   contact=contact["recipient"]))  # fmt: skip
            mine = await tx.contacts.get(sender, contact["recipient"])
            if r.item.kind == "contact_request" and mine and mine.state is ContactState.OUTGOING:
                await tx.contacts.delete(sender, contact["recipient"])
        devices = [d.device_id for d in await tx.devices.active_of(sender)]
        await tx.events.append(
            [
                NewEvent(d, EventKind.BOUNCE.value, p.model_dump(mode="json", exclude_none=True))
                for p in payloads
                for d in devices
            ],
            now,
        )
        woken += devices
    return woken


@dataclass(slots=True)
class _Lane:
    """What a destination's task knows while it holds the lease, so that it need not
    ask the database again before every transaction: nobody else may send to the
    destination or change its backoff until the lease runs out."""

    lease_until: int = 0
    backoff: Backoff = field(default_factory=Backoff)


class OutboxSender:
    def __init__(
        self,
        uow: UnitOfWork,
        client: FederationClient,
        clock: Clock,
        notifier: Notifier,
        policy: RetryPolicy,
        batch_size: int = 100,
        owner: str | None = None,
    ) -> None:
        self._uow = uow
        self._client = client
        self._clock = clock
        self._notifier = notifier
        self._policy = policy
        self._batch = batch_size
        # Stable across restarts of one instance, so its own lease does not block it
        # after a crash; distinct between instances sharing one database.
        self._owner = owner or secrets.token_hex(8)
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._wake: dict[str, asyncio.Event] = {}
        self._lanes: dict[str, _Lane] = {}
        self._failing: set[str] = set()
        self._closed = False

    async def start(self) -> None:
        """Resume every destination with queued rows (after a restart)."""
        async with self._uow.read() as tx:
            destinations = await fed(tx).outbox.pending_destinations()
        for destination in destinations:
            self.wake(destination)

    def wake(self, destination: str) -> None:
        """New rows for `destination` were committed: send them now.

        Called in the event-loop turn of the commit; a task already sending picks
        the rows up as soon as its transaction in flight is answered."""
        if self._closed:
            return
        self._wake.setdefault(destination, asyncio.Event()).set()
        task = self._tasks.get(destination)
        if task is None or task.done():
            self._tasks[destination] = asyncio.get_running_loop().create_task(
                self._run(destination), name=f"emsg-outbox-{destination}"
            )

    async def heard_from(self, destination: str) -> None:
        """The peer just talked to us: it is up, so retry at once."""
        if destination in self._failing:
            self._failing.discard(destination)
            async with self._uow.write() as tx:
                await fed(tx).outbox.set_backoff(destination, RetryPolicy.after_success())
            lane = self._lanes.get(destination)
            if lane is not None:
                lane.backoff = RetryPolicy.after_success()
            self.wake(destination)

    async def close(self) -> None:
        self._closed = True
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()

    async def idle(self) -> None:
        """Wait until every destination's queue is empty (for tests and benchmarks)."""
        while True:
            async with self._uow.read() as tx:
                if not await fed(tx).outbox.pending_destinations():
                    return
            await asyncio.sleep(0.02)

    async def _sleep(self, destination: str, seconds: float) -> None:
        event = self._wake.setdefault(destination, asyncio.Event())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), max(0.0, seconds))

    async def _run(self, destination: str) -> None:
        try:
            while not self._closed:
                self._wake.setdefault(destination, asyncio.Event()).clear()
                delay = await self._step(destination)
                if delay is None:
                    await self._sleep(destination, IDLE_EXIT_S)
                    if not self._wake[destination].is_set():
                        self._lanes.pop(destination, None)
                        return  # idle: the next enqueue starts a new task
                elif delay > 0:
                    await self._sleep(destination, delay)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("outbox task for %s crashed; restarting in 5 s", destination)
            self._lanes.pop(destination, None)
            await asyncio.sleep(5)
            self._tasks.pop(destination, None)
            self.wake(destination)

    async def _lane(self, destination: str, now: int) -> _Lane | None:
        """The destination's lane, (re)taking the lease once half of it has run out,
        and re-reading the backoff while the peer is failing; None if another
        instance holds the lease."""
        lane = self._lanes.get(destination)
        if (
            lane is not None
            and lane.lease_until - now > LEASE_MS // 2
            and lane.backoff.failures == 0
        ):
            return lane
        async with self._uow.write() as tx:
            outbox = fed(tx).outbox
            if not await outbox.lease(destination, self._owner, now, now + LEASE_MS):
                self._lanes.pop(destination, None)
                return None
            lane = _Lane(now + LEASE_MS, await outbox.backoff(destination))
        self._lanes[destination] = lane
        return lane

    async def _step(self, destination: str) -> float | None:
        """Send one batch. Return None when the queue is empty, else seconds to wait."""
        now = self._clock.now_ms()
        lane = await self._lane(destination, now)
        if lane is None:
            return 5.0
        if lane.backoff.retry_at > now:
            return (lane.backoff.retry_at - now) / 1000
        # Read after the last batch's rows were deleted, so it takes every row
        # committed up to this moment (the reader on SQLite sees the last commit).
        async with self._uow.read() as tx:
            rows = await fed(tx).outbox.batch(destination, self._batch)
        if not rows:
            return None
        events = [r.item.payload for r in rows]
        body = {"origin": self._client.origin, "destination": destination, "events": events}
        encoded = dumps(body)
        txn_id = txn_id_for(rows, encoded)
        try:
            reply = await self._client.request(
                "PUT", destination, f"{FEDERATION_PREFIX}/send/{txn_id}", encoded=encoded
            )
            result = TransactionResult.model_validate(reply)
        except RemoteUnavailable as exc:
            return await self._failed(destination, lane, str(exc))
        except EmsgError as exc:
            # The peer refused the whole transaction (4xx): it will not change its
            # mind on a retry, so the batch bounces rather than block the queue.
            log.warning("%s refused transaction %s: %s", destination, txn_id, exc.message)
            await self._finish(destination, lane, rows, {r.item.event_id: (exc.code.value,
                               exc.message) for r in rows})  # fmt: skip
            return 0.0
        except ValueError as exc:
            return await self._failed(destination, lane, f"malformed reply: {exc}")
        refused = {r.id: (r.code, r.message or "") for r in result.results if r.code is not None}
        await self._finish(destination, lane, rows, refused)
        return 0.0

    async def _finish(
        self,
        destination: str,
        lane: _Lane,
        rows: Sequence[OutboxRow],
        refused: dict[str, tuple[str, str]],
    ) -> None:
        """One commit: the delivered rows go, refused ones bounce, and the backoff is
        cleared (written only if it was set)."""
        now = self._clock.now_ms()
        woken: list[str] = []
        async with self._uow.write() as tx:
            await fed(tx).outbox.delete([r.id for r in rows])
            if lane.backoff != RetryPolicy.after_success():
                await fed(tx).outbox.set_backoff(destination, RetryPolicy.after_success())
            by_reason: dict[tuple[str, str], list[OutboxRow]] = {}
            for row in rows:
                if row.item.event_id in refused:
                    by_reason.setdefault(refused[row.item.event_id], []).append(row)
            for (code, message), items in by_reason.items():
                woken += await bounce(tx, items, destination, code, message, now)
        lane.backoff = RetryPolicy.after_success()
        self._failing.discard(destination)
        if woken:
            await self._notifier.publish(woken)

    async def _failed(self, destination: str, lane: _Lane, why: str) -> float:
        now = self._clock.now_ms()
        nxt = self._policy.after_failure(lane.backoff, now)
        self._failing.add(destination)
        log.info("delivery to %s failed (%d in a row): %s", destination, nxt.failures, why)
        woken: list[str] = []
        async with self._uow.write() as tx:
            await fed(tx).outbox.set_backoff(destination, nxt)
            expired = await fed(tx).outbox.older_than(destination, now - self._policy.window_ms)
            if expired:
                await fed(tx).outbox.delete([r.id for r in expired])
                woken = await bounce(
                    tx, expired, destination, ErrorCode.REMOTE_UNAVAILABLE.value,
                    f"{destination} stayed unreachable past the retry window: {why}", now,
                )  # fmt: skip
        lane.backoff = nxt
        if woken:
            await self._notifier.publish(woken)
        return (nxt.retry_at - now) / 1000
