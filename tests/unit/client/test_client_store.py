"""The local profile store: encrypted at rest, wrong passphrase is a clear error."""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from emsg.client import Message, NoProfile, ProfileExists, ProfileTampered, WrongPassphrase
from emsg.client.store import DB_NAME, PinnedContact, ProfileStore
from emsg.crypto.device import Device
from emsg.crypto.identity import IdentityKey, seal_identity
from emsg.crypto.keys import FAST_KDF_FOR_TESTS
from emsg.sqlite_checkpoint import WalCheckpointer

PASS = "correct horse battery"
MARKER = "PLAINTEXT-MARKER-4f1c"


def make(home: Path) -> ProfileStore:
    return ProfileStore.create(
        home, PASS, address="alice#a.example", server_url="http://s", kdf=FAST_KDF_FOR_TESTS
    )


def test_create_open_and_errors(tmp_path: Path) -> None:
    with pytest.raises(NoProfile):
        ProfileStore.open(tmp_path, PASS)
    store = make(tmp_path)
    store.set_device_id("DEV1")
    store.set_token("tok")
    store.close()
    with pytest.raises(ProfileExists):
        make(tmp_path)
    with pytest.raises(WrongPassphrase):
        ProfileStore.open(tmp_path, "wrong passphrase")
    again = ProfileStore.open(tmp_path, PASS)
    assert (again.address, again.device_id, again.token) == ("alice#a.example", "DEV1", "tok")
    again.close()


def test_nothing_secret_is_stored_in_the_clear(tmp_path: Path) -> None:
    store = make(tmp_path)
    identity = IdentityKey.generate()
    device = Device.create("alice#a.example", "DEV1")
    with store.transaction():
        store.set_token(f"token-{MARKER}")
        store.put_secret("note", MARKER.encode())
        store.save_identity(seal_identity(identity, store.keys.box))
        store.save_account(device.pickle(store.keys.pickle_key))
        store.add_message(
            Message("m1", "bob#b.example", "alice#a.example", f"body {MARKER}", 1, 2, "in")
        )
    store.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith(DB_NAME))
    for needle in (MARKER.encode(), identity.private_bytes(), b"PLAINTEXT"):
        assert needle not in raw
    again = ProfileStore.open(tmp_path, PASS)
    assert again.token == f"token-{MARKER}"
    assert again.get_secret("note") == MARKER.encode()
    assert [m.body for m in again.history("bob#b.example")] == [f"body {MARKER}"]
    account = again.load_account()
    assert account is not None
    assert (
        Device.from_pickle(account, again.keys.pickle_key, "a#b.c", "D").ed25519 == device.ed25519
    )
    again.close()


def test_history_dedupes_by_content_id_and_orders(tmp_path: Path) -> None:
    store = make(tmp_path)
    later = Message("m2", "alice#a.example", "bob#b.example", "later", 20, None, "out")
    first = Message("m1", "bob#b.example", "alice#a.example", "first", 10, 11, "in")
    assert store.add_message(later)
    assert store.add_message(first)
    assert not store.add_message(first)
    assert [m.id for m in store.history()] == ["m1", "m2"]
    assert [m.id for m in store.history("bob#b.example")] == ["m1", "m2"]
    assert store.history("carol#c.example") == []
    assert first.to_json()["from"] == "bob#b.example"
    store.close()


def test_sessions_most_recent_first_and_replay_and_cursor(tmp_path: Path) -> None:
    store = make(tmp_path)
    store.save_session("peer", "s1", "p1")
    store.save_session("peer", "s2", "p2")
    store.save_session("peer", "s1", "p1b")
    assert store.load_sessions("peer") == [("s1", "p1b"), ("s2", "p2")]
    assert not store.has_replay_hash(b"h")
    store.add_replay_hash(b"h")
    assert store.has_replay_hash(b"h")
    store.set_cursor(7)
    assert store.cursor == 7
    assert not store.seen("e1")
    store.mark_seen("e1")
    assert store.seen("e1")
    store.close()


def test_transaction_rolls_back_everything(tmp_path: Path) -> None:
    store = make(tmp_path)

    def crash_half_way() -> None:
        with store.transaction():
            store.put_contact(PinnedContact("bob#b.example", "friend", "k", False, "", 1))
            store.set_cursor(9)
            raise RuntimeError("crash half-way")

    with pytest.raises(RuntimeError):
        crash_half_way()
    assert store.contact("bob#b.example") is None
    assert store.cursor == 0
    store.close()


def test_two_connections_take_turns(tmp_path: Path) -> None:
    one = make(tmp_path)
    two = ProfileStore.open(tmp_path, PASS)
    with one.transaction():
        one.set_cursor(1)
    with two.transaction():
        two.set_cursor(two.cursor + 1)
    assert one.cursor == 2
    one.close()
    two.close()


def test_cursor_only_advances_and_seen_reports_first_sight(tmp_path: Path) -> None:
    store = make(tmp_path)
    store.advance_cursor(9)
    store.advance_cursor(10)
    store.advance_cursor(3)
    assert store.cursor == 10
    assert store.mark_seen("e1")
    assert not store.mark_seen("e1")
    assert not store.has_session("peer")
    store.save_session("peer", "s1", "p1")
    assert store.has_session("peer")
    message = Message("m1", "alice#a.example", "bob#b.example", "hi", 1, None, "out")
    store.add_message(message)
    store.remove_message("m1")
    assert store.history() == []
    store.close()


def test_profile_is_wal_and_survives_a_killed_writer(tmp_path: Path) -> None:
    store = make(tmp_path)
    with store.transaction():
        store.advance_cursor(5)
    # no close(): like a process that died right after the commit
    again = ProfileStore.open(tmp_path, PASS)
    assert again.cursor == 5
    (mode,) = again._conn.execute("PRAGMA journal_mode").fetchone()
    assert mode == "wal"
    again.close()
    store.close()


def test_writes_deferred_to_commit_are_committed_or_discarded(tmp_path: Path) -> None:
    store = make(tmp_path)
    calls: list[str] = []
    assert not store.defer_to_commit(lambda: calls.append("flush"), lambda: calls.append("drop"))

    def flush() -> None:
        calls.append("flush")
        store.save_session("peer", "s1", "written at commit")

    with store.transaction():
        assert store.defer_to_commit(flush, lambda: calls.append("drop"))
        assert calls == []
    assert calls == ["flush"]
    assert store.load_sessions("peer") == [("s1", "written at commit")]

    def rolled_back() -> None:
        with store.transaction():
            store.defer_to_commit(lambda: calls.append("flush again"), lambda: calls.append("drop"))
            raise RuntimeError("rolled back")

    with pytest.raises(RuntimeError):
        rolled_back()
    assert calls == ["flush", "drop"]

    def failing_flush() -> None:
        store.save_session("peer", "s2", "never committed")
        raise RuntimeError("the flush fails")

    with pytest.raises(RuntimeError), store.transaction():
        store.defer_to_commit(failing_flush, lambda: calls.append("dropped after flush"))
    assert calls[-1] == "dropped after flush"
    store.close()
    again = ProfileStore.open(tmp_path, PASS)
    assert again.load_sessions("peer") == [("s1", "written at commit")]
    again.close()


def test_has_session_sees_other_writers_and_forgets_rolled_back_sessions(tmp_path: Path) -> None:
    one = make(tmp_path)
    two = ProfileStore.open(tmp_path, PASS)
    assert not one.has_session("peer")
    two.save_session("peer", "s1", "made by another process on this profile")
    assert one.has_session("peer")  # not cached as absent

    def save_then_fail() -> None:
        with one.transaction():
            one.save_session("other", "s2", "never committed")
            assert one.has_session("other")
            raise RuntimeError("roll back")

    with pytest.raises(RuntimeError, match="roll back"):
        save_then_fail()
    assert not one.has_session("other")
    assert not two.has_session("other")
    one.close()
    two.close()


def test_commits_leave_wal_checkpoints_to_the_worker(tmp_path: Path) -> None:
    store = make(tmp_path)
    store.checkpointer = WalCheckpointer(store.path, every_commits=10**9)  # never starts
    wal = store.path.with_name(DB_NAME + "-wal")
    body = "x" * 3000  # sealed, about one page per message
    for i in range(1500):
        with store.transaction():
            store.add_message(Message(f"m{i}", "a#a.example", "b#b.example", body, i, None, "out"))
    # SQLite's own threshold (1,000 pages) would have checkpointed inside a commit and
    # started the WAL over; the store keeps it only as a far larger backstop.
    assert wal.stat().st_size > 1500 * 4096

    store.checkpointer = WalCheckpointer(store.path, every_commits=1, interval_s=0)
    with store.transaction():
        store.set_token("tok")
    store.checkpointer.wait()
    assert store.checkpointer.last_result is not None
    busy, frames, copied = store.checkpointer.last_result
    assert busy == 0
    assert frames == copied > 1500
    store.close()
    again = ProfileStore.open(tmp_path, PASS)
    assert len(again.history()) == 1500
    again.close()


def test_the_outbox_keeps_sends_until_confirmed_and_a_new_device_drops_them(
    tmp_path: Path,
) -> None:
    store = make(tmp_path)
    out = Message("m1", "alice#a.example", "bob#b.example", "hi", 1, None, "out")
    with store.transaction():
        store.add_message(out)
        store.queue_send("t1", '{"envelopes": []}', ["m1"])
        store.queue_send("t2", '{"envelopes": []}', ["m1"])
    assert [m.pending for m in store.history()] == [True]
    store.confirm_sends(["t1"])
    assert store.pending_sends() == [("t2", '{"envelopes": []}')]  # at once in memory
    store.confirm_sends(["t2"])
    assert [m.pending for m in store.history()] == [False]
    store.close()  # the confirmed rows are deleted as it closes
    again = ProfileStore.open(tmp_path, PASS)
    assert again.pending_sends() == []

    # A send that was never confirmed belongs to this device's ciphertexts: when the
    # folder becomes a new device, it is dropped and its message shows as not delivered.
    with again.transaction():
        again.queue_send("t3", '{"envelopes": []}', ["m1"])
    again.reset_device()
    assert again.pending_sends() == []
    assert [(m.pending, m.bounced) for m in again.history()] == [(False, "device_replaced")]
    again.close()


# A profile written by the store as it was before rows were tagged (commit 311c631):
# bob#b.example a verified friend with a pending key change and a device list seen,
# carol#c.example a stranger with no key, two messages. Passphrase PASS.
SCHEMA_1 = Path(__file__).with_name("data") / "profile-schema-1.sqlite3"
BOB = PinnedContact("bob#b.example", "friend", "BOBKEY", True, "hi", 5)


def change_behind_its_back(home: Path, *statements: str) -> None:
    """What someone who can write to the folder, without the passphrase, can do."""
    with contextlib.closing(sqlite3.connect(home / DB_NAME)) as db:
        for statement in statements:
            db.execute(statement)
        db.commit()


def profile_with_trust_state(home: Path) -> None:
    store = make(home)
    with store.transaction():
        store.put_contact(BOB)
        store.put_contact(PinnedContact("carol#c.example", "friend", "CAROLKEY", False, "", 6))
        store.note_key_change("bob#b.example", "NEWBOBKEY")
        store.note_device_list("bob#b.example", "BOBKEY", 3, "SIG3")
        store.add_message(Message("m1", "bob#b.example", "alice#a.example", "hi", 1, 2, "in"))
    store.close()


READS: dict[str, Callable[[ProfileStore], object]] = {
    "contact": lambda s: s.contact("bob#b.example"),
    "carol": lambda s: s.contact("carol#c.example"),
    "contacts": lambda s: s.all_contacts(),
    "key change": lambda s: s.key_change("bob#b.example"),
    "device list": lambda s: s.newest_device_list("bob#b.example", "BOBKEY"),
    "history": lambda s: s.history(),
}


@pytest.mark.parametrize(
    ("change", "read"),
    [
        ("UPDATE contacts SET identity_key = 'MALLORYKEY' WHERE address = 'bob#b.example'",
         "contact"),
        ("UPDATE contacts SET verified = 1 WHERE address = 'carol#c.example'", "carol"),
        ("UPDATE contacts SET state = 'blocked' WHERE address = 'bob#b.example'", "contacts"),
        ("UPDATE contacts SET tag = NULL WHERE address = 'bob#b.example'", "contact"),
        ("UPDATE key_changes SET new_key = 'MALLORYKEY'", "key change"),
        ("UPDATE device_lists SET version = 1, signature = 'SIG1'", "device list"),
        ("UPDATE messages SET sender = 'mallory#m.example', peer = 'mallory#m.example'",
         "history"),
    ],
)  # fmt: skip
def test_a_row_changed_without_the_passphrase_is_refused_not_believed(
    tmp_path: Path, change: str, read: str
) -> None:
    profile_with_trust_state(tmp_path)
    store = ProfileStore.open(tmp_path, PASS)
    READS[read](store)  # reads fine as written
    store.close()
    change_behind_its_back(tmp_path, change)
    store = ProfileStore.open(tmp_path, PASS)
    with pytest.raises(ProfileTampered, match="changed outside EMSG"):
        READS[read](store)
    store.close()


def test_the_store_keeps_writing_rows_that_read_back(tmp_path: Path) -> None:
    profile_with_trust_state(tmp_path)
    store = ProfileStore.open(tmp_path, PASS)
    assert store.set_verified("carol#c.example", "CAROLKEY")
    assert not store.set_verified("carol#c.example", "ANOTHERKEY")
    assert not store.set_verified("nobody#n.example", "CAROLKEY")
    store.note_key_change("bob#b.example", "NEWERBOBKEY")
    store.note_device_list("bob#b.example", "BOBKEY", 4, "SIG4")
    store.note_device_list("bob#b.example", "BOBKEY", 2, "SIG2")  # older: ignored
    store.close()
    store = ProfileStore.open(tmp_path, PASS)
    assert store.contact("carol#c.example") == PinnedContact(
        "carol#c.example", "friend", "CAROLKEY", True, "", 6
    )
    assert store.key_change("bob#b.example") == "NEWERBOBKEY"
    assert store.newest_device_list("bob#b.example", "BOBKEY") == (4, "SIG4")
    store.close()


def test_a_profile_of_schema_1_is_tagged_when_first_opened(tmp_path: Path) -> None:
    shutil.copy(SCHEMA_1, tmp_path / DB_NAME)
    with pytest.raises(WrongPassphrase):
        ProfileStore.open(tmp_path, "wrong passphrase")
    store = ProfileStore.open(tmp_path, PASS)
    assert store.all_contacts() == [
        BOB,
        PinnedContact("carol#c.example", "stranger", None, False, "", None),
    ]
    assert store.key_change("bob#b.example") == "NEWBOBKEY"
    assert store.newest_device_list("bob#b.example", "BOBKEY") == (3, "SIG3")
    assert [(m.sender, m.body) for m in store.history()] == [
        ("bob#b.example", "hello from bob"),
        ("alice#a.example", "hello back"),
    ]
    store.close()

    # For good: setting the schema back does not make a changed row pass again.
    change_behind_its_back(
        tmp_path,
        "UPDATE contacts SET identity_key = 'MALLORYKEY' WHERE address = 'bob#b.example'",
        "UPDATE profile SET v = CAST('1' AS BLOB) WHERE k = 'schema'",
    )
    store = ProfileStore.open(tmp_path, PASS)
    with pytest.raises(ProfileTampered):
        store.contact("bob#b.example")
    store.close()


def test_two_processes_opening_a_schema_1_profile_upgrade_it_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second one read the old verifier before the first upgraded the profile."""
    shutil.copy(SCHEMA_1, tmp_path / DB_NAME)
    create_schema = ProfileStore._create_schema
    others: list[ProfileStore] = []

    def meanwhile_another_process_opens_it(store: ProfileStore) -> None:
        monkeypatch.setattr(ProfileStore, "_create_schema", create_schema)
        others.append(ProfileStore.open(tmp_path, PASS))  # upgrades it
        create_schema(store)

    monkeypatch.setattr(ProfileStore, "_create_schema", meanwhile_another_process_opens_it)
    store = ProfileStore.open(tmp_path, PASS)
    for opened in (store, *others):
        assert [m.body for m in opened.history()] == ["hello from bob", "hello back"]
        assert opened.contact("bob#b.example") == BOB
        opened.close()
