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

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "from": self.sender,
            "to": self.recipient,
            "body": self.body,
            "sent_at": self.sent_at,
            "received_at": self.received_at,
            "direction": self.direction,
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

    def to_json(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "state": self.state,
            "message": self.message,
            "identity_key": self.identity_key,
            "verified": self.verified,
            "since": self.since,
        }


@dataclass(frozen=True, slots=True)
class ClientEvent:
    kind: str  # message | contact_request | contact_accepted | contact_declined
    message: Message | None = None
    contact: ContactInfo | None = None
