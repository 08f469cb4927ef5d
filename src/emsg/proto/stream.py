"""The WebSocket stream's state machine: one Enum and one transition table.

A connection must authenticate with its first frame; after that it may acknowledge,
send and ping in any order. Anything else is a protocol violation and closes it.
"""

from __future__ import annotations

from enum import Enum, auto
from typing import Final

from emsg.proto.errors import ProtocolViolation
from emsg.proto.wire import AckFrame, AuthFrame, PingFrame, SendFrame


class Stream(Enum):
    AWAIT_AUTH = auto()
    LIVE = auto()


Frame = AuthFrame | AckFrame | SendFrame | PingFrame

NEXT: Final[dict[tuple[Stream, type[Frame]], Stream]] = {
    (Stream.AWAIT_AUTH, AuthFrame): Stream.LIVE,
    (Stream.LIVE, AckFrame): Stream.LIVE,
    (Stream.LIVE, SendFrame): Stream.LIVE,
    (Stream.LIVE, PingFrame): Stream.LIVE,
}


def step(state: Stream, frame: Frame) -> Stream:
    try:
        return NEXT[state, type(frame)]
    except KeyError:
        raise ProtocolViolation(f"{type(frame).__name__} not allowed in {state.name}") from None
