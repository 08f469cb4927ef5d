"""The account recovery key and the identity backup it opens.

The recovery key is 160 random bits shown to the user once (and again whenever it
is regenerated), as 40 base32 characters in groups of four. HKDF turns it into an
AES-GCM key that seals the account identity key's seed; the sealed backup is kept
by the homeserver, which can store it but never open it. A device that has the
recovery key fetches the backup, opens it and signs itself into the device list.
Regenerating the key seals the same identity key under a new recovery key.
"""

from __future__ import annotations

import base64
import secrets
from typing import Final

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from emsg.crypto.errors import DecryptionFailed, InvalidRecoveryKey
from emsg.crypto.identity import IdentityKey
from emsg.crypto.keys import KEY_LEN, SecretBox
from emsg.proto import b64
from emsg.proto.devices import IdentityBackup

RECOVERY_LEN: Final = 20


class RecoveryKey:
    __slots__ = ("_raw",)

    def __init__(self, raw: bytes) -> None:
        if len(raw) != RECOVERY_LEN:
            raise InvalidRecoveryKey("a recovery key is 32 letters and digits")
        self._raw = bytes(raw)

    @classmethod
    def generate(cls) -> RecoveryKey:
        return cls(secrets.token_bytes(RECOVERY_LEN))

    @classmethod
    def parse(cls, text: str) -> RecoveryKey:
        flat = "".join(text.split()).replace("-", "").upper()
        flat = flat.replace("0", "O").replace("1", "I").replace("8", "B")
        try:
            raw = base64.b32decode(flat)
        except ValueError:
            raise InvalidRecoveryKey("a recovery key is 32 letters and digits") from None
        return cls(raw)

    def display(self) -> str:
        text = base64.b32encode(self._raw).decode()
        return "-".join(text[i : i + 4] for i in range(0, len(text), 4))

    def _box(self, address: str) -> SecretBox:
        key = HKDF(
            algorithm=hashes.SHA256(),
            length=KEY_LEN,
            salt=None,
            info=f"emsg.recovery.v1|{address}".encode(),
        ).derive(self._raw)
        return SecretBox(key)

    def seal(self, identity: IdentityKey, address: str) -> IdentityBackup:
        sealed = self._box(address).seal(
            identity.private_bytes(), _label(address, identity.public_key)
        )
        return IdentityBackup(identity_key=identity.public_key, sealed=b64.encode(sealed))

    def open(self, backup: IdentityBackup, address: str) -> IdentityKey:
        """The identity key in `backup`; `InvalidRecoveryKey` if this key does not open it."""
        try:
            raw = b64.decode(backup.sealed)
            seed = self._box(address).open(raw, _label(address, backup.identity_key))
        except (DecryptionFailed, ValueError):
            raise InvalidRecoveryKey(
                f"this recovery key does not open the backup of {address} (check it for typos)"
            ) from None
        identity = IdentityKey.from_private_bytes(seed)
        if identity.public_key != backup.identity_key:
            raise InvalidRecoveryKey("the backup holds another key than it names")
        return identity

    def __repr__(self) -> str:
        return "RecoveryKey(<secret>)"


def _label(address: str, identity_key: str) -> str:
    return f"emsg.identity_backup.v1|{address}|{identity_key}"
