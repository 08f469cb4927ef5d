"""The local profile store: one SQLite file (WAL) in the profile folder.

Nothing secret is stored in the clear: vodozemac pickles are encrypted under the
pickle key, the token, identity key and message bodies are sealed with AES-GCM,
and both keys come from the passphrase (argon2id with a per-profile salt). A
verifier derived from the same passphrase makes a wrong one a clear error instead
of garbage. What is not secret but decides whom to trust (pinned identity keys,
verified flags, pending key changes, the newest device list seen) carries an
HMAC tag under a third key, and a message body is sealed with its sender,
recipient, time and direction as associated data: a row changed without the
passphrase is `ProfileTampered` when it is read, never believed (a deleted row
cannot be told from one never written: the client then meets the peer anew).

Writers use `BEGIN IMMEDIATE`, so two processes on one profile take turns instead
of failing half-way; a single write outside a transaction is one statement, atomic
by itself.

Durability: WAL with `synchronous=NORMAL`. A commit is in the WAL file before it
returns, so it survives the process crashing or being killed at any point; only
an operating-system crash or power cut can lose the newest commits (the database
stays consistent either way). `synchronous=FULL` would add an fsync to every
commit: several times the CPU and wall time of the whole message. Checkpoints,
which do fsync, run in a worker thread (`emsg/sqlite_checkpoint.py`), not in a
commit.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final

from emsg.client.errors import NoProfile, ProfileExists
from emsg.client.models import Direction, Message
from emsg.crypto.errors import DecryptionFailed, ProfileTampered
from emsg.crypto.keys import KdfParams, ProfileKeys, RowField, new_salt
from emsg.sqlite_checkpoint import WalCheckpointer

DB_NAME: Final = "emsg.sqlite3"
# 2: rows tagged, message metadata bound to the body (schema 1 is upgraded on open).
SCHEMA_VERSION: Final = 2

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS profile (k TEXT PRIMARY KEY, v BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS secrets (name TEXT PRIMARY KEY, sealed BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS account (id INTEGER PRIMARY KEY CHECK (id = 1), pickle TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (
    peer_key TEXT NOT NULL, session_id TEXT NOT NULL, pickle TEXT NOT NULL,
    used INTEGER NOT NULL, PRIMARY KEY (peer_key, session_id));
CREATE TABLE IF NOT EXISTS replay (digest BLOB PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS contacts (
    address TEXT PRIMARY KEY, state TEXT NOT NULL, identity_key TEXT,
    verified INTEGER NOT NULL DEFAULT 0, message TEXT NOT NULL DEFAULT '', since INTEGER,
    tag BLOB);
CREATE TABLE IF NOT EXISTS messages (
    id TEXT PRIMARY KEY, sender TEXT NOT NULL, recipient TEXT NOT NULL, peer TEXT NOT NULL,
    body BLOB NOT NULL, sent_at INTEGER NOT NULL, received_at INTEGER,
    direction TEXT NOT NULL CHECK (direction IN ('in', 'out')));
CREATE INDEX IF NOT EXISTS messages_by_peer ON messages (peer, sent_at);
CREATE TABLE IF NOT EXISTS seen_envelopes (id TEXT PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sent_envelopes (
    envelope_id TEXT PRIMARY KEY, message_id TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS bounces (
    message_id TEXT PRIMARY KEY, reason TEXT NOT NULL, at INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS key_changes (
    address TEXT PRIMARY KEY, new_key TEXT NOT NULL, seen_at INTEGER NOT NULL, tag BLOB);
CREATE TABLE IF NOT EXISTS outbox (
    txn_id TEXT PRIMARY KEY, request TEXT NOT NULL, message_ids TEXT NOT NULL,
    created_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS device_lists (
    address TEXT NOT NULL, identity_key TEXT NOT NULL, version INTEGER NOT NULL,
    signature TEXT NOT NULL, tag BLOB, PRIMARY KEY (address, identity_key)) WITHOUT ROWID;
"""
_TAGGED: Final = {
    "contacts": ("address", "state", "identity_key", "verified", "message", "since"),
    "key_changes": ("address", "new_key", "seen_at"),
    "device_lists": ("address", "identity_key", "version", "signature"),
}
_CONTACT_FIELDS: Final = ", ".join(_TAGGED["contacts"])


@dataclass(frozen=True, slots=True)
class PinnedContact:
    """A peer as this profile knows it; `state` "stranger" means pinned by first sight."""

    address: str
    state: str
    identity_key: str | None
    verified: bool
    message: str
    since: int | None


def _contact_fields(contact: PinnedContact) -> tuple[RowField, ...]:
    return (
        contact.address,
        contact.state,
        contact.identity_key,
        int(contact.verified),
        contact.message,
        contact.since,
    )


def _message_label(mid: str, sender: str, recipient: str, sent_at: int, direction: str) -> str:
    """The associated data of a message body: whose it is, not only which."""
    fields = [mid, sender, recipient, sent_at, direction]
    return "emsg.message.v2" + json.dumps(fields, separators=(",", ":"), ensure_ascii=False)


# The connection's own checkpoint threshold (16 MiB of WAL): reached only when the
# worker falls far behind, or when many short-lived processes (one `emsg send` each)
# write to a profile and none of them commits often enough to start the worker.
_WAL_BACKSTOP_PAGES: Final = 4_096


def _connect(path: Path) -> sqlite3.Connection:
    # isolation_level=None: we issue BEGIN IMMEDIATE ourselves (see `transaction`).
    conn = sqlite3.connect(path, isolation_level=None, timeout=30.0, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")  # see the module docstring
    conn.execute("PRAGMA foreign_keys=ON")
    # Checkpoints run in a worker (`WalCheckpointer`); this is only the backstop.
    conn.execute(f"PRAGMA wal_autocheckpoint={_WAL_BACKSTOP_PAGES}")
    return conn


class ProfileStore:
    """One profile's SQLite file; also the `CryptoStore` of its device."""

    def __init__(self, conn: sqlite3.Connection, keys: ProfileKeys, path: Path) -> None:
        self._conn = conn
        self.keys = keys
        self.path = path
        self._depth = 0
        self.checkpointer = WalCheckpointer(path)
        self._address: str | None = None  # fixed when the profile is created
        # peer key -> its sessions' pickles, most recently used first. Every message
        # reads them, so they are kept in memory for as long as no other connection
        # (another process on this profile) has committed: `PRAGMA data_version`.
        self._sessions: dict[str, list[tuple[str, str]]] = {}
        self._data_version = -1
        # Sends the server confirmed whose outbox rows are not deleted yet: deleted
        # with the next commit (or at close), so a confirmation costs no commit.
        self._confirmed: set[str] = set()
        # `defer_to_commit`: writes held back until the open transaction ends
        self._before_commit: list[Callable[[], None]] = []
        self._after_rollback: list[Callable[[], None]] = []

    # --- opening -------------------------------------------------------------------

    @staticmethod
    def exists(home: Path) -> bool:
        path = home / DB_NAME
        if not path.exists():
            return False
        conn = sqlite3.connect(path)
        try:
            row = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type='table' AND name='profile'"
            ).fetchone()
            return row is not None and (
                conn.execute("SELECT 1 FROM profile WHERE k='verifier'").fetchone() is not None
            )
        finally:
            conn.close()

    @classmethod
    def create(
        cls,
        home: Path,
        passphrase: str,
        *,
        address: str,
        server_url: str,
        kdf: KdfParams = KdfParams(),
    ) -> ProfileStore:
        if cls.exists(home):
            raise ProfileExists(f"a profile already exists in {home}")
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        salt = new_salt()
        keys = ProfileKeys.derive(passphrase, salt, kdf)
        path = home / DB_NAME
        store = cls(_connect(path), keys, path)
        store._create_schema()
        with store.transaction():
            for k, v in {
                "schema": str(SCHEMA_VERSION).encode(),
                "salt": salt,
                "kdf": json.dumps(
                    {"t": kdf.time_cost, "m": kdf.memory_cost, "p": kdf.parallelism}
                ).encode(),
                "verifier": keys.verifier,
                "address": address.encode(),
                "server_url": server_url.encode(),
            }.items():
                store._conn.execute("INSERT OR REPLACE INTO profile VALUES (?, ?)", (k, v))
        path.chmod(0o600)
        return store

    @classmethod
    def open(cls, home: Path, passphrase: str) -> ProfileStore:
        if not cls.exists(home):
            raise NoProfile(f"no EMSG profile in {home}; register or log in first")
        path = home / DB_NAME
        conn = _connect(path)
        try:
            rows = dict(conn.execute("SELECT k, v FROM profile").fetchall())
            params = json.loads(rows["kdf"])
            kdf = KdfParams(time_cost=params["t"], memory_cost=params["m"], parallelism=params["p"])
            keys = ProfileKeys.derive(passphrase, bytes(rows["salt"]), kdf)
            untagged = keys.check(bytes(rows["verifier"]))
        except BaseException:
            conn.close()
            raise
        store = cls(conn, keys, path)
        try:
            store._create_schema()
            if untagged:
                store._tag_rows()
        except BaseException:
            store.close()
            raise
        return store

    def _create_schema(self) -> None:
        with self.transaction():
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    self._conn.execute(statement)

    def _tag_rows(self) -> None:
        """Upgrade a schema-1 profile: tag its rows as they stand, seal each message
        body again with its metadata, and store the verifier that says so."""
        with self.transaction():
            if self._get("verifier") == self.keys.verifier:
                return  # another process on this profile upgraded it while we waited
            for table, fields in _TAGGED.items():
                columns = {r[1] for r in self._conn.execute(f"PRAGMA table_info({table})")}
                if "tag" not in columns:
                    self._conn.execute(f"ALTER TABLE {table} ADD COLUMN tag BLOB")
                # Every field, the primary key among them, names the row (device_lists
                # has no rowid); IS, since some fields may be NULL.
                where = " AND ".join(f"{f} IS ?" for f in fields)
                rows = self._conn.execute(f"SELECT {', '.join(fields)} FROM {table}").fetchall()
                for values in rows:
                    tag = self.keys.rows.tag(table, tuple(values))
                    self._conn.execute(f"UPDATE {table} SET tag = ? WHERE {where}", (tag, *values))
            messages = self._conn.execute(
                "SELECT id, sender, recipient, body, sent_at, direction FROM messages"
            )
            for mid, sender, recipient, body, sent_at, direction in messages.fetchall():
                try:
                    text = self.keys.box.open(bytes(body), f"emsg.message.{mid}")
                except DecryptionFailed:
                    raise ProfileTampered.row("messages", mid) from None
                label = _message_label(mid, sender, recipient, sent_at, direction)
                sealed = self.keys.box.seal(text, label)
                self._conn.execute("UPDATE messages SET body = ? WHERE id = ?", (sealed, mid))
            self._set("verifier", self.keys.verifier)
            self._set("schema", str(SCHEMA_VERSION).encode())

    def close(self) -> None:
        self.drop_sends(list(self._confirmed))
        self.checkpointer.close()
        self._conn.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One atomic unit; nested calls join the outer transaction."""
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        self._conn.execute("BEGIN IMMEDIATE")
        self._depth = 1
        self._check_data_version()  # under the write lock: nobody else commits now
        try:
            yield
            while self._before_commit:
                self._before_commit.pop(0)()
            self.drop_sends(list(self._confirmed))
            self._conn.execute("COMMIT")
            self._confirmed.clear()
            self.checkpointer.committed()
        except BaseException:
            if self._conn.in_transaction:  # a failed COMMIT may have ended it already
                self._conn.execute("ROLLBACK")
            self._sessions.clear()
            for discard in self._after_rollback:
                discard()
            raise
        finally:
            self._depth = 0
            self._before_commit.clear()
            self._after_rollback.clear()

    def defer_to_commit(self, flush: Callable[[], None], discard: Callable[[], None]) -> bool:
        if not self._depth:
            return False
        self._before_commit.append(flush)
        self._after_rollback.append(discard)
        return True

    # --- profile values ------------------------------------------------------------

    def _get(self, k: str) -> bytes | None:
        row = self._conn.execute("SELECT v FROM profile WHERE k = ?", (k,)).fetchone()
        return None if row is None else bytes(row[0])

    def _set(self, k: str, v: bytes | None) -> None:
        if v is None:
            self._conn.execute("DELETE FROM profile WHERE k = ?", (k,))
        else:
            self._conn.execute("INSERT OR REPLACE INTO profile VALUES (?, ?)", (k, v))

    def _text(self, k: str) -> str | None:
        raw = self._get(k)
        return None if raw is None else raw.decode()

    @property
    def address(self) -> str:
        if self._address is None:
            self._address = self._text("address") or ""
        return self._address

    @property
    def server_url(self) -> str:
        return self._text("server_url") or ""

    def set_server_url(self, url: str) -> None:
        self._set("server_url", url.encode())

    @property
    def device_id(self) -> str | None:
        return self._text("device_id")

    def set_device_id(self, device_id: str | None) -> None:
        self._set("device_id", None if device_id is None else device_id.encode())

    def flag(self, name: str) -> bool:
        return self._get(f"flag.{name}") == b"1"

    def set_flag(self, name: str, value: bool) -> None:
        self._set(f"flag.{name}", b"1" if value else None)

    @property
    def cursor(self) -> int:
        raw = self._get("cursor")
        return int(raw) if raw else 0

    def set_cursor(self, pos: int) -> None:
        self._set("cursor", str(pos).encode())

    def advance_cursor(self, pos: int) -> None:
        """Move the cursor up to `pos`; never back (one statement, no read first)."""
        self._conn.execute(
            "INSERT INTO profile VALUES ('cursor', ?) ON CONFLICT (k) DO UPDATE SET v = excluded.v"
            " WHERE CAST(profile.v AS INTEGER) < CAST(excluded.v AS INTEGER)",
            (str(pos).encode(),),
        )

    # --- sealed secrets ------------------------------------------------------------

    def put_secret(self, name: str, value: bytes | None) -> None:
        if value is None:
            self._conn.execute("DELETE FROM secrets WHERE name = ?", (name,))
            return
        sealed = self.keys.box.seal(value, f"emsg.secret.{name}")
        self._conn.execute("INSERT OR REPLACE INTO secrets VALUES (?, ?)", (name, sealed))

    def get_secret(self, name: str) -> bytes | None:
        row = self._conn.execute("SELECT sealed FROM secrets WHERE name = ?", (name,)).fetchone()
        return None if row is None else self.keys.box.open(bytes(row[0]), f"emsg.secret.{name}")

    @property
    def token(self) -> str | None:
        raw = self.get_secret("token")
        return None if raw is None else raw.decode()

    def set_token(self, token: str | None) -> None:
        self.put_secret("token", None if token is None else token.encode())

    @property
    def login_key(self) -> str | None:
        """The account's login key (protocol.md §4): what lets a device whose token
        expired log in again as itself, with no password at hand. Sealed, it opens
        nothing the passphrase that seals it does not open already."""
        raw = self.get_secret("login_key")
        return None if raw is None else raw.decode()

    def set_login_key(self, login_key: str) -> None:
        self.put_secret("login_key", login_key.encode())

    # --- CryptoStore ---------------------------------------------------------------

    def load_account(self) -> str | None:
        row = self._conn.execute("SELECT pickle FROM account WHERE id = 1").fetchone()
        return None if row is None else str(row[0])

    def save_account(self, pickle: str) -> None:
        self._conn.execute("INSERT OR REPLACE INTO account VALUES (1, ?)", (pickle,))

    def _check_data_version(self) -> None:
        version = self._conn.execute("PRAGMA data_version").fetchone()[0]
        if version != self._data_version:
            self._sessions.clear()
            self._data_version = version

    def _session_list(self, peer_key: str) -> list[tuple[str, str]]:
        if not self._depth:
            self._check_data_version()
        cached = self._sessions.get(peer_key)
        if cached is None:
            rows = self._conn.execute(
                "SELECT session_id, pickle FROM sessions WHERE peer_key = ? ORDER BY used DESC",
                (peer_key,),
            ).fetchall()
            cached = self._sessions[peer_key] = [(str(r[0]), str(r[1])) for r in rows]
        return cached

    def has_session(self, peer_key: str) -> bool:
        # Sessions are only ever added (`reset_device` aside, which makes a new
        # device and is checked for by every transaction): a peer known to have one
        # still has one, with no `PRAGMA data_version` per message sent.
        if self._sessions.get(peer_key):
            return True
        return bool(self._session_list(peer_key))

    def load_sessions(self, peer_key: str) -> list[tuple[str, str]]:
        return list(self._session_list(peer_key))

    def save_session(self, peer_key: str, session_id: str, pickle: str) -> None:
        # `used` orders the sessions of one peer key (most recent first); one statement.
        self._conn.execute(
            "INSERT INTO sessions VALUES (?1, ?2, ?3,"
            " (SELECT COALESCE(MAX(used), 0) + 1 FROM sessions WHERE peer_key = ?1))"
            " ON CONFLICT (peer_key, session_id) DO UPDATE"
            " SET pickle = excluded.pickle, used = excluded.used",
            (peer_key, session_id, pickle),
        )
        cached = self._sessions.get(peer_key)
        if cached is not None:
            cached[:] = [(session_id, pickle)] + [e for e in cached if e[0] != session_id]

    def has_replay_hash(self, digest: bytes) -> bool:
        row = self._conn.execute("SELECT 1 FROM replay WHERE digest = ?", (digest,)).fetchone()
        return row is not None

    def add_replay_hash(self, digest: bytes) -> None:
        self._conn.execute("INSERT OR IGNORE INTO replay VALUES (?)", (digest,))

    def load_identity(self) -> bytes | None:
        row = self._conn.execute("SELECT sealed FROM secrets WHERE name = 'identity'").fetchone()
        return None if row is None else bytes(row[0])

    def save_identity(self, sealed: bytes) -> None:
        self._conn.execute("INSERT OR REPLACE INTO secrets VALUES ('identity', ?)", (sealed,))

    def reset_device(self) -> None:
        """Forget the old device's Olm state when this profile becomes a new device.

        Its unconfirmed sends go too: they carry its ciphertexts, which no other
        device can send. Their messages are shown as not delivered."""
        with self.transaction():
            for message_id in self.pending_message_ids():
                self._conn.execute(
                    "INSERT OR IGNORE INTO bounces VALUES (?, 'device_replaced', ?)",
                    (message_id, now_ms()),
                )
            for table in ("account", "sessions", "seen_envelopes", "outbox"):
                self._conn.execute(f"DELETE FROM {table}")
            self._confirmed.clear()
            self._sessions.clear()
            self._conn.execute("DELETE FROM profile WHERE k IN ('cursor', 'device_id')")

    # --- contacts ------------------------------------------------------------------

    def remove_contact(self, address: str) -> None:
        self._conn.execute("DELETE FROM contacts WHERE address = ?", (address,))

    def _checked(self, table: str, row: tuple[Any, ...]) -> tuple[Any, ...]:
        """A row's fields, once its tag (the last column) is checked."""
        *fields, tag = row
        self.keys.rows.check(table, tuple(fields), tag)
        return tuple(fields)

    def _pinned(self, row: tuple[Any, ...]) -> PinnedContact:
        address, state, identity_key, verified, message, since = self._checked("contacts", row)
        return PinnedContact(address, state, identity_key, bool(verified), message, since)

    def contact(self, address: str) -> PinnedContact | None:
        row = self._conn.execute(
            f"SELECT {_CONTACT_FIELDS}, tag FROM contacts WHERE address = ?", (address,)
        ).fetchone()
        return None if row is None else self._pinned(row)

    def all_contacts(self) -> list[PinnedContact]:
        rows = self._conn.execute(
            f"SELECT {_CONTACT_FIELDS}, tag FROM contacts ORDER BY address"
        ).fetchall()
        return [self._pinned(r) for r in rows]

    def put_contact(self, contact: PinnedContact) -> None:
        fields = _contact_fields(contact)
        self._conn.execute(
            "INSERT OR REPLACE INTO contacts VALUES (?, ?, ?, ?, ?, ?, ?)",
            (*fields, self.keys.rows.tag("contacts", fields)),
        )

    def set_verified(self, address: str, identity_key: str) -> bool:
        """Mark `address` verified if `identity_key` is the key pinned for it."""
        with self.transaction():
            contact = self.contact(address)
            if contact is None or contact.identity_key != identity_key:
                return False
            self.put_contact(replace(contact, verified=True))
            return True

    # --- identity key changes --------------------------------------------------------

    def note_key_change(self, address: str, new_key: str) -> None:
        """Remember that `address` now shows another identity key than the pinned one."""
        fields = (address, new_key, now_ms())
        self._conn.execute(
            "INSERT INTO key_changes VALUES (?, ?, ?, ?) ON CONFLICT (address) DO UPDATE"
            " SET new_key = excluded.new_key, seen_at = excluded.seen_at, tag = excluded.tag"
            " WHERE key_changes.new_key != excluded.new_key",
            (*fields, self.keys.rows.tag("key_changes", fields)),
        )

    def newest_device_list(self, address: str, identity_key: str) -> tuple[int, str] | None:
        """(version, signature) of the newest list verified for `address` under the key."""
        row = self._conn.execute(
            "SELECT address, identity_key, version, signature, tag FROM device_lists"
            " WHERE address = ? AND identity_key = ?",
            (address, identity_key),
        ).fetchone()
        if row is None:
            return None
        _, _, version, signature = self._checked("device_lists", row)
        return version, signature

    def note_device_list(
        self, address: str, identity_key: str, version: int, signature: str
    ) -> None:
        """Remember a verified list; one statement, so concurrent processes keep the newest."""
        fields = (address, identity_key, version, signature)
        self._conn.execute(
            "INSERT INTO device_lists VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (address, identity_key) DO UPDATE"
            " SET version = excluded.version, signature = excluded.signature, tag = excluded.tag"
            " WHERE excluded.version > device_lists.version",
            (*fields, self.keys.rows.tag("device_lists", fields)),
        )

    def key_change(self, address: str) -> str | None:
        row = self._conn.execute(
            "SELECT address, new_key, seen_at, tag FROM key_changes WHERE address = ?", (address,)
        ).fetchone()
        return None if row is None else str(self._checked("key_changes", row)[1])

    def clear_key_change(self, address: str) -> None:
        self._conn.execute("DELETE FROM key_changes WHERE address = ?", (address,))

    # --- history -------------------------------------------------------------------

    def add_message(self, message: Message) -> bool:
        """Store a message once; False if its content id was already stored."""
        label = _message_label(
            message.id, message.sender, message.recipient, message.sent_at, message.direction
        )
        sealed = self.keys.box.seal(message.body.encode(), label)
        cur = self._conn.execute(
            "INSERT OR IGNORE INTO messages VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                message.id,
                message.sender,
                message.recipient,
                message.peer(),
                sealed,
                message.sent_at,
                message.received_at,
                message.direction,
            ),
        )
        return cur.rowcount == 1

    def remove_message(self, message_id: str) -> None:
        self._conn.execute("DELETE FROM messages WHERE id = ?", (message_id,))

    def record_sent(self, message_id: str, envelope_ids: list[str]) -> None:
        """Remember which message each server envelope id carried, to name bounces."""
        self._conn.executemany(
            "INSERT OR IGNORE INTO sent_envelopes VALUES (?, ?)",
            [(envelope_id, message_id) for envelope_id in envelope_ids],
        )

    # --- the outbox: sends committed here and not yet confirmed by the server ------

    def queue_send(self, txn_id: str, request: str, message_ids: list[str]) -> None:
        """Keep a send (its `SendRequest` JSON) until the server confirms it: written
        in the transaction that encrypted it, so a send cut short is sent again."""
        self._conn.execute(
            "INSERT OR REPLACE INTO outbox VALUES (?, ?, ?, ?)",
            (txn_id, request, json.dumps(message_ids), now_ms()),
        )

    def confirm_sends(self, txn_ids: list[str]) -> None:
        """The server has these sends: their rows go with the next commit."""
        self._confirmed.update(txn_ids)

    def drop_sends(self, txn_ids: list[str]) -> None:
        """Forget these sends: confirmed, or refused for good."""
        if txn_ids:
            self._conn.executemany("DELETE FROM outbox WHERE txn_id = ?", [(t,) for t in txn_ids])

    def pending_sends(self) -> list[tuple[str, str]]:
        """(txn_id, request JSON) of the sends not confirmed yet, oldest first."""
        rows = self._conn.execute(
            "SELECT txn_id, request FROM outbox ORDER BY created_at, rowid"
        ).fetchall()
        return [(t, r) for t, r in rows if t not in self._confirmed]

    def pending_message_ids(self) -> set[str]:
        rows = self._conn.execute("SELECT txn_id, message_ids FROM outbox").fetchall()
        return {m for t, ids in rows if t not in self._confirmed for m in json.loads(ids)}

    def mark_bounced(self, envelope_ids: list[str], reason: str) -> list[Message]:
        """Mark the messages these envelopes carried as bounced; return them, once each."""
        marks = ",".join("?" * len(envelope_ids))
        rows = self._conn.execute(
            f"SELECT DISTINCT message_id FROM sent_envelopes WHERE envelope_id IN ({marks})",
            envelope_ids,
        ).fetchall()
        bounced: list[str] = []
        for (message_id,) in rows:
            cur = self._conn.execute(
                "INSERT OR IGNORE INTO bounces VALUES (?, ?, ?)", (message_id, reason, now_ms())
            )
            if cur.rowcount == 1:
                bounced.append(message_id)
        if not bounced:
            return []
        # One read of the history (and of the outbox), not one per message.
        return self._history(f"WHERE m.id IN ({','.join('?' * len(bounced))})", tuple(bounced))

    def history(self, peer: str | None = None) -> list[Message]:
        if peer is None:
            return self._history("", ())
        return self._history("WHERE m.peer = ?", (peer,))

    def _history(self, where: str, args: tuple[str, ...]) -> list[Message]:
        query = (
            "SELECT m.id, m.sender, m.recipient, m.body, m.sent_at, m.received_at, m.direction,"
            " b.reason FROM messages m LEFT JOIN bounces b ON b.message_id = m.id "
        )
        rows = self._conn.execute(query + where + " ORDER BY m.sent_at, m.rowid", args).fetchall()
        messages = [self._message(*row) for row in rows]
        pending = self.pending_message_ids()
        if pending:
            messages = [replace(m, pending=True) if m.id in pending else m for m in messages]
        return messages

    def _message(
        self,
        mid: str,
        sender: str,
        recipient: str,
        body: bytes,
        sent_at: int,
        received_at: int | None,
        direction: Direction,
        bounced: str | None = None,
    ) -> Message:
        label = _message_label(mid, sender, recipient, sent_at, direction)
        try:
            text = self.keys.box.open(bytes(body), label).decode()
        except DecryptionFailed:
            raise ProfileTampered.row("messages", mid) from None
        return Message(mid, sender, recipient, text, sent_at, received_at, direction, bounced)

    def seen(self, envelope_id: str) -> bool:
        row = self._conn.execute(
            "SELECT 1 FROM seen_envelopes WHERE id = ?", (envelope_id,)
        ).fetchone()
        return row is not None

    def mark_seen(self, envelope_id: str) -> bool:
        """Remember an envelope id; False if it was already seen."""
        cur = self._conn.execute("INSERT OR IGNORE INTO seen_envelopes VALUES (?)", (envelope_id,))
        return cur.rowcount == 1


def now_ms() -> int:
    return int(time.time() * 1000)
