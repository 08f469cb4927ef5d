"""The replay cache for pre-key messages (protocol.md §9).

vodozemac keeps the fallback key after a session is made on it, so the same
pre-key message would create the same session and decrypt again. We remember
the SHA-256 of every pre-key message that started a session and refuse to start
one again from it. A later pre-key message of a session we have needs no entry:
that session decrypts it once and refuses a repeat (its message key is used up),
and sessions are never deleted.
"""

from __future__ import annotations

import hashlib

from emsg.crypto.errors import ReplayedMessage
from emsg.crypto.store import ReplayStore


def prekey_digest(message: bytes) -> bytes:
    """SHA-256 of the decoded message bytes (not the base64 text, which has variants)."""
    return hashlib.sha256(b"emsg.prekey.v1\x00" + message).digest()


def check_fresh(store: ReplayStore, message: bytes) -> None:
    if store.has_replay_hash(prekey_digest(message)):
        raise ReplayedMessage("this pre-key message was already received once")


def remember(store: ReplayStore, message: bytes) -> None:
    store.add_replay_hash(prekey_digest(message))
