"""Keys derived from the passphrase, and AEAD sealing of small secrets.

The passphrase is stretched once with argon2id (salted per profile); HKDF then
splits the result into independent sub-keys so that the key which encrypts
vodozemac pickles, the key which seals secrets and the passphrase verifier can
never be confused with one another.

The same passphrase is the account password, and that never leaves the client:
the homeserver gets `login_key`, a separate argon2id stretch salted by the
address (protocol.md §4). Knowing it, a server can neither log in elsewhere with
the password nor open the profile, short of guessing the password through argon2id.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import unicodedata
from dataclasses import dataclass
from typing import Final

from argon2.low_level import Type, hash_secret_raw
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from emsg.crypto.errors import DecryptionFailed, WrongPassphrase

KEY_LEN: Final = 32
SALT_LEN: Final = 16
_NONCE_LEN: Final = 12
_SEAL_VERSION: Final = b"\x01"


@dataclass(frozen=True, slots=True)
class KdfParams:
    """argon2id cost; stored with the profile so it can be raised later."""

    time_cost: int = 2
    memory_cost: int = 64 * 1024  # KiB, i.e. 64 MiB
    parallelism: int = 2


# For tests only: the same construction, cheap enough to run hundreds of times.
FAST_KDF_FOR_TESTS: Final = KdfParams(time_cost=1, memory_cost=8, parallelism=1)


def login_key(password: str, address: str, params: KdfParams = KdfParams()) -> str:
    """What a client sends the homeserver in place of the account password.

    `address` is the canonical address (`Address.parse(...)` as a string): every
    device of the account derives the same key from it, with no round trip to fetch
    a salt. The password is NFC-normalised first, so that it is the same password
    on a keyboard that composes accents and on one that does not. `params` is
    the protocol's cost (the default) outside tests; every client of an account
    must use the same.
    """
    salt = hashlib.sha256(b"emsg.login.v1\x00" + address.encode("utf-8")).digest()[:SALT_LEN]
    stretched = hash_secret_raw(
        secret=unicodedata.normalize("NFC", password).encode("utf-8"),
        salt=salt,
        time_cost=params.time_cost,
        memory_cost=params.memory_cost,
        parallelism=params.parallelism,
        hash_len=KEY_LEN,
        type=Type.ID,
    )
    return base64.urlsafe_b64encode(stretched).rstrip(b"=").decode("ascii")


def new_salt() -> bytes:
    return secrets.token_bytes(SALT_LEN)


class PickleKey:
    """The 32-byte key vodozemac encrypts pickles with; never printed."""

    __slots__ = ("_raw",)

    def __init__(self, raw: bytes) -> None:
        if len(raw) != KEY_LEN:
            raise ValueError("a pickle key is 32 bytes")
        self._raw = bytes(raw)

    @property
    def raw(self) -> bytes:
        return self._raw

    def __repr__(self) -> str:
        return "PickleKey(<secret>)"


class SecretBox:
    """AES-256-GCM for small secrets; the label is bound as associated data."""

    __slots__ = ("_aead",)

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_LEN:
            raise ValueError("an AEAD key is 32 bytes")
        self._aead = AESGCM(key)

    def seal(self, plaintext: bytes, label: str) -> bytes:
        nonce = secrets.token_bytes(_NONCE_LEN)
        return _SEAL_VERSION + nonce + self._aead.encrypt(nonce, plaintext, label.encode())

    def open(self, sealed: bytes, label: str) -> bytes:
        if len(sealed) < 1 + _NONCE_LEN + 16 or sealed[:1] != _SEAL_VERSION:
            raise DecryptionFailed(f"sealed secret {label!r} is malformed")
        nonce, body = sealed[1 : 1 + _NONCE_LEN], sealed[1 + _NONCE_LEN :]
        try:
            return self._aead.decrypt(nonce, body, label.encode())
        except InvalidTag:
            raise DecryptionFailed(f"sealed secret {label!r} does not open") from None

    def __repr__(self) -> str:
        return "SecretBox(<secret>)"


def _hkdf(master: bytes, salt: bytes, info: str) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=KEY_LEN, salt=salt, info=info.encode()).derive(
        master
    )


@dataclass(frozen=True, slots=True)
class ProfileKeys:
    """Everything derived from the passphrase: one argon2id run, three HKDF outputs."""

    pickle_key: PickleKey
    box: SecretBox
    verifier: bytes

    @classmethod
    def derive(cls, passphrase: str, salt: bytes, params: KdfParams = KdfParams()) -> ProfileKeys:
        if len(salt) != SALT_LEN:
            raise ValueError("the profile salt is 16 bytes")
        master = hash_secret_raw(
            secret=passphrase.encode("utf-8"),
            salt=salt,
            time_cost=params.time_cost,
            memory_cost=params.memory_cost,
            parallelism=params.parallelism,
            hash_len=KEY_LEN,
            type=Type.ID,
        )
        return cls(
            pickle_key=PickleKey(_hkdf(master, salt, "emsg.profile.pickle.v1")),
            box=SecretBox(_hkdf(master, salt, "emsg.profile.seal.v1")),
            verifier=_hkdf(master, salt, "emsg.profile.verifier.v1"),
        )

    def check(self, stored_verifier: bytes) -> None:
        """Raise `WrongPassphrase` unless these keys came from the profile's passphrase."""
        if not hmac.compare_digest(self.verifier, stored_verifier):
            raise WrongPassphrase()
