"""One error tree with stable codes.

Raise anywhere; the server turns an `EmsgError` into `{"error": {"code", "message"}}`
with `status` in exactly one handler, and the client library turns such a reply back
into the same class with `error_from_wire`, so both sides speak of the same errors.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Any, ClassVar, Final


class ErrorCode(StrEnum):
    BAD_JSON = "bad_json"
    INVALID_REQUEST = "invalid_request"
    INVALID_ADDRESS = "invalid_address"
    INVALID_IDENTIFIER = "invalid_identifier"
    RESERVED_ADDRESS = "reserved_address"
    ADDRESS_TAKEN = "address_taken"
    WRONG_DOMAIN = "wrong_domain"
    UNAUTHORIZED = "unauthorized"
    TOKEN_EXPIRED = "token_expired"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    UNKNOWN_RECIPIENT = "unknown_recipient"
    UNKNOWN_DEVICE = "unknown_device"
    RECIPIENT_REFUSES = "recipient_refuses"
    NO_REQUEST = "no_request"
    ALREADY_FRIENDS = "already_friends"
    TXN_CONFLICT = "txn_conflict"
    BAD_SIGNATURE = "bad_signature"
    IDENTITY_KEY_CHANGED = "identity_key_changed"
    KEYS_EXHAUSTED = "keys_exhausted"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    RATE_LIMITED = "rate_limited"
    REMOTE_UNSUPPORTED = "remote_unsupported"
    REMOTE_UNAVAILABLE = "remote_unavailable"
    PROTOCOL_VIOLATION = "protocol_violation"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    INTERNAL = "internal"


class EmsgError(Exception):
    code: ClassVar[ErrorCode] = ErrorCode.INTERNAL
    status: ClassVar[int] = 500

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.default_message())
        self.message = message or self.default_message()

    @classmethod
    def default_message(cls) -> str:
        return cls.code.value.replace("_", " ")

    def to_wire(self) -> dict[str, dict[str, str]]:
        return {"error": {"code": self.code.value, "message": self.message}}


class BadJson(EmsgError):
    code, status = ErrorCode.BAD_JSON, 400


class InvalidRequest(EmsgError):
    code, status = ErrorCode.INVALID_REQUEST, 400


class InvalidAddress(EmsgError):
    code, status = ErrorCode.INVALID_ADDRESS, 400

    def __init__(self, raw: str, why: str = "not a valid address") -> None:
        super().__init__(f"{why}: {raw[:80]!r}")


class InvalidIdentifier(EmsgError):
    code, status = ErrorCode.INVALID_IDENTIFIER, 400


class ReservedAddress(EmsgError):
    code, status = ErrorCode.RESERVED_ADDRESS, 400


class AddressTaken(EmsgError):
    code, status = ErrorCode.ADDRESS_TAKEN, 409


class WrongDomain(EmsgError):
    code, status = ErrorCode.WRONG_DOMAIN, 400


class Unauthorized(EmsgError):
    code, status = ErrorCode.UNAUTHORIZED, 401


class TokenExpired(EmsgError):
    code, status = ErrorCode.TOKEN_EXPIRED, 401


class Forbidden(EmsgError):
    code, status = ErrorCode.FORBIDDEN, 403


class NotFound(EmsgError):
    code, status = ErrorCode.NOT_FOUND, 404


class UnknownRecipient(EmsgError):
    code, status = ErrorCode.UNKNOWN_RECIPIENT, 404


class UnknownDevice(EmsgError):
    code, status = ErrorCode.UNKNOWN_DEVICE, 404


class RecipientRefuses(EmsgError):
    """The recipient's policy or block list refuses this sender (the two look alike)."""

    code, status = ErrorCode.RECIPIENT_REFUSES, 403


class NoRequest(EmsgError):
    code, status = ErrorCode.NO_REQUEST, 404


class AlreadyFriends(EmsgError):
    code, status = ErrorCode.ALREADY_FRIENDS, 409


class TxnConflict(EmsgError):
    code, status = ErrorCode.TXN_CONFLICT, 409


class BadSignature(EmsgError):
    code, status = ErrorCode.BAD_SIGNATURE, 400


class IdentityKeyChanged(EmsgError):
    code, status = ErrorCode.IDENTITY_KEY_CHANGED, 409


class KeysExhausted(EmsgError):
    code, status = ErrorCode.KEYS_EXHAUSTED, 404


class PayloadTooLarge(EmsgError):
    code, status = ErrorCode.PAYLOAD_TOO_LARGE, 413


class RateLimited(EmsgError):
    code, status = ErrorCode.RATE_LIMITED, 429

    def __init__(self, retry_after: float, message: str | None = None) -> None:
        super().__init__(message or f"too many requests; retry after {retry_after:.1f}s")
        self.retry_after = retry_after


class RemoteUnsupported(EmsgError):
    code, status = ErrorCode.REMOTE_UNSUPPORTED, 400


class RemoteUnavailable(EmsgError):
    """The other domain's server could not be found, reached, or trusted."""

    code, status = ErrorCode.REMOTE_UNAVAILABLE, 502


class ProtocolViolation(EmsgError):
    code, status = ErrorCode.PROTOCOL_VIOLATION, 400


class UnsupportedMediaType(EmsgError):
    code, status = ErrorCode.UNSUPPORTED_MEDIA_TYPE, 415


class MethodNotAllowed(EmsgError):
    code, status = ErrorCode.METHOD_NOT_ALLOWED, 405


class InternalError(EmsgError):
    code, status = ErrorCode.INTERNAL, 500


_BY_CODE: Final[dict[ErrorCode, type[EmsgError]]] = {
    cls.code: cls
    for cls in (
        BadJson, InvalidRequest, InvalidIdentifier, ReservedAddress, AddressTaken,
        WrongDomain, Unauthorized, TokenExpired, Forbidden, NotFound, UnknownRecipient,
        UnknownDevice, RecipientRefuses, NoRequest, AlreadyFriends, TxnConflict,
        BadSignature, IdentityKeyChanged, KeysExhausted, PayloadTooLarge,
        RemoteUnsupported, RemoteUnavailable, ProtocolViolation, UnsupportedMediaType,
        MethodNotAllowed, InternalError,
    )
}  # fmt: skip


def describe_invalid(
    errors: Iterable[Mapping[str, Any]], *, limit: int = 3, under: str | None = None
) -> str:
    """What was wrong, from pydantic's `errors()`: where, and which rule was broken.

    Never the value itself: it may be a password, a token or a private message.
    `under` is a leading location to leave out (FastAPI puts a request's body under
    "body").
    """
    parts = []
    for err in list(errors)[:limit]:
        loc = tuple(err.get("loc", ()))
        if under is not None and loc[:1] == (under,):
            loc = loc[1:]
        where = ".".join(str(p) for p in loc)
        what = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{where or 'value'}: {what}")
    return "; ".join(parts)[:300] or "invalid value"


def error_from_wire(status: int, body: object, retry_after: float | None = None) -> EmsgError:
    """Rebuild the error a server sent, so callers can catch it by class."""
    code, message = ErrorCode.INTERNAL.value, f"HTTP {status}"
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        code = str(body["error"].get("code", code))
        message = str(body["error"].get("message", message))
    try:
        known = ErrorCode(code)
    except ValueError:
        known = ErrorCode.INTERNAL
    if known is ErrorCode.RATE_LIMITED:
        return RateLimited(retry_after or 1.0, message)
    if known is ErrorCode.INVALID_ADDRESS:
        err = InvalidAddress.__new__(InvalidAddress)
        EmsgError.__init__(err, message)
        return err
    return _BY_CODE.get(known, InternalError)(message)
