"""Small pieces every service shares: the caller, address rules, event shapes."""

from __future__ import annotations

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


@dataclass(frozen=True, slots=True)
class AddressRules:
    """How this server reads addresses: its own domain, and whether ports are allowed."""

    domain: Domain
    allow_port: bool

    def parse(self, raw: str) -> Address:
        address = Address.parse(raw)
        if address.domain.port is not None and not self.allow_port:
            raise InvalidAddress(raw, "a port is not allowed in the domain here")
        return address

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


_PAYLOAD_KEY = {EventKind.ENVELOPE.value: "envelope"}


def event_dict(pos: int, kind: str, payload: dict[str, Any]) -> dict[str, Any]:
    """The wire form of a queued event (built by hand: this is the hot path)."""
    return {"pos": pos, "kind": kind, _PAYLOAD_KEY.get(kind, "contact"): payload}
