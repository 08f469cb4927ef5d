"""Parsing Curve25519 public keys, refusing the weak ones.

A low-order point makes the Diffie-Hellman output predictable (all-zero for the
identity), so a malicious server or peer could force a session key it knows.
The list is libsodium's: the points of order 1, 2, 4 and 8 and the
non-canonical encodings p-1, p, p+1. X25519 ignores bit 255, so it is masked
first (which also catches the encodings with that bit set).
"""

from __future__ import annotations

import functools
from typing import Final

import vodozemac

from emsg.crypto.errors import InvalidKey
from emsg.proto import b64
from emsg.proto.errors import InvalidRequest

LOW_ORDER_POINTS: Final = frozenset(
    bytes.fromhex(h)
    for h in (
        "0000000000000000000000000000000000000000000000000000000000000000",
        "0100000000000000000000000000000000000000000000000000000000000000",
        "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
        "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    )
)


def is_weak(raw: bytes) -> bool:
    masked = raw[:31] + bytes([raw[31] & 0x7F]) if len(raw) == 32 else raw
    return masked in LOW_ORDER_POINTS


@functools.lru_cache(maxsize=4096)  # a pure function of an immutable key, hit per message
def curve25519_key(key_b64: str) -> vodozemac.Curve25519PublicKey:
    """The vodozemac key for `key_b64`, or `InvalidKey` if malformed or low-order."""
    try:
        raw = b64.decode(key_b64)
    except InvalidRequest:
        raise InvalidKey("a Curve25519 key must be unpadded base64") from None
    if len(raw) != 32:
        raise InvalidKey("a Curve25519 key is 32 bytes")
    if is_weak(raw):
        raise InvalidKey("refusing a low-order Curve25519 key")
    return vodozemac.Curve25519PublicKey.from_bytes(raw)
