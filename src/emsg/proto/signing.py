"""What exactly is signed, and Ed25519 verification.

Every signed object is a JSON object whose canonical form (RFC 8785) without its
`signature` member, and with a `purpose` string that names what it is, is signed.
The purpose keeps a signature for one kind of object from being replayed as another.
"""

from __future__ import annotations

from typing import Any, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from emsg.proto import b64
from emsg.proto.errors import BadSignature, InvalidRequest
from emsg.proto.jsoncodec import canonical

DEVICE_KEYS: Final = "emsg.device_keys.v1"
ONE_TIME_KEY: Final = "emsg.one_time_key.v1"
DEVICE_LIST: Final = "emsg.device_list.v1"


def signable(purpose: str, obj: dict[str, Any]) -> bytes:
    body = {k: v for k, v in obj.items() if k != "signature"}
    body["purpose"] = purpose
    return canonical(body)


def ed25519_public_key(key_b64: str) -> Ed25519PublicKey:
    raw = b64.decode(key_b64)
    if len(raw) != 32:
        raise InvalidRequest("an Ed25519 key is 32 bytes")
    return Ed25519PublicKey.from_public_bytes(raw)


def verify(purpose: str, obj: dict[str, Any], signature_b64: str, key_b64: str) -> None:
    """Raise `BadSignature` unless `signature_b64` signs `obj` for `purpose` under the key."""
    try:
        ed25519_public_key(key_b64).verify(b64.decode(signature_b64), signable(purpose, obj))
    except (InvalidSignature, InvalidRequest, ValueError):
        raise BadSignature(f"{purpose} signature does not verify") from None
