"""Sessions advanced inside a store transaction are written once, when it commits.

`TransactionalStore` stands for the client's SQLite store: a transaction that
raises restores what it wrote, as a rollback (or a crash before COMMIT) does.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import pytest
import vodozemac
from crypto_helpers import Party, TransactionalStore, make_party
from test_crypto_olm import send
from test_olm_live_sessions import twin

from emsg.crypto.errors import DecryptionFailed
from emsg.proto import b64
from emsg.proto.wire import Envelope


@pytest.fixture
def alice() -> Party:
    return make_party("alice#a.example", ["A1"], TransactionalStore)


@pytest.fixture
def bob() -> Party:
    return make_party("bob#b.example", ["B1"], TransactionalStore)


def store(party: Party, device_id: str) -> TransactionalStore:
    found = party.stores[device_id]
    assert isinstance(found, TransactionalStore)
    return found


def tampered(env: Envelope) -> Envelope:
    raw = bytearray(b64.decode(env.ciphertext.body))
    raw[-1] ^= 1  # breaks the MAC
    return env.model_copy(
        update={"ciphertext": env.ciphertext.model_copy(update={"body": b64.encode(raw)})}
    )


class Rollback(Exception):
    pass


def rolled_back(transactional: TransactionalStore, work: Callable[[], object]) -> None:
    """Do `work` in a transaction that then fails."""
    with contextlib.suppress(Rollback), transactional.transaction():
        work()
        raise Rollback


def test_vodozemac_leaves_a_session_untouched_when_decryption_fails() -> None:
    """What keeping an unsaved session after a failed decryption relies on."""
    key = bytes(32)
    alice, bob = vodozemac.Account(), vodozemac.Account()
    bob.generate_one_time_keys(1)
    one_time_key = next(iter(bob.one_time_keys.values()))
    outbound = alice.create_outbound_session(bob.curve25519_key, one_time_key)
    first = outbound.encrypt(b"first").to_pre_key()
    assert first is not None
    inbound, _ = bob.create_inbound_session(alice.curve25519_key, first)
    later = [(outbound.encrypt(b"same chain"), b"same chain")]
    later.append((outbound.encrypt(b"skips one"), b"skips one"))
    outbound.decrypt(inbound.encrypt(b"reply"))
    later.append((outbound.encrypt(b"new ratchet key"), b"new ratchet key"))
    for message, plaintext in later:
        kind, body = message.to_parts()
        bad = bytearray(body)
        bad[-1] ^= 1
        before = inbound.pickle(key)
        with pytest.raises(vodozemac.OlmDecryptionException):
            inbound.decrypt(vodozemac.AnyOlmMessage.from_parts(kind, bytes(bad)))
        assert inbound.pickle(key) == before
        assert inbound.decrypt(message) == plaintext


def test_a_burst_is_written_once_at_commit_and_continues_anywhere(alice: Party, bob: Party) -> None:
    alice_list = alice.device_list()
    bob.devices["B1"].decrypt(send(alice, "A1", bob, "B1", "start"), alice_list)
    sent, received = store(alice, "A1"), store(bob, "B1")
    sent.session_writes = received.session_writes = 0
    with sent.transaction():
        burst = [send(alice, "A1", bob, "B1", f"m{i}") for i in range(5)]
        assert sent.session_writes == 0
    assert sent.session_writes == 1
    with received.transaction():
        got = [bob.devices["B1"].decrypt(env, alice_list).content.body for env in burst]
        assert received.session_writes == 0
    assert got == [f"m{i}" for i in range(5)]
    assert received.session_writes == 1
    # Another process on the same profiles carries on from what was committed.
    other_alice, other_bob = twin(alice, "A1"), twin(bob, "B1")
    alice.devices["A1"] = other_alice
    after = send(alice, "A1", bob, "B1", "after")
    assert other_bob.decrypt(after, alice_list).content.body == "after"
    assert after.ciphertext.body not in {env.ciphertext.body for env in burst}


def test_a_rolled_back_burst_is_received_again(alice: Party, bob: Party) -> None:
    alice_list = alice.device_list()
    bob.devices["B1"].decrypt(send(alice, "A1", bob, "B1", "start"), alice_list)
    burst = [send(alice, "A1", bob, "B1", f"m{i}") for i in range(3)]
    received = store(bob, "B1")
    rolled_back(received, lambda: [bob.devices["B1"].decrypt(env, alice_list) for env in burst])
    with received.transaction():  # the server redelivers what was not acknowledged
        got = [bob.devices["B1"].decrypt(env, alice_list).content.body for env in burst]
    assert got == ["m0", "m1", "m2"]


def test_a_rolled_back_send_leaves_the_committed_state(alice: Party, bob: Party) -> None:
    alice_list = alice.device_list()
    bob.devices["B1"].decrypt(send(alice, "A1", bob, "B1", "start"), alice_list)
    rolled_back(store(alice, "A1"), lambda: send(alice, "A1", bob, "B1", "never sent"))
    sent = send(alice, "A1", bob, "B1", "sent")
    assert bob.devices["B1"].decrypt(sent, alice_list).content.body == "sent"


def test_a_failed_decryption_keeps_the_unsaved_session(alice: Party, bob: Party) -> None:
    alice_list = alice.device_list()
    bob.devices["B1"].decrypt(send(alice, "A1", bob, "B1", "start"), alice_list)
    first, second = send(alice, "A1", bob, "B1", "one"), send(alice, "A1", bob, "B1", "two")
    with store(bob, "B1").transaction():
        assert bob.devices["B1"].decrypt(first, alice_list).content.body == "one"
        with pytest.raises(DecryptionFailed):
            bob.devices["B1"].decrypt(tampered(second), alice_list)
        assert bob.devices["B1"].decrypt(second, alice_list).content.body == "two"
    later = send(alice, "A1", bob, "B1", "later")
    assert twin(bob, "B1").decrypt(later, alice_list).content.body == "later"


def test_a_session_started_in_a_transaction_is_used_before_it_commits(
    alice: Party, bob: Party
) -> None:
    first = send(alice, "A1", bob, "B1", "hello")
    alice_key = alice.device_list().device("A1").curve25519
    with store(bob, "B1").transaction():
        bob.devices["B1"].decrypt(first, alice.device_list())
        assert bob.devices["B1"].has_session(alice_key)
        reply = send(bob, "B1", alice, "A1", "hi")  # no key claimed: the new session
        assert not store(bob, "B1").has_session(alice_key)  # written at commit
    assert reply.ciphertext.type == 1
    assert alice.devices["A1"].decrypt(reply, bob.device_list()).content.body == "hi"
