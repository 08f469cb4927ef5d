"""The plain values the client library hands to front ends."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Direction = Literal["in", "out"]


@dataclass(frozen=True, slots=True)
class Message:
    id: str
    sender: str
    recipient: str
    body: str
    sent_at: int
    received_at: int | None
    direction: Direction
    # For an outgoing message another domain's server refused or never took: why
    # (an error code such as `recipient_refuses` or `remote_unavailable`).
    bounced: str | None = None
    # An outgoing message whose send the server has not confirmed yet (the reply
    # was lost, or the sending process stopped): the next send, fetch or listen
    # sends it again, under the same transaction id.
    pending: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "from": self.sender,
            "to": self.recipient,
            "body": self.body,
            "sent_at": self.sent_at,
            "received_at": self.received_at,
            "direction": self.direction,
            "bounced": self.bounced,
            "pending": self.pending,
        }

    def peer(self) -> str:
        """The other party of the conversation this message belongs to."""
        return self.recipient if self.direction == "out" else self.sender


@dataclass(frozen=True, slots=True)
class ContactInfo:
    address: str
    state: str  # friend | outgoing | incoming | message_request
    message: str
    identity_key: str | None
    verified: bool
    since: int | None
    key_changed: bool = False  # they show another identity key than the one pinned

    @property
    def verification(self) -> str:
        return "key_changed" if self.key_changed else "verified" if self.verified else "unverified"

    def to_json(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "state": self.state,
            "message": self.message,
            "identity_key": self.identity_key,
            "verified": self.verified,
            "verification": self.verification,
            "since": self.since,
        }


@dataclass(frozen=True, slots=True)
class ClientEvent:
    # message | contact_request | contact_accepted | contact_declined | key_changed
    # | approved (this device) | history (messages imported from another device)
    # | bounce (an outgoing message, or a contact request, that could not be delivered)
    kind: str
    message: Message | None = None
    contact: ContactInfo | None = None
    detail: str = ""


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """A device of this account: `state` is approved (in the signed list), pending or revoked."""

    device_id: str
    state: str
    name: str
    created_at: int | None
    current: bool  # the device this profile is
    ed25519: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "device_id": self.device_id,
            "state": self.state,
            "name": self.name,
            "created_at": self.created_at,
            "current": self.current,
            "ed25519": self.ed25519,
        }
