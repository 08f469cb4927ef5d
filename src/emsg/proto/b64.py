"""Unpadded standard base64, the encoding of every key, signature and ciphertext."""

from __future__ import annotations

import base64
import binascii

from emsg.proto.errors import InvalidRequest


def encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def decode(text: str) -> bytes:
    if not text.isascii():
        raise InvalidRequest("base64 must be ASCII")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest("not unpadded standard base64") from None
