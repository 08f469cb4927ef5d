"""Wire models of the client API, shared by server and client.

These pydantic models are the request and response bodies of `/_emsg/v1/` exactly
as `docs/protocol.md` specifies them. Fields that carry identifiers are plain strings
here (the wire form); they are parsed into value types at the edge that consumes them.
"""

from __future__ import annotations

import base64
import hashlib
from enum import StrEnum
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from emsg.proto.errors import EmsgError, describe_invalid

API_PREFIX: Final = "/_emsg/v1"

MAX_CIPHERTEXT: Final = 64 * 1024  # base64 characters of one envelope's ciphertext
MAX_ENVELOPES_PER_SEND: Final = 64
MAX_ONE_TIME_KEYS_PER_UPLOAD: Final = 100
MAX_CONTACT_MESSAGE: Final = 500

Key = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9+/]{43}$")]
Signature = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9+/]{86}$")]
AddressText = Annotated[str, StringConstraints(max_length=320)]
DeviceIdText = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
KeyIdText = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
Password = Annotated[str, StringConstraints(min_length=8, max_length=1024)]


# A validation error never repeats the value it refused: it may be a password, a
# token or a decrypted message. Pydantic takes this from the outermost type being
# validated, so an adapter over a union of models needs it as well (`QUIET`).
QUIET: Final = ConfigDict(hide_input_in_errors=True)


def why_refused(exc: EmsgError | ValidationError) -> str:
    """One line on why a value was refused, without the value."""
    if isinstance(exc, EmsgError):
        return exc.message
    return describe_invalid(exc.errors())


class Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, **QUIET)


class ErrorDetail(Wire):
    code: str
    message: str


class ErrorBody(Wire):
    """Every error reply: `{"error": {"code": ..., "message": ...}}`."""

    error: ErrorDetail


# --- accounts and sessions -------------------------------------------------------


class RegisterRequest(Wire):
    address: AddressText
    password: Password
    device_name: Annotated[str, StringConstraints(max_length=100)] = ""


class LoginRequest(RegisterRequest):
    device_id: DeviceIdText | None = Field(
        default=None,
        description="log this existing device of the account in again (its token expired)"
        " instead of making a new one",
    )


class Session(Wire):
    """A bearer token bound to one device of the account (new, unless the login named one)."""

    address: str
    device_id: str
    token: str
    expires_at: int = Field(description="Unix time in milliseconds")


class WhoAmI(Wire):
    address: str
    device_id: str


class Ok(Wire):
    ok: Literal[True] = True


# --- keys -------------------------------------------------------------------------


class DeviceKeys(Wire):
    """A device's long-term keys, self-signed by its Ed25519 key (purpose DEVICE_KEYS)."""

    address: AddressText
    device_id: DeviceIdText
    curve25519: Key
    ed25519: Key
    signature: Signature


class OneTimeKey(Wire):
    """A Curve25519 one-time (or fallback) key signed by the device (purpose ONE_TIME_KEY)."""

    key_id: KeyIdText
    key: Key
    fallback: bool = False
    signature: Signature


class KeysUpload(Wire):
    device_keys: DeviceKeys | None = None
    one_time_keys: Annotated[list[OneTimeKey], Field(max_length=MAX_ONE_TIME_KEYS_PER_UPLOAD)] = []
    fallback_key: OneTimeKey | None = None


class KeyCounts(Wire):
    one_time_keys: int
    has_fallback_key: bool


class ListedDevice(Wire):
    device_id: DeviceIdText
    curve25519: Key
    ed25519: Key


class DeviceList(Wire):
    """The account's devices, signed by the account identity key (purpose DEVICE_LIST)."""

    address: AddressText
    identity_key: Key
    version: Annotated[int, Field(ge=1, le=2**53 - 1)]
    devices: Annotated[list[ListedDevice], Field(max_length=100)]
    signature: Signature


class KeysClaimRequest(Wire):
    address: AddressText
    device_ids: Annotated[list[DeviceIdText], Field(max_length=100)] | None = None


class ClaimedDevice(Wire):
    device_keys: DeviceKeys
    one_time_key: OneTimeKey | None


class KeysClaimResult(Wire):
    address: str
    devices: list[ClaimedDevice]


# --- contacts and policy ----------------------------------------------------------


class StrangerPolicy(StrEnum):
    OPEN = "open"
    REQUESTS = "requests"
    CONTACTS_ONLY = "contacts-only"


class ContactState(StrEnum):
    FRIEND = "friend"
    OUTGOING = "outgoing"
    INCOMING = "incoming"


class ContactRequestBody(Wire):
    to: AddressText
    message: Annotated[str, StringConstraints(max_length=MAX_CONTACT_MESSAGE)] = ""
    identity_key: Key


class Contact(Wire):
    address: str
    state: ContactState
    message: str = ""
    identity_key: str | None = None
    since: int


class MessageRequest(Wire):
    """A stranger whose messages are held until the user accepts them."""

    address: str
    held_messages: int
    first_at: int


class ContactsView(Wire):
    contacts: list[Contact]
    blocked: list[str]
    message_requests: list[MessageRequest]


class PolicyBody(Wire):
    strangers: StrangerPolicy


# --- messages ---------------------------------------------------------------------


class Ciphertext(Wire):
    """An Olm message: type 0 is a pre-key message, 1 a normal one."""

    type: Literal[0, 1]
    body: Annotated[str, StringConstraints(min_length=1, max_length=MAX_CIPHERTEXT)]
    sender_key: Key


class OutgoingEnvelope(Wire):
    to: AddressText
    device_id: DeviceIdText
    ciphertext: Ciphertext


class SendRequest(Wire):
    envelopes: Annotated[
        list[OutgoingEnvelope], Field(min_length=1, max_length=MAX_ENVELOPES_PER_SEND)
    ]


class Disposition(StrEnum):
    QUEUED = "queued"
    HELD = "held"


class SentEnvelope(Wire):
    id: str
    to: str
    device_id: str
    disposition: Disposition


class SendResult(Wire):
    txn_id: str
    envelopes: list[SentEnvelope]
    accepted_at: int


def envelope_id(sender: str, sender_device: str, txn_id: str, index: int) -> str:
    """The id of the `index`th envelope of a send (protocol.md §7).

    Derived rather than random, so the sending client knows it before the reply
    and can keep it with the message it sent in the same commit. The sender's
    address and device make it unique across senders; the transaction id, which
    a device never reuses for another body, across one device's sends.
    """
    material = f"emsg.envelope.v1\x00{sender}\x00{sender_device}\x00{txn_id}\x00{index}"
    return base64.urlsafe_b64encode(hashlib.sha256(material.encode()).digest()[:12]).decode()


class Envelope(Wire):
    """What a device receives: the server sees only this, never the content."""

    id: str
    sender: str
    sender_device: str
    recipient: str
    device_id: str
    ciphertext: Ciphertext
    sent_at: int


class EventKind(StrEnum):
    ENVELOPE = "envelope"
    CONTACT_REQUEST = "contact_request"
    CONTACT_ACCEPTED = "contact_accepted"
    CONTACT_DECLINED = "contact_declined"
    BOUNCE = "bounce"


class BouncedEnvelope(Wire):
    id: str
    to: str
    device_id: str


class Bounce(Wire):
    """Envelopes (or a contact action) that could not be delivered to another domain:
    its server refused them (`reason` is the error code) or stayed unreachable past
    the retry window (`reason` is `remote_unavailable`)."""

    destination: str
    reason: str
    message: str
    envelopes: list[BouncedEnvelope] = []
    contact: str | None = Field(default=None, description="the address of a bounced contact action")


class Event(Wire):
    pos: int
    kind: EventKind
    envelope: Envelope | None = None
    contact: Contact | None = None
    bounce: Bounce | None = None


class SyncResult(Wire):
    events: list[Event]
    next: int = Field(description="Pass as `since` next time; it acknowledges every event up to it")


# --- the WebSocket stream ---------------------------------------------------------


class AuthFrame(Wire):
    type: Literal["auth"]
    token: Annotated[str, StringConstraints(max_length=200)]
    since: Annotated[int, Field(ge=0, le=2**53 - 1)] = 0


class AckFrame(Wire):
    type: Literal["ack"]
    pos: Annotated[int, Field(ge=0, le=2**53 - 1)]


class SendFrame(Wire):
    type: Literal["send"]
    txn_id: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._~-]{1,128}$")]
    envelopes: Annotated[
        list[OutgoingEnvelope], Field(min_length=1, max_length=MAX_ENVELOPES_PER_SEND)
    ]


class PingFrame(Wire):
    type: Literal["ping"]


ClientFrame = Annotated[AuthFrame | AckFrame | SendFrame | PingFrame, Field(discriminator="type")]


class ReadyFrame(Wire):
    type: Literal["ready"] = "ready"
    address: str
    device_id: str


class EventFrame(Wire):
    type: Literal["event"] = "event"
    event: Event


class SentFrame(Wire):
    type: Literal["sent"] = "sent"
    result: SendResult


class ErrorFrame(Wire):
    type: Literal["error"] = "error"
    txn_id: str | None = None
    error: ErrorDetail


class PongFrame(Wire):
    type: Literal["pong"] = "pong"


ServerFrame = Annotated[
    ReadyFrame | EventFrame | SentFrame | ErrorFrame | PongFrame, Field(discriminator="type")
]


def model_dump(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json", exclude_none=True)
