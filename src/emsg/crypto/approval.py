"""The approval code a new device shows, and the proof that travels back with the key.

A new device makes a random 40-bit secret that never leaves it except on its own
screen, and shows `code = secret || MAC(secret, its DeviceKeys)[:5]` as 16 base32
characters. The user types (or scans) the code on an approved device, which finds
the one pending device whose keys match the MAC: a server cannot slip in a device
of its own, because it does not know the secret. The approved device sends the
account identity key back, Olm-encrypted to the device it approved, with
`confirm = MAC(secret, identity key, DeviceKeys)`: the new device accepts the key
only with that proof, so a server cannot hand it a key of its own making either.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from typing import Final

from emsg.crypto.errors import InvalidApprovalCode, UntrustedDevice
from emsg.proto import b64
from emsg.proto.jsoncodec import canonical
from emsg.proto.wire import DeviceKeys, model_dump

SECRET_LEN: Final = 5
TAG_LEN: Final = 5
_MATCH_LABEL: Final = b"emsg.approval.match.v1\x00"
_CONFIRM_LABEL: Final = b"emsg.approval.confirm.v1\x00"


def new_secret() -> bytes:
    return secrets.token_bytes(SECRET_LEN)


def _mac(secret: bytes, label: bytes, data: bytes) -> bytes:
    return hmac.new(secret, label + data, hashlib.sha256).digest()


def _keys_bytes(keys: DeviceKeys) -> bytes:
    return canonical(model_dump(keys))


def approval_code(secret: bytes, keys: DeviceKeys) -> str:
    """The code the new device shows: `ABCD-EFGH-IJKL-MNOP`."""
    if len(secret) != SECRET_LEN:
        raise ValueError("an approval secret is 5 bytes")
    raw = secret + _mac(secret, _MATCH_LABEL, _keys_bytes(keys))[:TAG_LEN]
    text = base64.b32encode(raw).decode()
    return "-".join(text[i : i + 4] for i in range(0, len(text), 4))


def parse_code(code: str) -> tuple[bytes, bytes]:
    """(secret, tag) of a typed code; spaces, dashes and case do not matter."""
    text = "".join(code.split()).replace("-", "").upper()
    text = text.replace("0", "O").replace("1", "I").replace("8", "B")  # look-alikes
    try:
        raw = base64.b32decode(text)
    except ValueError:
        raise InvalidApprovalCode("an approval code is 16 letters and digits") from None
    if len(raw) != SECRET_LEN + TAG_LEN:
        raise InvalidApprovalCode("an approval code is 16 letters and digits")
    return raw[:SECRET_LEN], raw[SECRET_LEN:]


def matches(code: str, keys: DeviceKeys) -> bool:
    secret, tag = parse_code(code)
    expected = _mac(secret, _MATCH_LABEL, _keys_bytes(keys))[:TAG_LEN]
    return hmac.compare_digest(tag, expected)


def confirm_tag(secret: bytes, identity_key: str, keys: DeviceKeys) -> str:
    data = canonical({"identity_key": identity_key, "device_keys": model_dump(keys)})
    return b64.encode(_mac(secret, _CONFIRM_LABEL, data))


def check_confirm(secret: bytes, identity_key: str, keys: DeviceKeys, confirm: str) -> None:
    """Raise `UntrustedDevice` unless `confirm` was made by someone who saw our code."""
    if not hmac.compare_digest(confirm_tag(secret, identity_key, keys), confirm):
        raise UntrustedDevice("the identity key did not come from a device given our code")
