"""Live sessions kept in memory never go stale against the store they mirror.

Two `Olm` objects over one store stand for two processes sharing a profile; a
store that rolls back stands for a transaction that failed after a decryption.
"""

from __future__ import annotations

import pytest
from crypto_helpers import Party, content, make_party
from test_crypto_olm import envelope, send

from emsg.crypto.errors import DecryptionFailed
from emsg.crypto.olm import Olm
from emsg.crypto.store import MemoryCryptoStore
from emsg.proto import b64


def twin(party: Party, device_id: str) -> Olm:
    """Another process's view of the same device: same store, its own memory."""
    first = party.devices[device_id]
    return Olm(party.stores[device_id], first._key, party.address, device_id)


def test_sender_sharing_a_store_never_reuses_a_message_key(alice: Party, bob: Party) -> None:
    bob_list, alice_list = bob.device_list(), alice.device_list()
    first = send(alice, "A1", bob, "B1", "one")
    assert bob.devices["B1"].decrypt(first, alice_list).content.body == "one"
    other = twin(alice, "A1")
    bodies = []
    for i, olm in enumerate([alice.devices["A1"], other, alice.devices["A1"], other]):
        out = olm.encrypt(content(olm, bob.address, f"m{i}"), bob_list, "B1")
        bodies.append(out.ciphertext.body)
        env = envelope(out, alice.address, "A1", f"e{i}")
        assert bob.devices["B1"].decrypt(env, alice_list).content.body == f"m{i}"
    assert len(set(bodies)) == len(bodies)


def test_receiver_sharing_a_store_follows_the_other(alice: Party, bob: Party) -> None:
    alice_list = alice.device_list()
    other = twin(bob, "B1")
    for i, olm in enumerate([bob.devices["B1"], other, bob.devices["B1"], other]):
        env = send(alice, "A1", bob, "B1", f"m{i}")
        assert olm.decrypt(env, alice_list).content.body == f"m{i}"


def test_a_rolled_back_decryption_decrypts_again(alice: Party, bob: Party) -> None:
    alice_list = alice.device_list()
    bob.devices["B1"].decrypt(send(alice, "A1", bob, "B1", "first"), alice_list)
    env = send(alice, "A1", bob, "B1", "second")
    store: MemoryCryptoStore = bob.stores["B1"]
    saved = ({k: dict(v) for k, v in store.sessions.items()}, set(store.replay))
    assert bob.devices["B1"].decrypt(env, alice_list).content.body == "second"
    store.sessions, store.replay = saved  # the transaction around it rolled back
    assert bob.devices["B1"].decrypt(env, alice_list).content.body == "second"


def test_a_failed_decryption_leaves_the_live_session_usable(alice: Party, bob: Party) -> None:
    alice_list = alice.device_list()
    bob.devices["B1"].decrypt(send(alice, "A1", bob, "B1", "first"), alice_list)
    good = send(alice, "A1", bob, "B1", "good")
    raw = bytearray(b64.decode(good.ciphertext.body))
    raw[-1] ^= 1  # breaks the MAC
    bad = good.model_copy(
        update={"ciphertext": good.ciphertext.model_copy(update={"body": b64.encode(raw)})}
    )
    with pytest.raises(DecryptionFailed):
        bob.devices["B1"].decrypt(bad, alice_list)
    assert bob.devices["B1"].decrypt(good, alice_list).content.body == "good"
    later = send(alice, "A1", bob, "B1", "later")
    assert bob.devices["B1"].decrypt(later, alice_list).content.body == "later"


def test_sessions_with_many_peers_stay_bounded() -> None:
    bob = make_party("bob#b.example", ["B1"])
    olm = bob.devices["B1"]
    for n in range(3):
        peer = make_party(f"p{n}#p.example", ["P1"])
        env = send(peer, "P1", bob, "B1", "hi")
        assert olm.decrypt(env, peer.device_list()).content.body == "hi"
    assert len(olm._live) == 3
