"""Sending text messages in batches: one commit and one send per burst.

A busy client (a bot, a gateway, a pipelined load generator) calls `send_text`
from many tasks at once. Each call queues its message and waits for it; one pump
task takes every message queued so far, under the sender's `order` lock. It
encrypts them all in one store transaction (the history rows and every session
they advanced are committed before any ciphertext leaves), and puts them on the
wire in encryption order, each run of messages to the same recipient as one
send. Envelope ids are derived from the transaction ids (protocol.md §7), so the
ids that will name each message in a bounce are stored in that same commit, and
a reply needs no write. A lone message is a batch of one, sent at once; only
while two batches are still unanswered does the next one wait to grow (Nagle's
algorithm, for sends).

Every send is also kept in the profile's outbox (the same commit) until the server
confirms it. A send whose outcome is unknown (the connection failed, the reply was
lost, the process was stopped) stays there and its message stays in the history,
marked pending; the next send, fetch or listen repeats it under the same
transaction id, which the server answers from its record, so it arrives once.
Confirmed rows are deleted with the next commit, so a confirmation costs none.

Runs are consecutive messages only: ciphertexts to one device (an own other
device sees every message) must not overtake each other by more than the 40
skipped keys an Olm chain keeps, and people expect their order anyway.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from dataclasses import dataclass, field
from itertools import islice
from typing import Final, TypeGuard

from emsg.client.errors import NotConfirmed
from emsg.client.keyring import Keyring
from emsg.client.models import Message
from emsg.client.sender import Sender
from emsg.client.store import ProfileStore
from emsg.crypto.identity import VerifiedDeviceList
from emsg.proto.content import Content
from emsg.proto.errors import EmsgError, KeysExhausted, RateLimited
from emsg.proto.wire import (
    MAX_ENVELOPES_PER_SEND,
    ClaimedDevice,
    OutgoingEnvelope,
    SendRequest,
    SendResult,
    envelope_id,
)

log = logging.getLogger(__name__)

Target = tuple[VerifiedDeviceList, list[str], dict[str, ClaimedDevice]]

# Batches sent and not yet answered before the next one waits to grow.
_BATCHES_IN_FLIGHT: Final = 2


@dataclass(eq=False, slots=True)
class _Job:
    content: Content
    peer: str
    message: Message
    done: asyncio.Future[None]
    envelopes: list[OutgoingEnvelope] = field(default_factory=list)

    def fail(self, exc: BaseException) -> None:
        if not self.done.done():  # else its caller went away
            self.done.set_exception(exc)

    def finish(self) -> None:
        if not self.done.done():
            self.done.set_result(None)


@dataclass(eq=False, slots=True)
class _Run:
    """Consecutive jobs to one recipient, sent together; its replies, once written."""

    jobs: list[_Job]
    envelopes: int
    sends: list[tuple[str, SendRequest]] = field(default_factory=list)
    replies: list[Awaitable[SendResult]] = field(default_factory=list)

    def fits(self, job: _Job) -> bool:
        return self.envelopes + len(job.envelopes) <= MAX_ENVELOPES_PER_SEND

    def add(self, job: _Job) -> None:
        self.jobs.append(job)
        self.envelopes += len(job.envelopes)


class Outgoing:
    def __init__(
        self, store: ProfileStore, keyring: Keyring, sender: Sender, me: str, device_id: str
    ) -> None:
        self._store = store
        self._keyring = keyring
        self._sender = sender
        self._me = me
        self._device_id = device_id
        self._queue: list[_Job] = []
        self._settling: set[asyncio.Task[None]] = set()
        self._pump: asyncio.Task[None] | None = None
        # Sends of this process written to the outbox and not settled yet: not to be
        # repeated from the outbox while they are on their way.
        self._in_flight: set[str] = set()
        self._outbox_checked = False

    async def send(self, content: Content, peer: str, message: Message) -> None:
        """Send one message (with whatever else is queued); raise what failed it."""
        job = _Job(content, peer, message, asyncio.get_running_loop().create_future())
        self._queue.append(job)
        if self._pump is None or self._pump.done():
            self._pump = asyncio.create_task(self._run_pump())
        await job.done

    async def _run_pump(self) -> None:
        """Lead batches while messages wait. One task, so callers never queue on the
        lock in a convoy, and a cancelled caller leaves the others undisturbed."""
        # No extra turn of the event loop before the first batch: the sends started
        # in the turn that started this task have queued by the time it first runs,
        # and a sender that waits for each reply goes faster without it (its request
        # goes out before, not after, what woke meanwhile: the listening side of the
        # same process, say, decrypting the last message).
        try:
            if not self._outbox_checked:  # what an earlier process left goes first
                self._outbox_checked = True
                await self.resend_pending()
            while self._queue:
                async with self._sender.order:
                    # Like Nagle's algorithm: while earlier batches still wait for their
                    # replies, let the queue grow (up to one full send) instead of
                    # sending many small batches. A sender that is not busy never waits.
                    while (
                        len(self._settling) >= _BATCHES_IN_FLIGHT
                        and len(self._queue) < MAX_ENVELOPES_PER_SEND
                    ):
                        await asyncio.wait(set(self._settling), return_when=asyncio.FIRST_COMPLETED)
                    jobs, self._queue = self._queue, []
                    await self._lead(jobs)
        except BaseException as exc:
            for job in self._queue:
                job.fail(exc)
            self._queue = []
            raise

    async def _lead(self, jobs: list[_Job]) -> None:
        try:
            # Device lists and key claims once per recipient: a claimed key that the
            # first message uses up is not needed by the next, which has the session.
            targets: dict[str, list[Target] | Exception] = {}
            prepared: list[tuple[_Job, list[Target]]] = []
            for job in jobs:
                if job.peer not in targets:
                    targets[job.peer] = await self._targets(job.peer)
                found = targets[job.peer]
                if isinstance(found, Exception):
                    job.fail(found)
                else:
                    prepared.append((job, found))
            runs = self._encrypt(prepared)
            for run in runs:
                run.replies = await self._sender.submit_planned(run.sends)
        except Exception as exc:  # this batch fails; the pump goes on with the next
            for job in jobs:
                job.fail(exc)
            return
        except BaseException as exc:
            for job in jobs:
                job.fail(exc)
            raise
        task = asyncio.create_task(self._settle(runs))
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)

    async def _targets(self, peer: str) -> list[Target] | Exception:
        """The devices to encrypt to, with keys claimed where there is no session yet."""
        try:
            mine = await self._keyring.fresh(self._me)
            wanted: list[tuple[VerifiedDeviceList, list[str]]] = []
            if peer != self._me:
                theirs = await self._keyring.fresh(peer, tofu=True)
                wanted.append((theirs, [d.device_id for d in theirs.devices]))
            own = [d.device_id for d in mine.devices if d.device_id != self._device_id]
            if own:
                wanted.append((mine, own))
            return [
                (devices, ids, await self._sender.claim(devices, ids)) for devices, ids in wanted
            ]
        except Exception as exc:
            return exc

    def _encrypt(self, prepared: list[tuple[_Job, list[Target]]]) -> list[_Run]:
        """One transaction: encrypt every job, store each message with the ids of the
        envelopes that will carry it (derived from the transaction ids, so bounces
        name it even after a crash), and plan the sends."""
        runs: list[_Run] = []
        with self._store.transaction():
            for job, targets in prepared:
                for devices, device_ids, claimed in targets:
                    out = self._sender.encrypt_to(job.content, devices, device_ids, claimed)
                    if not out and devices.address != self._me:
                        # Nothing was encrypted for this job yet (the peer comes first).
                        job.fail(KeysExhausted(f"no device of {job.peer} can receive right now"))
                        break
                    job.envelopes += out
                else:
                    self._store.add_message(job.message)
                    if not job.envelopes:  # a note to self with no other device to copy
                        job.finish()
                    elif runs and runs[-1].jobs[-1].peer == job.peer and runs[-1].fits(job):
                        runs[-1].add(job)
                    else:
                        runs.append(_Run([job], len(job.envelopes)))
            for run in runs:
                run.sends = self._sender.plan([e for j in run.jobs for e in j.envelopes])
                ids = (
                    envelope_id(self._me, self._device_id, txn_id, index)
                    for txn_id, request in run.sends
                    for index in range(len(request.envelopes))
                )
                for job in run.jobs:
                    self._store.record_sent(job.message.id, list(islice(ids, len(job.envelopes))))
                messages = [job.message.id for job in run.jobs]
                for txn_id, request in run.sends:
                    self._store.queue_send(txn_id, request.model_dump_json(), messages)
                    self._in_flight.add(txn_id)
        return runs

    async def _settle(self, runs: list[_Run]) -> None:
        """Each send's outcome: confirmed (its outbox row goes), refused for good (its
        row goes, and its messages fail with the refusal), or unknown (the row stays,
        and its messages fail with `NotConfirmed`: the next command sends them again)."""
        for run in runs:
            confirmed: list[str] = []
            refused: Exception | None = None
            unknown: Exception | None = None
            for (txn_id, _), reply in zip(run.sends, run.replies, strict=True):
                try:
                    await reply
                except Exception as exc:
                    if _refused_for_good(exc):
                        refused = refused or exc
                        self._store.drop_sends([txn_id])
                    else:
                        unknown = unknown or exc
                else:
                    confirmed.append(txn_id)
                finally:
                    self._in_flight.discard(txn_id)
            self._store.confirm_sends(confirmed)
            if unknown is not None:
                self._outbox_checked = False  # the next batch repeats it first
            for job in run.jobs:
                if unknown is not None:
                    job.fail(_not_confirmed(unknown))
                elif refused is not None:
                    job.fail(refused)
                else:
                    job.finish()

    async def resend_pending(self) -> None:
        """Send again, oldest first and under the same transaction ids, what the
        outbox holds that no send of this process has on its way: a send an earlier
        process was stopped in, or whose reply was lost. The server answers a repeat
        from its record, so nothing is delivered twice. Stops at the first send
        whose outcome is unknown (the server is probably out of reach)."""
        async with self._sender.order:
            for txn_id, raw in self._store.pending_sends():
                if txn_id in self._in_flight:
                    continue
                request = SendRequest.model_validate_json(raw)
                try:
                    await self._sender.put_once(txn_id, request)
                except Exception as exc:
                    if not _refused_for_good(exc):
                        log.info("pending send %s not confirmed yet: %s", txn_id, exc)
                        return
                    # Never delivered: shown as not delivered, as a bounce is.
                    with self._store.transaction():
                        self._store.drop_sends([txn_id])
                        self._store.mark_bounced(
                            [
                                envelope_id(self._me, self._device_id, txn_id, index)
                                for index in range(len(request.envelopes))
                            ],
                            exc.code.value,
                        )
                else:
                    self._store.confirm_sends([txn_id])

    async def aclose(self) -> None:
        """Let replies still in flight settle (or fail with the connection)."""
        if self._pump is not None:
            await asyncio.gather(self._pump, return_exceptions=True)
        if self._settling:
            await asyncio.gather(*self._settling, return_exceptions=True)


def _refused_for_good(exc: Exception) -> TypeGuard[EmsgError]:
    """The server answered and committed nothing, and would answer the same again.
    A 5xx or 429 (retried already), a connection that failed or a reply that never
    came leave the outcome unknown."""
    return isinstance(exc, EmsgError) and exc.status < 500 and not isinstance(exc, RateLimited)


def _not_confirmed(exc: Exception) -> NotConfirmed:
    why = exc.message if isinstance(exc, EmsgError) else f"{type(exc).__name__}: {exc}"
    return NotConfirmed(
        f"the homeserver did not confirm the send ({why}); the message is kept and"
        " sent again by your next send, messages or listen (never twice)"
    )
