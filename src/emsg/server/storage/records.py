"""Domain records that repositories return: plain data, never database rows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from emsg.proto.wire import ContactState, StrangerPolicy


@dataclass(frozen=True, slots=True)
class Account:
    address: str
    password_hash: str
    policy: StrangerPolicy
    identity_key: str | None
    device_list: dict[str, Any] | None
    device_list_version: int


@dataclass(frozen=True, slots=True)
class Device:
    device_id: str
    address: str
    name: str
    revoked: bool
    device_keys: dict[str, Any] | None
    created_at: int = 0


@dataclass(frozen=True, slots=True)
class TokenInfo:
    device_id: str
    address: str
    expires_at: int


@dataclass(frozen=True, slots=True)
class ContactRow:
    owner: str
    peer: str
    state: ContactState
    message: str
    identity_key: str | None
    since: int


@dataclass(frozen=True, slots=True)
class QueuedEvent:
    """An event as stored: its payload stays JSON text, copied to the wire unparsed."""

    pos: int
    kind: str
    payload_json: str


@dataclass(frozen=True, slots=True)
class NewEvent:
    device_id: str
    kind: str
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class HeldEnvelope:
    id: int
    recipient: str
    sender: str
    device_id: str
    payload: dict[str, Any]
    created_at: int


@dataclass(frozen=True, slots=True)
class HeldSummary:
    sender: str
    count: int
    first_at: int


@dataclass(frozen=True, slots=True)
class StoredTxn:
    body_hash: str
    response: dict[str, Any]
