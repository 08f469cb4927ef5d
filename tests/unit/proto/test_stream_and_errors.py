"""The stream state machine and the error tree's wire round trip."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from emsg.proto import errors
from emsg.proto.errors import ErrorCode, ProtocolViolation, error_from_wire
from emsg.proto.stream import NEXT, Stream, step
from emsg.proto.wire import AckFrame, AuthFrame, PingFrame, SendFrame

FRAMES = [
    AuthFrame(type="auth", token="t"),
    AckFrame(type="ack", pos=1),
    PingFrame(type="ping"),
    SendFrame.model_validate(
        {
            "type": "send",
            "txn_id": "t1",
            "envelopes": [
                {
                    "to": "bob#x.y",
                    "device_id": "D",
                    "ciphertext": {"type": 0, "body": "AA", "sender_key": "A" * 43},
                }
            ],
        }
    ),
]


def test_auth_must_come_first() -> None:
    assert step(Stream.AWAIT_AUTH, FRAMES[0]) is Stream.LIVE
    for frame in FRAMES[1:]:
        with pytest.raises(ProtocolViolation):
            step(Stream.AWAIT_AUTH, frame)


def test_auth_only_once() -> None:
    with pytest.raises(ProtocolViolation):
        step(Stream.LIVE, FRAMES[0])


@given(st.lists(st.sampled_from(FRAMES), max_size=20))
def test_any_sequence_either_follows_the_table_or_raises(frames: list[object]) -> None:
    state = Stream.AWAIT_AUTH
    for frame in frames:
        allowed = (state, type(frame)) in NEXT
        try:
            state = step(state, frame)  # type: ignore[arg-type]
        except ProtocolViolation:
            assert not allowed
            return
        assert allowed


@pytest.mark.parametrize("code", list(ErrorCode))
def test_every_code_round_trips(code: ErrorCode) -> None:
    body = {"error": {"code": code.value, "message": "why"}}
    err = error_from_wire(400, body, retry_after=2.0)
    assert err.code is code
    assert err.message == "why"


def test_rate_limited_keeps_retry_after() -> None:
    err = error_from_wire(429, {"error": {"code": "rate_limited", "message": "x"}}, 3.5)
    assert isinstance(err, errors.RateLimited)
    assert err.retry_after == 3.5


def test_garbage_error_body_is_internal() -> None:
    assert error_from_wire(502, "<html>").code is ErrorCode.INTERNAL
    assert error_from_wire(400, {"error": {"code": "nope"}}).code is ErrorCode.INTERNAL
