"""What the crypto layer needs from storage, as a Protocol.

Everything that crosses this boundary is already encrypted: account and session
pickles by vodozemac under the profile's pickle key, the identity key sealed by
`SecretBox`. A store therefore never sees a secret in the clear, and a backend
cannot forget to encrypt. Calls are synchronous: the client wraps a whole decrypt
in one store transaction so a crash leaves either all of it or none.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol


class ReplayStore(Protocol):
    def has_replay_hash(self, digest: bytes) -> bool: ...

    def add_replay_hash(self, digest: bytes) -> None: ...


class CryptoStore(ReplayStore, Protocol):
    def load_account(self) -> str | None:
        """The encrypted pickle of this device's Olm account, if one was saved."""
        ...

    def save_account(self, pickle: str) -> None: ...

    def has_session(self, peer_key: str) -> bool:
        """Whether any session with this peer Curve25519 key was saved."""
        ...

    def load_sessions(self, peer_key: str) -> list[tuple[str, str]]:
        """(session id, encrypted pickle) of the sessions with this peer Curve25519 key,
        most recently used first.

        A pickle returned is exactly the string saved (`Olm` recognises its live
        sessions by it).
        """
        ...

    def save_session(self, peer_key: str, session_id: str, pickle: str) -> None:
        """Insert or replace, and make it the most recently used one for `peer_key`."""
        ...

    def defer_to_commit(self, flush: Callable[[], None], discard: Callable[[], None]) -> bool:
        """Inside an open transaction: call `flush` in it just before it commits, or
        `discard` once it has rolled back, and return True. Outside one: return False,
        and the caller writes at once."""
        ...

    def load_identity(self) -> bytes | None:
        """The sealed account identity key (see `identity.seal_identity`)."""
        ...

    def save_identity(self, sealed: bytes) -> None: ...


class MemoryCryptoStore:
    """A CryptoStore in a dict: for tests and as the reference behaviour."""

    def __init__(self) -> None:
        self.account: str | None = None
        self.identity: bytes | None = None
        self.sessions: dict[str, dict[str, str]] = {}
        self.replay: set[bytes] = set()

    def has_replay_hash(self, digest: bytes) -> bool:
        return digest in self.replay

    def add_replay_hash(self, digest: bytes) -> None:
        self.replay.add(digest)

    def load_account(self) -> str | None:
        return self.account

    def save_account(self, pickle: str) -> None:
        self.account = pickle

    def has_session(self, peer_key: str) -> bool:
        return bool(self.sessions.get(peer_key))

    def load_sessions(self, peer_key: str) -> list[tuple[str, str]]:
        # dicts keep insertion order; save_session re-inserts, so newest is last
        return list(reversed(self.sessions.get(peer_key, {}).items()))

    def save_session(self, peer_key: str, session_id: str, pickle: str) -> None:
        bucket = self.sessions.setdefault(peer_key, {})
        bucket.pop(session_id, None)
        bucket[session_id] = pickle

    def defer_to_commit(self, flush: Callable[[], None], discard: Callable[[], None]) -> bool:
        return False  # no transactions: every write is final at once

    def load_identity(self) -> bytes | None:
        return self.identity

    def save_identity(self, sealed: bytes) -> None:
        self.identity = sealed
