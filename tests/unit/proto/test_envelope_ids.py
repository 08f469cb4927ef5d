"""Envelope ids are derived from the send, as protocol.md §7 spells it."""

from __future__ import annotations

import base64
import hashlib

from hypothesis import given
from hypothesis import strategies as st

from emsg.proto.wire import envelope_id


def test_the_documented_derivation() -> None:
    material = b"emsg.envelope.v1\x00alice#a.example\x00DEV1\x00txn-1\x000"
    expected = base64.urlsafe_b64encode(hashlib.sha256(material).digest()[:12]).decode()
    assert envelope_id("alice#a.example", "DEV1", "txn-1", 0) == expected
    assert len(expected) == 16
    assert "=" not in expected


@given(
    st.tuples(st.text(max_size=20), st.text(max_size=20), st.text(max_size=20), st.integers(0, 63)),
    st.tuples(st.text(max_size=20), st.text(max_size=20), st.text(max_size=20), st.integers(0, 63)),
)
def test_distinct_sends_get_distinct_ids(
    a: tuple[str, str, str, int], b: tuple[str, str, str, int]
) -> None:
    # Addresses, device ids and txn ids never hold NUL, which separates the parts.
    if "\x00" in "".join(a[:3] + b[:3]):
        return
    assert (envelope_id(*a) == envelope_id(*b)) == (a == b)
