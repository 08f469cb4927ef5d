"""Signatures cover canonical JSON plus a purpose; purposes are not interchangeable."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given
from hypothesis import strategies as st

from emsg.proto import b64, signing
from emsg.proto.errors import BadSignature

KEY = Ed25519PrivateKey.generate()
PUB = b64.encode(KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))


def sign(purpose: str, obj: dict[str, object]) -> str:
    return b64.encode(KEY.sign(signing.signable(purpose, obj)))


def test_sign_and_verify() -> None:
    obj = {"key_id": "k1", "key": "x", "fallback": False}
    signing.verify(signing.ONE_TIME_KEY, obj, sign(signing.ONE_TIME_KEY, obj), PUB)


def test_purpose_is_bound() -> None:
    obj = {"device_id": "D"}
    with pytest.raises(BadSignature):
        signing.verify(signing.DEVICE_LIST, obj, sign(signing.DEVICE_KEYS, obj), PUB)


def test_signature_member_is_excluded() -> None:
    obj: dict[str, object] = {"a": 1}
    sig = sign(signing.DEVICE_KEYS, obj)
    signing.verify(signing.DEVICE_KEYS, {**obj, "signature": sig}, sig, PUB)


@given(st.dictionaries(st.text(max_size=4), st.integers(0, 9), min_size=1, max_size=4))
def test_any_change_breaks_the_signature(obj: dict[str, int]) -> None:
    sig = sign(signing.DEVICE_KEYS, dict(obj))
    changed = {k: v + 1 for k, v in obj.items()}
    with pytest.raises(BadSignature):
        signing.verify(signing.DEVICE_KEYS, changed, sig, PUB)


@pytest.mark.parametrize("bad_key", ["", "!!", "A" * 42, b64.encode(b"\0" * 31)])
def test_malformed_keys_are_bad_signatures(bad_key: str) -> None:
    with pytest.raises(BadSignature):
        signing.verify(signing.DEVICE_KEYS, {}, "A" * 86, bad_key)


def test_b64_is_unpadded_and_strict() -> None:
    assert b64.encode(b"\0") == "AA"
    assert b64.decode("AA") == b"\0"
