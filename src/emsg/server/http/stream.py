"""The WebSocket stream (protocol section 8.2).

Three coroutines per connection: a reader that parses frames into an inbox, a
pusher that sends the queue from the connection's cursor whenever the notifier
wakes it, and the handler itself, which works through the inbox in order. Sends
that are already waiting in the inbox are committed together in one transaction
(group commit) and then answered one by one, in order: each `sent` still follows
its commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any, Final

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from pydantic import TypeAdapter, ValidationError

from emsg.proto.errors import (
    EmsgError,
    InternalError,
    InvalidRequest,
    ProtocolViolation,
    RateLimited,
    Unauthorized,
)
from emsg.proto.ids import TxnId
from emsg.proto.jsoncodec import loads_strict
from emsg.proto.stream import Stream, step
from emsg.proto.wire import AckFrame, AuthFrame, ClientFrame, PingFrame, SendFrame
from emsg.server.services import Services
from emsg.server.services.common import Caller
from emsg.server.services.messages import MAX_SYNC_LIMIT

log = logging.getLogger("emsg.server.stream")

router = APIRouter()

AUTH_TIMEOUT: Final = 30.0
INBOX_MAX: Final = 256
GROUP_MAX: Final = 64
CLOSE_POLICY: Final = 1008
CLOSE_AUTH: Final = 4401
CLOSE_ERROR: Final = 1011

_FRAME: Final = TypeAdapter[Any](ClientFrame)


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


def parse_frame(message: MutableMapping[str, Any]) -> Item:
    if message["type"] == "websocket.disconnect":
        return Gone()
    text = message.get("text")
    if text is None:
        return Violation(ProtocolViolation("frames are JSON text messages"))
    try:
        obj = loads_strict(text)
    except EmsgError as exc:
        return Violation(ProtocolViolation(exc.message))
    try:
        frame: AuthFrame | AckFrame | SendFrame | PingFrame = _FRAME.validate_python(obj)
    except ValidationError as exc:
        if isinstance(obj, dict) and obj.get("type") == "send":
            txn_id = obj.get("txn_id")
            if isinstance(txn_id, str) and len(txn_id) <= 128:
                return BadSend(txn_id, InvalidRequest(_summary(exc)))
        return Violation(ProtocolViolation(f"not a valid frame: {_summary(exc)}"))
    return frame


def _summary(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err.get("loc", ()))
    return f"{where}: {err.get('msg', 'invalid')}"[:200]


def _error_frame(exc: EmsgError, txn_id: str | None = None) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "error", **exc.to_wire()}
    if txn_id is not None:
        frame["txn_id"] = txn_id
    return frame


class _Inbox:
    """A bounded FIFO whose head can be inspected (asyncio.Queue cannot)."""

    __slots__ = ("_has_items", "_has_space", "items")

    def __init__(self) -> None:
        self.items: deque[Item] = deque()
        self._has_items = asyncio.Event()
        self._has_space = asyncio.Event()
        self._has_space.set()

    async def put(self, item: Item) -> None:
        await self._has_space.wait()
        self.items.append(item)
        self._has_items.set()
        if len(self.items) >= INBOX_MAX:
            self._has_space.clear()

    async def get(self) -> Item:
        while not self.items:
            self._has_items.clear()
            await self._has_items.wait()
        item = self.items.popleft()
        if len(self.items) < INBOX_MAX:
            self._has_space.set()
        return item


class _Connection:
    def __init__(self, ws: WebSocket, svc: Services, me: Caller, since: int) -> None:
        self.ws = ws
        self.svc = svc
        self.me = me
        self.cursor = since
        self.inbox = _Inbox()
        self.out_lock = asyncio.Lock()

    async def out(self, frame: dict[str, Any]) -> None:
        text = json.dumps(frame, separators=(",", ":"), ensure_ascii=False)
        async with self.out_lock:
            await self.ws.send_text(text)

    async def read(self) -> None:
        try:
            while True:
                item = parse_frame(await self.ws.receive())
                await self.inbox.put(item)
                if isinstance(item, Gone | Violation):
                    return
        except (WebSocketDisconnect, RuntimeError):
            await self.inbox.put(Gone())

    async def push(self) -> None:
        sub = self.svc.notifier.subscribe(self.me.device_id)
        try:
            while True:
                sub.clear()
                events = await self.svc.messages.events_after(self.me, self.cursor, MAX_SYNC_LIMIT)
                for event in events:
                    await self.out({"type": "event", "event": event})
                    self.cursor = event["pos"]
                if not events:
                    await sub.wait(None)
        except (WebSocketDisconnect, RuntimeError):
            await self.inbox.put(Gone())
        finally:
            sub.close()

    async def process(self) -> int | None:
        """Work through the inbox; return a close code, or None if the client left."""
        state = Stream.LIVE
        while True:
            item = await self.inbox.get()
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
                await self.svc.messages.ack(self.me, item.pos)
            elif isinstance(item, PingFrame):
                await self.out({"type": "pong"})

    async def _sends(self, first: BadSend | SendFrame) -> bool:
        group: list[BadSend | SendFrame] = [first]
        items = self.inbox.items
        while items and len(group) < GROUP_MAX and isinstance(items[0], BadSend | SendFrame):
            group.append(await self.inbox.get())  # type: ignore[arg-type]
        answers: list[dict[str, Any] | EmsgError | None] = []
        to_send: list[tuple[TxnId, Any]] = []
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
            to_send.append((TxnId.parse(item.txn_id), item.envelopes))
        ok = True
        try:
            results = iter(await self.svc.messages.send_batch(self.me, to_send))
        except Exception:
            log.exception("group commit failed")
            results = iter([InternalError("internal error; nothing was committed")] * len(to_send))
            ok = False
        for item, answer in zip(group, answers, strict=True):
            if answer is None:
                answer = next(results)
            if isinstance(answer, EmsgError):
                await self.out(_error_frame(answer, item.txn_id))
            else:
                await self.out({"type": "sent", "result": answer})
        return ok


async def _authenticate(ws: WebSocket, svc: Services) -> tuple[Caller, int] | None:
    try:
        message = await asyncio.wait_for(ws.receive(), AUTH_TIMEOUT)
    except TimeoutError:
        await ws.send_text(json.dumps(_error_frame(Unauthorized("no auth frame in time"))))
        await ws.close(CLOSE_AUTH)
        return None
    item = parse_frame(message)
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
        me = await svc.accounts.authenticate(item.token)
    except EmsgError as exc:
        await ws.send_text(json.dumps(_error_frame(exc)))
        await ws.close(CLOSE_AUTH)
        return None
    return me, item.since


@router.websocket("/stream")
async def stream(ws: WebSocket) -> None:
    svc: Services = ws.app.state.services
    await ws.accept()
    try:
        auth = await _authenticate(ws, svc)
    except (WebSocketDisconnect, RuntimeError):
        return
    if auth is None:
        return
    me, since = auth
    conn = _Connection(ws, svc, me, since)
    svc.metrics.open_websockets.inc()
    reader = pusher = None
    code: int | None = None
    try:
        await svc.messages.ack(me, since)
        await conn.out({"type": "ready", "address": me.address, "device_id": me.device_id})
        reader = asyncio.create_task(conn.read())
        pusher = asyncio.create_task(conn.push())
        code = await conn.process()
    except (WebSocketDisconnect, RuntimeError):
        code = None
    finally:
        svc.metrics.open_websockets.dec()
        for task in (reader, pusher):
            if task is not None:
                task.cancel()
        await asyncio.gather(
            *(t for t in (reader, pusher) if t is not None), return_exceptions=True
        )
    if code is not None:
        with contextlib.suppress(WebSocketDisconnect, RuntimeError):
            await ws.close(code)
