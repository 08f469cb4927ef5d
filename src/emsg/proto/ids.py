"""Identifiers are value types, parsed once at the edge.

Everything inside EMSG takes `Address`, `Domain`, `DeviceId` or `TxnId`, never a raw
string, so a malformed or look-alike identifier is refused exactly once, here.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Final, Self

import idna

from emsg.proto.errors import InvalidAddress, InvalidIdentifier

LOCAL: Final = re.compile(r"[a-z0-9](?:[a-z0-9._-]{0,62}[a-z0-9])?")
_LABEL: Final = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_DEVICE_ID: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
_TXN_ID: Final = re.compile(r"[A-Za-z0-9._~-]{1,128}")

# Names that would let someone impersonate the operator or a role mailbox.
RESERVED_LOCALS: Final = frozenset(
    {
        "abuse", "admin", "administrator", "emsg", "help", "hostmaster", "info",
        "mailer-daemon", "moderator", "noc", "noreply", "no-reply", "operator",
        "postmaster", "root", "security", "server", "staff", "support", "system",
        "webmaster",
    }
)  # fmt: skip


def _script(char: str) -> str | None:
    if char.isascii() and not char.isalpha():
        return None  # digits, '-' and '.' belong to every script
    name = unicodedata.name(char, "")
    return name.split(" ", 1)[0] if name else "UNKNOWN"


def _mixes_scripts(label: str) -> bool:
    """True for a label like `pаypal` whose Cyrillic `а` poses as a Latin `a`."""
    return len({s for s in map(_script, label) if s is not None}) > 1


@dataclass(frozen=True, slots=True, order=True)
class Domain:
    """A lower-case ASCII (IDNA A-label) host name, with an optional port."""

    host: str
    port: int | None = None

    @classmethod
    def parse(cls, raw: str) -> Self:
        text = raw.strip()
        host, port = text, None
        if text.count(":") == 1:
            host, _, port_text = text.partition(":")
            if not port_text.isascii() or not port_text.isdigit() or len(port_text) > 5:
                raise InvalidAddress(raw, "the port must be a number")
            port = int(port_text)
            if not 0 < port < 65536:
                raise InvalidAddress(raw, "the port must be between 1 and 65535")
        host = host.rstrip(".") if host.endswith(".") and host != "." else host
        try:
            # UTS 46 maps case and compatibility forms; IDNA 2008 then refuses the
            # code points (and mixed bidi labels) that make look-alike domains.
            ascii_host = idna.encode(host, uts46=True, std3_rules=True).decode("ascii")
        except (idna.IDNAError, UnicodeError, ValueError) as exc:
            raise InvalidAddress(raw, "the domain is not a valid host name") from exc
        if any(_mixes_scripts(label) for label in idna.decode(ascii_host).split(".")):
            raise InvalidAddress(raw, "a domain label may not mix scripts (look-alike)")
        labels = ascii_host.split(".")
        if len(ascii_host) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
            raise InvalidAddress(raw, "the domain is not a valid host name")
        return cls(ascii_host, port)

    def __str__(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True, order=True)
class Address:
    """`local#domain`: local part case-folded to `a-z 0-9 . _ -`, domain as IDNA."""

    local: str
    domain: Domain

    @classmethod
    def parse(cls, raw: str) -> Self:
        if not isinstance(raw, str) or len(raw) > 320:
            raise InvalidAddress(str(raw)[:80], "an address is at most 320 characters")
        local, sep, host = raw.strip().partition("#")
        if not sep or "#" in host:
            raise InvalidAddress(raw, "an address is local#domain with exactly one '#'")
        # ASCII first: str.lower() folds U+212A KELVIN SIGN to an ASCII "k".
        folded = local.lower() if local.isascii() else ""
        if not LOCAL.fullmatch(folded) or ".." in folded:
            raise InvalidAddress(
                raw, "the local part is 1-64 of a-z 0-9 . _ - and starts and ends alphanumeric"
            )
        return cls(folded, Domain.parse(host))

    @property
    def is_reserved(self) -> bool:
        return self.local in RESERVED_LOCALS

    def __str__(self) -> str:
        return f"{self.local}#{self.domain}"


@dataclass(frozen=True, slots=True, order=True)
class DeviceId:
    value: str

    @classmethod
    def parse(cls, raw: str) -> Self:
        if not isinstance(raw, str) or not _DEVICE_ID.fullmatch(raw):
            raise InvalidIdentifier(f"not a device id: {str(raw)[:80]!r}")
        return cls(raw)

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True, order=True)
class TxnId:
    """A client's transaction id: the key that makes a send idempotent."""

    value: str

    @classmethod
    def parse(cls, raw: str) -> Self:
        if not isinstance(raw, str) or not _TXN_ID.fullmatch(raw):
            raise InvalidIdentifier(f"not a transaction id: {str(raw)[:80]!r}")
        return cls(raw)

    def __str__(self) -> str:
        return self.value
