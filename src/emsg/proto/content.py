"""The plaintext inside an Olm message: what only the two ends ever see.

The recipient accepts a decrypted payload only if `from`/`from_device` name the
envelope's authenticated sender and `to` names itself, so a ciphertext cannot be
replayed to someone else or passed off as another sender's.

Every content shares the header `v, type, id, from, from_device, to, sent_at`;
`type` selects the rest. `text` is a message between people. The others are
device-to-device contents that a client acts on and never shows as a message:
`identity_share`, `contacts_share` and `history_share` travel only between devices
of one account,
`sas_*` between the devices of two people verifying each other. A client that
does not know a type drops the content (it never reaches the user), so new types
can be added without breaking older clients.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Final, Literal

from pydantic import Field, StringConstraints, TypeAdapter

from emsg.proto.wire import QUIET, Key, Wire

MAX_BODY: Final = 16 * 1024
MAX_SHARED_MESSAGES: Final = 100  # per history_share; big histories take several
MAX_SHARED_CONTACTS: Final = 200  # per contacts_share

ContentId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{8,64}$")]
B64Text = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9+/]{1,256}$")]


class ContentType(StrEnum):
    TEXT = "text"
    IDENTITY_SHARE = "identity_share"
    HISTORY_SHARE = "history_share"
    CONTACTS_SHARE = "contacts_share"
    SAS_START = "sas_start"
    SAS_KEY = "sas_key"
    SAS_MAC = "sas_mac"


class ContentHeader(Wire):
    v: Literal[1] = 1
    id: ContentId
    from_: Annotated[str, Field(alias="from")]
    from_device: str
    to: str
    sent_at: int


class Content(ContentHeader):
    """A text message between people."""

    type: Literal[ContentType.TEXT] = ContentType.TEXT
    body: Annotated[str, StringConstraints(max_length=MAX_BODY)]
    reply_to: str | None = None
    edit_of: str | None = None


class IdentityShare(ContentHeader):
    """The account identity key, from an approved device to the device it just approved.

    `seed` is the 32-byte Ed25519 private key; `confirm` is the approval code's MAC
    (crypto.approval) over the key and the new device's keys, which proves to the new
    device that the sender was given its code by the user, not made up by a server.
    """

    type: Literal[ContentType.IDENTITY_SHARE] = ContentType.IDENTITY_SHARE
    identity_key: Key
    seed: Key
    confirm: Key


class SharedMessage(Wire):
    id: ContentId
    from_: Annotated[str, Field(alias="from")]
    to: str
    body: Annotated[str, StringConstraints(max_length=MAX_BODY)]
    sent_at: int


class HistoryShare(ContentHeader):
    """Past messages, from an approved device to another device of the same account."""

    type: Literal[ContentType.HISTORY_SHARE] = ContentType.HISTORY_SHARE
    messages: Annotated[list[SharedMessage], Field(max_length=MAX_SHARED_MESSAGES)]


class SharedContact(Wire):
    address: str
    identity_key: Key
    verified: bool = False


class ContactsShare(ContentHeader):
    """The identity keys an approved device pinned (and verified), sent to a device it
    just approved, so the new device does not have to trust its server's word for them."""

    type: Literal[ContentType.CONTACTS_SHARE] = ContentType.CONTACTS_SHARE
    contacts: Annotated[list[SharedContact], Field(max_length=MAX_SHARED_CONTACTS)]


class SasStart(ContentHeader):
    """Interactive verification, step 1 of 3: a flow id and a commitment (SHA-256) to
    this side's SAS public key, so neither side can choose its key after seeing the
    other's."""

    type: Literal[ContentType.SAS_START] = ContentType.SAS_START
    flow: ContentId
    commitment: Key


class SasKey(ContentHeader):
    """Step 2, once the other side's `sas_start` arrived: this side's SAS public key."""

    type: Literal[ContentType.SAS_KEY] = ContentType.SAS_KEY
    flow: ContentId
    key: Key


class SasMac(ContentHeader):
    """Step 3, after the people compared the emoji or numbers: a MAC of the account
    identity key the sender has (its own) under the shared SAS secret."""

    type: Literal[ContentType.SAS_MAC] = ContentType.SAS_MAC
    flow: ContentId
    identity_key: Key
    mac: B64Text


AnyContent = Annotated[
    Content | IdentityShare | HistoryShare | ContactsShare | SasStart | SasKey | SasMac,
    Field(discriminator="type"),
]
ANY_CONTENT: Final = TypeAdapter[AnyContent](AnyContent, config=QUIET)
