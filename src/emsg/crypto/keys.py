"""Keys derived from the passphrase, and AEAD sealing of small secrets.

The passphrase is stretched once with argon2id (salted per profile); HKDF then
splits the result into independent sub-keys so that the key which encrypts
vodozemac pickles, the key which seals secrets, the key which tags rows and the
passphrase verifier can never be confused with one another.

The same passphrase is the account password, and that never leaves the client:
the homeserver gets `login_key`, a separate argon2id stretch salted by the
address (protocol.md §4). Knowing it, a server can neither log in elsewhere with
the password nor open the profile, short of guessing the password through argon2id.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import unicodedata
from dataclasses import dataclass
from typing import Final

from argon2.low_level import Type, hash_secret_raw
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from emsg.crypto.errors import DecryptionFailed, ProfileTampered, WrongPassphrase

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

# The login key's cost is fixed by the protocol (§4), apart from any profile's: every
# client of an account must arrive at the same key, whatever its profiles use.
LOGIN_KDF: Final = KdfParams(time_cost=2, memory_cost=64 * 1024, parallelism=2)


def _argon2id(secret: str, salt: bytes, params: KdfParams) -> bytes:
    return hash_secret_raw(
        secret=secret.encode("utf-8"),
        salt=salt,
        time_cost=params.time_cost,
        memory_cost=params.memory_cost,
        parallelism=params.parallelism,
        hash_len=KEY_LEN,
        type=Type.ID,
    )


def login_key(password: str, address: str, params: KdfParams = LOGIN_KDF) -> str:
    """What a client sends the homeserver in place of the account password.

    `address` is the canonical address (`Address.parse(...)` as a string): every
    device of the account derives the same key from it, with no round trip to fetch
    a salt. The password is NFC-normalised first, so that it is the same password
    on a keyboard that composes accents and on one that does not. `params` other
    than `LOGIN_KDF` are for this function's own tests: no server would accept it.
    """
    salt = hashlib.sha256(b"emsg.login.v1\x00" + address.encode("utf-8")).digest()[:SALT_LEN]
    stretched = _argon2id(unicodedata.normalize("NFC", password), salt, params)
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


RowField = str | int | None


class RowTags:
    """HMAC-SHA-256 tags over a profile row's fields: what the profile keeps that is
    not secret but decides whom to trust is not sealed, so it is tagged, and a row
    that someone without the passphrase changed no longer matches its tag."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_LEN:
            raise ValueError("a row tag key is 32 bytes")
        self._key = bytes(key)

    def tag(self, table: str, fields: tuple[RowField, ...]) -> bytes:
        # A JSON array: unambiguous however the fields are split, None included.
        data = json.dumps([table, *fields], separators=(",", ":"), ensure_ascii=False)
        return hmac.new(self._key, data.encode("utf-8", "surrogatepass"), hashlib.sha256).digest()

    def check(self, table: str, fields: tuple[RowField, ...], tag: bytes | None) -> None:
        """Raise `ProfileTampered` unless `tag` is the tag of these fields."""
        if tag is None or not hmac.compare_digest(self.tag(table, fields), bytes(tag)):
            raise ProfileTampered.row(table, fields[0])

    def __repr__(self) -> str:
        return "RowTags(<secret>)"


def _hkdf(master: bytes, salt: bytes, info: str) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=KEY_LEN, salt=salt, info=info.encode()).derive(
        master
    )


@dataclass(frozen=True, slots=True)
class ProfileKeys:
    """Everything derived from the passphrase: one argon2id run, four HKDF outputs."""

    pickle_key: PickleKey
    box: SecretBox
    rows: RowTags
    verifier: bytes
    # The verifier of profiles made before their rows were tagged (schema 1).
    legacy_verifier: bytes

    @classmethod
    def derive(cls, passphrase: str, salt: bytes, params: KdfParams = KdfParams()) -> ProfileKeys:
        if len(salt) != SALT_LEN:
            raise ValueError("the profile salt is 16 bytes")
        master = _argon2id(passphrase, salt, params)
        return cls(
            pickle_key=PickleKey(_hkdf(master, salt, "emsg.profile.pickle.v1")),
            box=SecretBox(_hkdf(master, salt, "emsg.profile.seal.v1")),
            rows=RowTags(_hkdf(master, salt, "emsg.profile.rows.v1")),
            verifier=_hkdf(master, salt, "emsg.profile.verifier.v2"),
            legacy_verifier=_hkdf(master, salt, "emsg.profile.verifier.v1"),
        )

    def check(self, stored_verifier: bytes) -> bool:
        """Raise `WrongPassphrase` unless these keys came from the profile's passphrase;
        True if the profile is of schema 1, whose rows are not tagged yet.

        The schema is told by the verifier, not by a value anyone could write: only
        the passphrase makes either verifier, so someone without it cannot make a
        tagged profile look untagged (and so get rows they changed tagged as they
        stand), unless they kept the verifier of the profile from before its upgrade."""
        if hmac.compare_digest(self.verifier, stored_verifier):
            return False
        if hmac.compare_digest(self.legacy_verifier, stored_verifier):
            return True
        raise WrongPassphrase()
