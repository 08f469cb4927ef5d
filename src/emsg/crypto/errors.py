"""Client-side crypto errors, in the same tree as the wire errors.

They never travel over the wire; `code` is the closest wire code so a front end that
only looks at codes still does something sensible, and `kind` names them exactly.
"""

from __future__ import annotations

from typing import ClassVar

from emsg.proto.errors import EmsgError, ErrorCode


class CryptoError(EmsgError):
    code, status = ErrorCode.INTERNAL, 500
    kind: ClassVar[str] = "crypto_error"

    @classmethod
    def default_message(cls) -> str:
        return cls.kind.replace("_", " ")


class DecryptionFailed(CryptoError):
    """The ciphertext does not decrypt with any session (corrupt, misaddressed, forged)."""

    code, status = ErrorCode.PROTOCOL_VIOLATION, 400
    kind = "decryption_failed"


class ContentRejected(DecryptionFailed):
    """It decrypted, but the content breaks protocol.md §9 (wrong from/to/device)."""

    kind = "content_rejected"


class ReplayedMessage(DecryptionFailed):
    """A pre-key message that was already accepted once (protocol.md §9)."""

    kind = "replayed_message"


class UntrustedDevice(CryptoError):
    """A key or device that does not chain up to a verified device list."""

    code, status = ErrorCode.BAD_SIGNATURE, 400
    kind = "untrusted_device"


class InvalidKey(CryptoError):
    """A malformed or weak (all-zero, low-order) public key."""

    code, status = ErrorCode.INVALID_REQUEST, 400
    kind = "invalid_key"


class WrongPassphrase(CryptoError):
    code, status = ErrorCode.UNAUTHORIZED, 401
    kind = "wrong_passphrase"

    @classmethod
    def default_message(cls) -> str:
        return "wrong passphrase for this profile"


class ProfileTampered(CryptoError):
    """A profile row that decides whom to trust (a pinned identity key, a verified
    flag, a device-list version) or a message's sender was changed by someone
    without the passphrase: its tag does not match."""

    kind = "profile_tampered"

    @classmethod
    def row(cls, table: str, key: object) -> ProfileTampered:
        return cls(
            f"the profile's {table} entry for {key} was changed outside EMSG; restore the"
            " profile folder from a backup, or log in again in a new folder"
        )


class InvalidApprovalCode(CryptoError):
    """A typed approval code that is not 16 base32 characters."""

    code, status = ErrorCode.INVALID_REQUEST, 400
    kind = "invalid_approval_code"


class InvalidRecoveryKey(CryptoError):
    """A recovery key that is malformed or does not open the account's backup."""

    code, status = ErrorCode.UNAUTHORIZED, 401
    kind = "invalid_recovery_key"


class VerificationFailed(CryptoError):
    """A safety number, QR payload or SAS exchange that does not match."""

    code, status = ErrorCode.BAD_SIGNATURE, 400
    kind = "verification_failed"
