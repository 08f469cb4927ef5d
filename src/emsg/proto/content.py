"""The plaintext inside an Olm message: what only the two ends ever see.

The recipient accepts a decrypted payload only if `from`/`from_device` name the
envelope's authenticated sender and `to` names itself, so a ciphertext cannot be
replayed to someone else or passed off as another sender's.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Final, Literal

from pydantic import Field, StringConstraints

from emsg.proto.wire import Wire

MAX_BODY: Final = 16 * 1024


class ContentType(StrEnum):
    TEXT = "text"


class Content(Wire):
    v: Literal[1] = 1
    type: ContentType = ContentType.TEXT
    id: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{8,64}$")]
    from_: Annotated[str, Field(alias="from")]
    from_device: str
    to: str
    body: Annotated[str, StringConstraints(max_length=MAX_BODY)]
    sent_at: int
    reply_to: str | None = None
    edit_of: str | None = None
