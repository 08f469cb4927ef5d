"""Errors of the client library that never come from a server."""

from __future__ import annotations

from emsg.crypto.errors import (
    CryptoError,
    DecryptionFailed,
    ProfileTampered,
    UntrustedDevice,
    WrongPassphrase,
)
from emsg.proto.errors import ErrorCode, IdentityKeyChanged

__all__ = [
    "ClientError",
    "DecryptionFailed",
    "DeviceNotApproved",
    "IdentityKeyChanged",
    "InvalidInput",
    "NoProfile",
    "NotConfirmed",
    "NotLoggedIn",
    "ProfileExists",
    "ProfileTampered",
    "UntrustedDevice",
    "WrongPassphrase",
]


class ClientError(CryptoError):
    kind = "client_error"


class NoProfile(ClientError):
    code, status = ErrorCode.NOT_FOUND, 404
    kind = "no_profile"

    @classmethod
    def default_message(cls) -> str:
        return "no EMSG profile here; register or log in first"


class ProfileExists(ClientError):
    code, status = ErrorCode.FORBIDDEN, 403
    kind = "profile_exists"

    @classmethod
    def default_message(cls) -> str:
        return "a profile already exists here; open it, or choose another folder"


class DeviceNotApproved(ClientError):
    code, status = ErrorCode.FORBIDDEN, 403
    kind = "device_not_approved"

    @classmethod
    def default_message(cls) -> str:
        return (
            "this device is waiting for approval: on a device that is already approved run"
            " `emsg device approve CODE` with the code `emsg account login` showed here, or"
            " run `emsg account recover` here with the account's recovery key"
        )


class NotLoggedIn(ClientError):
    code, status = ErrorCode.UNAUTHORIZED, 401
    kind = "not_logged_in"

    @classmethod
    def default_message(cls) -> str:
        return "this profile is logged out; log in again"


class InvalidInput(ClientError):
    """A value the caller passed that no request may carry (a message too long, a
    password too short, text that is not valid Unicode); nothing was sent."""

    code, status = ErrorCode.INVALID_REQUEST, 400
    kind = "invalid_input"


class NotConfirmed(ClientError):
    """A send whose outcome is unknown: the server did not answer (the connection
    failed, it was busy or in trouble). The message stays in the history, marked
    pending, and the next send, fetch or listen sends it again under the same
    transaction id, so it is delivered once whether or not this attempt arrived."""

    code, status = ErrorCode.INTERNAL, 503
    kind = "not_confirmed"
