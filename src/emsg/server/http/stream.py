"""The WebSocket stream (protocol section 8.2).

Two coroutines per connection: a reader that parses frames into an inbox, and the
handler, which works through the inbox in order. The notifier does not need a
task of its own: it raises a flag in the inbox, and the handler sends the queue
from the connection's cursor before it takes the next frame. Sends that are
already waiting in the inbox are committed together in one transaction (group
commit) and then answered in order, all in one message: each `sent` still
follows its commit. Acks waiting in a row count as one (the highest covers the
rest), and the message service applies them in batches (see its `ack_soon`).
Several frames go in one message (a JSON array) wherever they are
ready together, since on a busy server each message costs a system call at both
ends, more than the frame itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from typing import Any, Final

from pydantic import TypeAdapter, ValidationError
from starlette.websockets import WebSocket, WebSocketDisconnect

from emsg.proto.errors import (
    EmsgError,
    InternalError,
    InvalidIdentifier,
    InvalidRequest,
    ProtocolViolation,
    RateLimited,
    Unauthorized,
    describe_invalid,
)
from emsg.proto.ids import TxnId
from emsg.proto.jsoncodec import loads_strict
from emsg.proto.stream import Stream, step
from emsg.proto.wire import QUIET, AckFrame, AuthFrame, ClientFrame, PingFrame, SendFrame
from emsg.server.clock import Clock
from emsg.server.services import Services
from emsg.server.services.common import Caller
from emsg.server.services.messages import MAX_SYNC_LIMIT

log = logging.getLogger("emsg.server.stream")

AUTH_TIMEOUT: Final = 30.0
INBOX_MAX: Final = 256
MAX_FRAMES_PER_MESSAGE: Final = 256
# Events pushed in one message (a JSON array of event frames) when several wait.
PUSH_MAX: Final = 64
GROUP_MAX: Final = 64
CLOSE_POLICY: Final = 1008
CLOSE_AUTH: Final = 4401
CLOSE_ERROR: Final = 1011

_FRAME: Final = TypeAdapter[Any](ClientFrame, config=QUIET)


@dataclass(frozen=True, slots=True)
class BadSend:
    """A send frame whose body is malformed: answered in turn, with its txn_id."""

    txn_id: str
    error: EmsgError


@dataclass(frozen=True, slots=True)
class Violation:
    error: EmsgError


@dataclass(frozen=True, slots=True)
class Gone:
    pass


Item = AuthFrame | AckFrame | SendFrame | PingFrame | BadSend | Violation | Gone


def parse_message(message: MutableMapping[str, Any], *, arrays: bool = True) -> list[Item]:
    """The frames of one WebSocket message: one object, or (if `arrays`) an array of
    them in order."""
    if message["type"] == "websocket.disconnect":
        return [Gone()]
    text = message.get("text")
    if text is None:
        return [Violation(ProtocolViolation("frames are JSON text messages"))]
    try:
        obj = loads_strict(text)
    except EmsgError as exc:
        return [Violation(ProtocolViolation(exc.message))]
    if not isinstance(obj, list):
        return [parse_frame(obj)]
    if not arrays:
        return [Violation(ProtocolViolation("this frame must come alone, as an object"))]
    if not 0 < len(obj) <= MAX_FRAMES_PER_MESSAGE:
        return [Violation(ProtocolViolation(f"1 to {MAX_FRAMES_PER_MESSAGE} frames a message"))]
    items = [parse_frame(o) for o in obj]
    for i, item in enumerate(items):
        if isinstance(item, Violation):
            return items[: i + 1]  # the connection closes there: nothing after it counts
    return items


# The longest transaction id an error frame repeats (a valid one has at most 128).
_MAX_ECHOED_TXN_ID: Final = 1024


def parse_frame(obj: Any) -> Item:
    try:
        frame: AuthFrame | AckFrame | SendFrame | PingFrame = _FRAME.validate_python(obj)
    except ValidationError as exc:
        errors = exc.errors()
        what = describe_invalid(errors, limit=1)
        if isinstance(obj, dict) and obj.get("type") == "send":
            # A send the client can match to its error is refused alone, with the
            # code `PUT /send/{txn_id}` gives (which checks the body first); the
            # connection stays open.
            txn_id = obj.get("txn_id")
            if isinstance(txn_id, str) and len(txn_id) <= _MAX_ECHOED_TXN_ID:
                if all(e["loc"][1:2] == ("txn_id",) for e in errors):
                    return BadSend(txn_id, InvalidIdentifier("not a transaction id"))
                return BadSend(txn_id, InvalidRequest(what))
        return Violation(ProtocolViolation(f"not a valid frame: {what}"))
    return frame


def _error_frame(exc: EmsgError, txn_id: str | None = None) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "error", **exc.to_wire()}
    if txn_id is not None:
        frame["txn_id"] = txn_id
    return frame


class _Inbox:
    """A bounded FIFO whose head can be inspected, and a flag for new queued events.

    Plain futures rather than asyncio.Queue or Events: an idle connection should
    cost little memory.
    """

    __slots__ = ("_getter", "_putter", "items", "woken")

    def __init__(self) -> None:
        self.items: list[Item] = []  # a short list; an empty deque would cost 760 B
        self.woken = True  # the queue may hold events from before the connection
        self._getter: asyncio.Future[None] | None = None
        self._putter: asyncio.Future[None] | None = None

    @staticmethod
    def _release(waiter: asyncio.Future[None] | None) -> None:
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def wake(self) -> None:
        """New events are queued for this device (a notifier callback)."""
        self.woken = True
        self._release(self._getter)

    async def put(self, item: Item) -> None:
        while len(self.items) >= INBOX_MAX:
            self._putter = asyncio.get_running_loop().create_future()
            await self._putter
        self.items.append(item)
        self._release(self._getter)

    async def get(self) -> Item | None:
        """The next frame, or None when queued events are to be pushed first."""
        while not self.items and not self.woken:
            self._getter = asyncio.get_running_loop().create_future()
            await self._getter
        if self.woken:
            self.woken = False  # before reading the queue: a later publish wakes again
            return None
        item = self.items.pop(0)
        self._release(self._putter)
        return item

    def take_next(self) -> Item:
        """The head, which the caller has looked at: no waiting."""
        item = self.items.pop(0)
        self._release(self._putter)
        return item


class _Expiry:
    """Wakes a connection once its token has expired, so that it closes (4401)
    rather than outlive it: the server's clock decides, re-armed if woken early."""

    __slots__ = ("_at", "_clock", "_handle", "_wake")

    def __init__(self, clock: Clock, at_ms: int, wake: Callable[[], None]) -> None:
        self._clock = clock
        self._at = at_ms
        self._wake = wake
        self._handle: asyncio.TimerHandle | None = None
        self._arm()

    def _arm(self) -> None:
        left_ms = self._at - self._clock.now_ms()
        if left_ms > 0:
            self._handle = asyncio.get_running_loop().call_later(left_ms / 1000, self._arm)
        else:
            self._handle = None
            self._wake()

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()


def _text(frame: dict[str, Any]) -> str:
    return json.dumps(frame, separators=(",", ":"), ensure_ascii=False)


def _event_frame(event_json: str) -> str:
    return f'{{"type":"event","event":{event_json}}}'


class _Connection:
    __slots__ = ("cursor", "inbox", "me", "svc", "token", "ws")

    def __init__(self, ws: WebSocket, svc: Services, me: Caller, token: str, since: int) -> None:
        self.ws = ws
        self.svc = svc
        self.me = me
        self.token = token
        self.cursor = since
        self.inbox = _Inbox()

    async def out(self, frame: dict[str, Any]) -> None:
        await self.ws.send_text(_text(frame))

    async def out_many(self, frames: list[str]) -> None:
        """Frames already in JSON text, in one message: one write, one read at the other end."""
        await self.ws.send_text(frames[0] if len(frames) == 1 else f"[{','.join(frames)}]")

    async def read(self) -> None:
        try:
            while True:
                for item in parse_message(await self.ws.receive()):
                    await self.inbox.put(item)
                    if isinstance(item, Gone | Violation):
                        return
        except (WebSocketDisconnect, RuntimeError):
            await self.inbox.put(Gone())

    async def push(self) -> None:
        """Send what is queued after the cursor (the pages of it there are)."""
        while True:
            events = await self.svc.messages.events_after(self.me, self.cursor, MAX_SYNC_LIMIT)
            for start in range(0, len(events), PUSH_MAX):
                chunk = events[start : start + PUSH_MAX]
                await self.out_many([_event_frame(e.json) for e in chunk])
                self.cursor = chunk[-1].pos
            if len(events) < MAX_SYNC_LIMIT:
                return

    async def process(self) -> int | None:
        """Work through the inbox; return a close code, or None if the client left."""
        state = Stream.LIVE
        while True:
            item = await self.inbox.get()
            if item is None:
                # A revocation, a logout or the token's expiry wakes the device: if
                # its token no longer works, close (the client logs in or renews).
                refused = await self.svc.accounts.refusal(self.token)
                if refused is not None:
                    await self.out(_error_frame(refused))
                    return CLOSE_AUTH
                await self.push()
                continue
            if isinstance(item, Gone):
                return None
            if isinstance(item, Violation):
                await self.out(_error_frame(item.error))
                return CLOSE_POLICY
            if isinstance(item, BadSend | SendFrame):
                if not await self._sends(item):
                    return CLOSE_ERROR
                continue
            try:
                state = step(state, item)
            except ProtocolViolation as exc:
                await self.out(_error_frame(exc))
                return CLOSE_POLICY
            if isinstance(item, AckFrame):
                upto = item.pos
                items = self.inbox.items
                while items and isinstance(items[0], AckFrame):
                    upto = max(upto, items[0].pos)
                    self.inbox.take_next()
                self.svc.messages.ack_soon(self.me, upto)
            elif isinstance(item, PingFrame):
                await self.out({"type": "pong"})

    async def _sends(self, first: BadSend | SendFrame) -> bool:
        group: list[BadSend | SendFrame] = [first]
        items = self.inbox.items
        while items and len(group) < GROUP_MAX and isinstance(items[0], BadSend | SendFrame):
            group.append(self.inbox.take_next())  # type: ignore[arg-type]
        answers: list[dict[str, Any] | EmsgError | None] = []
        to_send: list[tuple[Caller, TxnId, Any]] = []
        for item in group:
            if isinstance(item, BadSend):
                answers.append(item.error)
                continue
            try:
                self.svc.account_limiter.hit(self.me.address)
            except RateLimited as exc:
                answers.append(exc)
                continue
            answers.append(None)
            to_send.append((self.me, TxnId.parse(item.txn_id), item.envelopes))
        ok = True
        try:
            results = iter(await self.svc.messages.send_batch(to_send))
        except Exception:
            log.exception("group commit failed")
            results = iter([InternalError("internal error; nothing was committed")] * len(to_send))
            ok = False
        frames = []
        for item, answer in zip(group, answers, strict=True):
            if answer is None:
                answer = next(results)
            if isinstance(answer, EmsgError):
                frames.append(_text(_error_frame(answer, item.txn_id)))
            else:
                frames.append(_text({"type": "sent", "result": answer}))
        await self.out_many(frames)
        return ok


async def _authenticate(ws: WebSocket, svc: Services) -> tuple[Caller, str, int, int] | None:
    """The caller, its token, the position to resume after and the token's expiry."""
    try:
        message = await asyncio.wait_for(ws.receive(), AUTH_TIMEOUT)
    except TimeoutError:
        await ws.send_text(json.dumps(_error_frame(Unauthorized("no auth frame in time"))))
        await ws.close(CLOSE_AUTH)
        return None
    (item,) = parse_message(message, arrays=False)
    if isinstance(item, Gone):
        return None
    if isinstance(item, BadSend):
        item = Violation(ProtocolViolation("the first frame must be auth"))
    if not isinstance(item, Violation):
        try:
            step(Stream.AWAIT_AUTH, item)
        except ProtocolViolation as exc:
            item = Violation(exc)
    if isinstance(item, Violation):
        await ws.send_text(json.dumps(_error_frame(item.error)))
        await ws.close(CLOSE_POLICY)
        return None
    assert isinstance(item, AuthFrame)
    try:
        me, expires_at = await svc.accounts.authenticate_until(item.token)
    except EmsgError as exc:
        await ws.send_text(json.dumps(_error_frame(exc)))
        await ws.close(CLOSE_AUTH)
        return None
    return me, item.token, item.since, expires_at


async def stream(ws: WebSocket) -> None:
    svc: Services = ws.app.state.services
    await ws.accept()
    try:
        auth = await _authenticate(ws, svc)
    except (WebSocketDisconnect, RuntimeError):
        return
    if auth is None:
        return
    me, token, since, expires_at = auth
    conn = _Connection(ws, svc, me, token, since)
    watch = svc.notifier.watch(me.device_id, conn.inbox.wake)
    expiry = _Expiry(svc.clock, expires_at, conn.inbox.wake)
    svc.metrics.open_websockets.inc()
    reader = None
    code: int | None = None
    try:
        await svc.messages.ack(me, since)
        await conn.out({"type": "ready", "address": me.address, "device_id": me.device_id})
        reader = asyncio.create_task(conn.read())
        code = await conn.process()
    except (WebSocketDisconnect, RuntimeError):
        code = None
    finally:
        watch.close()
        expiry.cancel()
        svc.metrics.open_websockets.dec()
        if reader is not None:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
    if code is not None:
        with contextlib.suppress(WebSocketDisconnect, RuntimeError):
            await ws.close(code)
