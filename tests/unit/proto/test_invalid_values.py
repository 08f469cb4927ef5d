"""A refused value is described by where it is and which rule it broke, never repeated."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from emsg.proto.content import ANY_CONTENT, Content
from emsg.proto.errors import describe_invalid
from emsg.proto.wire import ClientFrame, ContactRequestBody, RegisterRequest

# Distinctive enough that finding one in an error message means it was echoed.
SECRETS = st.text(alphabet="QXZqxz", min_size=1, max_size=4).map(lambda s: f"Sq{s}Z")


@given(SECRETS)
def test_a_short_password_is_named_not_shown(password: str) -> None:
    with pytest.raises(ValidationError) as caught:
        RegisterRequest.model_validate({"address": "alice#example.test", "password": password})
    assert password not in str(caught.value)
    described = describe_invalid(caught.value.errors())
    assert described == "password: String should have at least 8 characters"


@given(SECRETS)
def test_an_oversized_body_is_named_not_shown(start: str) -> None:
    body = start + "b" * 16 * 1024  # an error that repeats the value shows its start
    fields = {
        "id": "abcdefgh", "from": "a#x.y", "from_device": "D", "to": "b#x.y",
        "body": body, "sent_at": 1,
    }  # fmt: skip
    with pytest.raises(ValidationError) as caught:
        Content.model_validate(fields)
    assert start not in str(caught.value)
    assert describe_invalid(caught.value.errors()) == (
        "body: String should have at most 16384 characters"
    )


def test_text_that_is_not_unicode_is_refused_without_echo() -> None:
    with pytest.raises(ValidationError) as caught:
        ContactRequestBody.model_validate(
            {"to": "b#x.y", "message": "hi \udcff there", "identity_key": "A" * 43}
        )
    assert "there" not in str(caught.value)
    assert describe_invalid(caught.value.errors()).startswith("message: ")


def test_a_request_body_location_drops_fastapis_prefix_and_stops_at_the_limit() -> None:
    errors = [
        {"loc": ("body", "envelopes", 0, "to"), "msg": "bad address"},
        {"loc": ("body",), "msg": "not an object"},
        {"loc": ("query", "limit"), "msg": "too big"},
        {"loc": ("body", "x"), "msg": "never shown: past the limit"},
    ]
    assert describe_invalid(errors, under="body") == (
        "envelopes.0.to: bad address; value: not an object; query.limit: too big"
    )
    assert describe_invalid(errors, limit=1) == "body.envelopes.0.to: bad address"
    assert describe_invalid([]) == "invalid value"


def test_a_bad_frame_is_described_in_one_line_within_300_characters() -> None:
    frame = {"type": "send", "txn_id": "t", "envelopes": [{"to": "x" * 5000}]}
    with pytest.raises(ValidationError) as caught:
        TypeAdapter(ClientFrame).validate_python(frame)
    described = describe_invalid(caught.value.errors(), limit=1)
    assert "\n" not in described
    assert len(described) <= 300
    assert "x" * 50 not in described


@given(SECRETS)
def test_the_content_adapter_never_echoes_a_decrypted_message(secret: str) -> None:
    # The adapter, not the models, decides: pydantic takes the outermost config.
    content = {
        "type": "text", "v": 1, "id": "abcdefgh", "from": "a#x.y", "from_device": "D",
        "to": "b#x.y", "sent_at": 1, "body": secret, "unknown": secret,
    }  # fmt: skip
    with pytest.raises(ValidationError) as caught:
        ANY_CONTENT.validate_python(content)
    assert secret not in str(caught.value)
