"""Small pieces every service shares: the caller, address rules, event shapes."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from emsg.proto.errors import InvalidAddress, RemoteUnsupported
from emsg.proto.ids import Address, Domain
from emsg.proto.wire import ContactState, EventKind


@dataclass(frozen=True, slots=True)
class Caller:
    """The authenticated device making a request."""

    address: str
    device_id: str


@functools.lru_cache(maxsize=16_384)
def parse_address(raw: str) -> Address:
    """`Address.parse`, memoised (the value is immutable, so sharing it is safe)."""
    # IDNA processing makes a parse cost tens of microseconds, and every send parses
    # each recipient, every federation transaction each sender and recipient.
    # Parsing is a pure function; failures are not cached, so they raise every time.
    return Address.parse(raw)


@functools.lru_cache(maxsize=4_096)
def parse_domain(raw: str) -> Domain:
    """`Domain.parse`, memoised like `parse_address` (every federation request
    names its origin)."""
    return Domain.parse(raw)


@dataclass(frozen=True, slots=True)
class AddressRules:
    """How this server reads addresses: its own domain, and whether ports are allowed."""

    domain: Domain
    allow_port: bool
    federates: bool = False

    def parse(self, raw: str) -> Address:
        address = parse_address(raw)
        if address.domain.port is not None and not self.allow_port:
            raise InvalidAddress(raw, "a port is not allowed in the domain here")
        return address

    def is_remote(self, raw: str) -> bool:
        """True for a valid address on another domain this server federates with."""
        address = self.parse(raw)
        return self.federates and address.domain != self.domain

    def target(self, raw: str) -> str:
        """The canonical text of a recipient: on this server, or on a federated one."""
        address = self.parse(raw)
        if address.domain != self.domain and not self.federates:
            raise RemoteUnsupported(f"{address.domain} is not served here and not federated")
        return str(address)

    def local(self, raw: str) -> str:
        """The canonical text of an address on this server, or `remote_unsupported`."""
        address = self.parse(raw)
        if address.domain != self.domain:
            raise RemoteUnsupported(f"{address.domain} is not served here and not federated yet")
        return str(address)


def contact_payload(
    address: str, state: ContactState, message: str, identity_key: str | None, since: int
) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "address": address,
        "state": state.value,
        "message": message,
        "since": since,
    }
    if identity_key is not None:
        payload["identity_key"] = identity_key
    return payload


_PAYLOAD_KEY = {EventKind.ENVELOPE.value: "envelope", EventKind.BOUNCE.value: "bounce"}


def event_json(pos: int, kind: str, payload_json: str) -> str:
    """The wire form of a queued event, `{"pos", "kind", <payload key>}`, as compact JSON.

    Built by hand around the stored payload (this is the hot path): the bytes are
    those `json.dumps` with `separators=(",", ":")` gives, since the payload was
    stored with that encoder and `kind` is a plain token.
    """
    return f'{{"pos":{pos},"kind":"{kind}","{_PAYLOAD_KEY.get(kind, "contact")}":{payload_json}}}'
