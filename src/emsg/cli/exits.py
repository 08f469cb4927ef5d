"""Exit codes of the `emsg` command, and the one table that maps errors onto them.

Scripts branch on these numbers, so they are part of the CLI's contract: add new
ones, never renumber. `docs/cli.md` and the `--help` epilog list the same table.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Final

from emsg.proto.errors import EmsgError, ErrorCode


class Exit(IntEnum):
    OK = 0
    ERROR = 1
    USAGE = 2
    AUTH = 3
    NOT_FOUND = 4
    REFUSED = 5
    NETWORK = 6
    NO_PROFILE = 7
    CONFLICT = 8
    INTERRUPTED = 130


MEANING: Final[dict[Exit, str]] = {
    Exit.OK: "success (a send: the server has durably accepted the message)",
    Exit.ERROR: "any other error, including a server error",
    Exit.USAGE: "bad usage: unknown option, missing or malformed argument or address",
    Exit.AUTH: "authentication: wrong password or passphrase, expired or revoked session",
    Exit.NOT_FOUND: "not found: no such account, device or contact request",
    Exit.REFUSED: "refused: the recipient's policy or block list, or forbidden",
    Exit.NETWORK: "network: the homeserver cannot be reached, or did not confirm a send",
    Exit.NO_PROFILE: "no profile in the home folder: register or log in first",
    Exit.CONFLICT: "conflict: address taken, already friends, profile exists, key changed",
    Exit.INTERRUPTED: "interrupted by Ctrl-C (SIGTERM stops `listen` with 0)",
}

_BY_CODE: Final[dict[ErrorCode, Exit]] = {
    ErrorCode.INVALID_ADDRESS: Exit.USAGE,
    ErrorCode.INVALID_IDENTIFIER: Exit.USAGE,
    ErrorCode.RESERVED_ADDRESS: Exit.USAGE,
    ErrorCode.WRONG_DOMAIN: Exit.USAGE,
    ErrorCode.UNAUTHORIZED: Exit.AUTH,
    ErrorCode.TOKEN_EXPIRED: Exit.AUTH,
    ErrorCode.NOT_FOUND: Exit.NOT_FOUND,
    ErrorCode.UNKNOWN_RECIPIENT: Exit.NOT_FOUND,
    ErrorCode.UNKNOWN_DEVICE: Exit.NOT_FOUND,
    ErrorCode.NO_REQUEST: Exit.NOT_FOUND,
    ErrorCode.KEYS_EXHAUSTED: Exit.NOT_FOUND,
    ErrorCode.FORBIDDEN: Exit.REFUSED,
    ErrorCode.RECIPIENT_REFUSES: Exit.REFUSED,
    ErrorCode.REMOTE_UNSUPPORTED: Exit.REFUSED,
    ErrorCode.ADDRESS_TAKEN: Exit.CONFLICT,
    ErrorCode.ALREADY_FRIENDS: Exit.CONFLICT,
    ErrorCode.TXN_CONFLICT: Exit.CONFLICT,
    ErrorCode.IDENTITY_KEY_CHANGED: Exit.CONFLICT,
}

# The client library's own errors (profile, passphrase, crypto) are EmsgError subclasses
# too; their `kind` names them exactly, where `code` is only the closest wire code.
_BY_KIND: Final[dict[str, Exit]] = {
    "no_profile": Exit.NO_PROFILE,
    "wrong_passphrase": Exit.AUTH,
    "not_logged_in": Exit.AUTH,
    "profile_exists": Exit.CONFLICT,
    "device_not_approved": Exit.REFUSED,
    "untrusted_device": Exit.REFUSED,
    "verification_failed": Exit.REFUSED,
    "invalid_approval_code": Exit.USAGE,
    "invalid_input": Exit.USAGE,
    "invalid_recovery_key": Exit.AUTH,
    "not_confirmed": Exit.NETWORK,
}


def error_name(error: EmsgError) -> str:
    """The most precise stable name of an error: the client's `kind`, else the wire code."""
    kind = getattr(error, "kind", None)
    return kind if isinstance(kind, str) and kind else error.code.value


def exit_for(error: EmsgError) -> Exit:
    kind = error_name(error)
    if kind in _BY_KIND:
        return _BY_KIND[kind]
    return _BY_CODE.get(error.code, Exit.ERROR)


def epilog() -> str:
    """The exit-code table for `emsg --help` (rich markup)."""
    rows = "\n".join(f"[bold]{int(code):>3}[/]  {text}" for code, text in MEANING.items())
    return f"[bold]Exit codes[/]\n\n{rows}"
