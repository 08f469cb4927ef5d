from __future__ import annotations

import pytest
from crypto_helpers import Party, content, make_party
from hypothesis import given, settings
from hypothesis import strategies as st

from emsg.crypto.errors import (
    ContentRejected,
    DecryptionFailed,
    ReplayedMessage,
    UntrustedDevice,
)
from emsg.proto import b64
from emsg.proto.wire import Ciphertext, Envelope, OutgoingEnvelope


def envelope(out: OutgoingEnvelope, sender: str, sender_device: str, eid: str = "e1") -> Envelope:
    return Envelope(
        id=eid,
        sender=sender,
        sender_device=sender_device,
        recipient=out.to,
        device_id=out.device_id,
        ciphertext=out.ciphertext,
        sent_at=1,
    )


def send(a: Party, a_dev: str, b: Party, b_dev: str, body: str, fallback: bool = False) -> Envelope:
    olm = a.devices[a_dev]
    peer = b.device_list()
    claimed = None if olm.has_session(peer.device(b_dev).curve25519) else b.claim(b_dev, fallback)
    out = olm.encrypt(content(olm, b.address, body), peer, b_dev, claimed)
    return envelope(out, a.address, a_dev)


def test_round_trip_both_ways(alice: Party, bob: Party) -> None:
    env = send(alice, "A1", bob, "B1", "hi bob")
    assert env.ciphertext.type == 0
    got = bob.devices["B1"].decrypt(env, alice.device_list())
    assert (got.content.body, got.sender, got.sender_device) == ("hi bob", alice.address, "A1")
    assert got.used_one_time_key
    reply = send(bob, "B1", alice, "A1", "hi alice")
    assert reply.ciphertext.type == 1  # bob reuses the inbound session
    assert alice.devices["A1"].decrypt(reply, bob.device_list()).content.body == "hi alice"
    again = send(alice, "A1", bob, "B1", "second")
    assert again.ciphertext.type == 1
    assert bob.devices["B1"].decrypt(again, alice.device_list()).content.body == "second"


@settings(max_examples=30, deadline=None)
@given(body=st.text(max_size=2000), flips=st.lists(st.integers(0, 10_000), min_size=1, max_size=4))
def test_tampered_ciphertext_never_decrypts_nor_wedges(body: str, flips: list[int]) -> None:
    alice, bob = make_party("alice#a.example", ["A1"]), make_party("bob#b.example", ["B1"])
    for kind in ("pre_key", "normal"):
        if kind == "normal":  # establish the session both ways first
            bob.devices["B1"].decrypt(send(alice, "A1", bob, "B1", "x"), alice.device_list())
        env = send(alice, "A1", bob, "B1", body)
        raw = bytearray(b64.decode(env.ciphertext.body))
        for flip in flips:
            raw[flip % len(raw)] ^= 1 + flip % 255
        bad = env.model_copy(
            update={"ciphertext": env.ciphertext.model_copy(update={"body": b64.encode(raw)})}
        )
        if bytes(raw) != b64.decode(env.ciphertext.body):
            with pytest.raises(DecryptionFailed):
                bob.devices["B1"].decrypt(bad, alice.device_list())
        # the genuine message still decrypts afterwards: nothing advanced or wedged
        assert bob.devices["B1"].decrypt(env, alice.device_list()).content.body == body


def test_replayed_prekey_on_fallback_key_is_refused(alice: Party, bob: Party) -> None:
    env = send(alice, "A1", bob, "B1", "once", fallback=True)
    bob.devices["B1"].decrypt(env, alice.device_list())
    with pytest.raises(ReplayedMessage):
        bob.devices["B1"].decrypt(env.model_copy(update={"id": "e2"}), alice.device_list())


def test_a_later_prekey_message_replayed_is_refused_by_its_session(
    alice: Party, bob: Party
) -> None:
    first = send(alice, "A1", bob, "B1", "one", fallback=True)
    second = send(alice, "A1", bob, "B1", "two")  # no reply yet: still a pre-key message
    assert second.ciphertext.type == 0
    for env in (first, second):
        bob.devices["B1"].decrypt(env, alice.device_list())
    with pytest.raises(DecryptionFailed):
        bob.devices["B1"].decrypt(second.model_copy(update={"id": "e3"}), alice.device_list())
    assert len(bob.stores["B1"].replay) == 1  # only the message that started the session


def test_replay_without_cache_would_decrypt(alice: Party, bob: Party) -> None:
    # Documents why the cache exists: vodozemac alone accepts the replay.
    env = send(alice, "A1", bob, "B1", "once", fallback=True)
    bob.devices["B1"].decrypt(env, alice.device_list())
    bob.stores["B1"].replay.clear()
    bob.stores["B1"].sessions.clear()
    assert bob.devices["B1"].decrypt(env, alice.device_list()).content.body == "once"


def test_sender_key_must_match_the_verified_device(alice: Party, bob: Party) -> None:
    env = send(alice, "A1", bob, "B1", "hi")
    forged = env.model_copy(update={"sender_device": "A2"})
    with pytest.raises(UntrustedDevice):
        bob.devices["B1"].decrypt(forged, alice.device_list())
    mallory = make_party("mallory#m.example", ["M1"])
    with pytest.raises(UntrustedDevice):
        bob.devices["B1"].decrypt(env, mallory.device_list())
    assert bob.devices["B1"].decrypt(env, alice.device_list()).content.body == "hi"


def test_misaddressed_envelope_is_refused(alice: Party, bob: Party) -> None:
    env = send(alice, "A1", bob, "B1", "hi")
    with pytest.raises(DecryptionFailed):
        bob.devices["B1"].decrypt(env.model_copy(update={"device_id": "B9"}), alice.device_list())


def test_content_from_must_match_envelope(alice: Party, bob: Party) -> None:
    olm = alice.devices["A1"]
    peer = bob.device_list()
    c = content(olm, bob.address).model_copy(update={"to": "carol#c.example"})
    out = olm.encrypt(c, peer, "B1", bob.claim("B1"))
    with pytest.raises(ContentRejected):
        bob.devices["B1"].decrypt(envelope(out, alice.address, "A1"), alice.device_list())


def test_own_device_copy_may_name_the_peer(alice: Party, bob: Party) -> None:
    olm = alice.devices["A1"]
    mine = alice.device_list()
    out = olm.encrypt(content(olm, bob.address, "to bob"), mine, "A2", alice.claim("A2"))
    got = alice.devices["A2"].decrypt(envelope(out, alice.address, "A1"), mine)
    assert got.content.to == bob.address


def test_claimed_key_must_be_signed_by_listed_device(alice: Party, bob: Party) -> None:
    claimed = bob.claim("B1")
    other = make_party("bob#b.example", ["B1"]).claim("B1")
    forged = claimed.model_copy(update={"one_time_key": other.one_time_key})
    olm = alice.devices["A1"]
    with pytest.raises(UntrustedDevice):
        olm.encrypt(content(olm, bob.address), bob.device_list(), "B1", forged)
    with pytest.raises(UntrustedDevice):
        olm.encrypt(content(olm, bob.address), bob.device_list(), "B1", None)
    with pytest.raises(UntrustedDevice):
        olm.encrypt(content(olm, bob.address), bob.device_list(), "B9", claimed)


def test_not_an_olm_message(alice: Party, bob: Party) -> None:
    env = send(alice, "A1", bob, "B1", "hi")
    junk = env.model_copy(
        update={"ciphertext": Ciphertext(type=1, body="AAAA", sender_key=env.ciphertext.sender_key)}
    )
    with pytest.raises(DecryptionFailed):
        bob.devices["B1"].decrypt(junk, alice.device_list())
