"""Approval codes, the recovery key, safety numbers, QR payloads, SAS, and the
device-to-device content types."""

from __future__ import annotations

import secrets

import pytest
from crypto_helpers import Party, make_party
from hypothesis import given
from hypothesis import strategies as st
from test_crypto_olm import envelope

from emsg.crypto import approval, verification
from emsg.crypto.device import Device
from emsg.crypto.errors import (
    ContentRejected,
    InvalidApprovalCode,
    InvalidRecoveryKey,
    UntrustedDevice,
    VerificationFailed,
)
from emsg.crypto.identity import IdentityKey
from emsg.crypto.olm import decode_content
from emsg.crypto.recovery import RecoveryKey
from emsg.crypto.verification import SasExchange, SasParty
from emsg.proto.content import ContactsShare, Content, HistoryShare, IdentityShare, SasStart

ALICE, BOB = "alice#a.example", "bob#b.example"


def _keys(device_id: str = "NEW"):  # type: ignore[no-untyped-def]
    return Device.create(ALICE, device_id).device_keys()


# --- approval codes -------------------------------------------------------------------


def test_approval_code_matches_only_its_device() -> None:
    secret, keys, other = approval.new_secret(), _keys(), _keys()
    code = approval.approval_code(secret, keys)
    assert len(code) == 19
    assert code.count("-") == 3
    assert approval.matches(code, keys)
    assert approval.matches(code.lower().replace("-", " "), keys)  # as people type it
    assert not approval.matches(code, other)


def test_confirm_proves_the_sender_saw_the_code() -> None:
    secret, keys = approval.new_secret(), _keys()
    identity = IdentityKey.generate().public_key
    tag = approval.confirm_tag(secret, identity, keys)
    approval.check_confirm(secret, identity, keys, tag)
    with pytest.raises(UntrustedDevice):
        approval.check_confirm(approval.new_secret(), identity, keys, tag)  # a guessed secret
    with pytest.raises(UntrustedDevice):
        approval.check_confirm(secret, IdentityKey.generate().public_key, keys, tag)  # other key


@given(st.text(max_size=40))
def test_parse_code_never_crashes(text: str) -> None:
    try:
        secret, tag = approval.parse_code(text)
    except InvalidApprovalCode:
        return
    assert len(secret) == approval.SECRET_LEN
    assert len(tag) == approval.TAG_LEN


# --- recovery key ---------------------------------------------------------------------


def test_recovery_key_opens_only_its_backup() -> None:
    identity, key = IdentityKey.generate(), RecoveryKey.generate()
    backup = key.seal(identity, ALICE)
    assert identity.private_bytes().hex() not in backup.model_dump_json()
    opened = RecoveryKey.parse(key.display().lower()).open(backup, ALICE)
    assert opened.public_key == identity.public_key
    with pytest.raises(InvalidRecoveryKey) as wrong:
        RecoveryKey.generate().open(backup, ALICE)
    assert wrong.value.message == (
        f"this recovery key does not open the backup of {ALICE} (check it for typos)"
    )
    with pytest.raises(InvalidRecoveryKey):
        key.open(backup, BOB)  # bound to the address
    forged = backup.model_copy(update={"identity_key": IdentityKey.generate().public_key})
    with pytest.raises(InvalidRecoveryKey):
        key.open(forged, ALICE)
    with pytest.raises(InvalidRecoveryKey):
        RecoveryKey.parse("not a key")


# --- safety number and QR -------------------------------------------------------------


def test_safety_number_is_the_same_on_both_sides_and_changes_with_a_key() -> None:
    a, b = IdentityKey.generate().public_key, IdentityKey.generate().public_key
    number = verification.safety_number(ALICE, a, BOB, b)
    assert number == verification.safety_number(BOB, b, ALICE, a)
    assert len(number.replace(" ", "")) == 60
    assert number.replace(" ", "").isdigit()
    forged = IdentityKey.generate().public_key
    assert verification.safety_number(ALICE, a, BOB, forged) != number


def test_qr_payload_verifies_both_keys() -> None:
    a, b = IdentityKey.generate().public_key, IdentityKey.generate().public_key
    shown_by_bob = verification.qr_payload(BOB, b, ALICE, a)
    verification.check_qr(shown_by_bob, me=ALICE, my_key=a, peer=BOB, pinned_peer_key=b)
    forged = IdentityKey.generate().public_key
    with pytest.raises(VerificationFailed, match="differs"):  # Alice pinned a forged key
        verification.check_qr(shown_by_bob, me=ALICE, my_key=a, peer=BOB, pinned_peer_key=forged)
    bob_was_fooled = verification.qr_payload(BOB, b, ALICE, forged)
    with pytest.raises(VerificationFailed, match="another identity key for you"):
        verification.check_qr(bob_was_fooled, me=ALICE, my_key=a, peer=BOB, pinned_peer_key=b)
    for junk in ("", "hello", verification.QR_PREFIX + "!!!", shown_by_bob[:-5]):
        with pytest.raises(VerificationFailed):
            verification.check_qr(junk, me=ALICE, my_key=a, peer=BOB, pinned_peer_key=b)


# --- SAS -------------------------------------------------------------------------------


def test_sas_both_sides_see_the_same_code_and_macs_check() -> None:
    a = SasExchange(SasParty(ALICE, "A1", "flowa"))
    b = SasExchange(SasParty(BOB, "B1", "flowb"))
    code_a = a.reveal(b.me, b.commitment, b.public_key)
    code_b = b.reveal(a.me, a.commitment, a.public_key)
    assert code_a == code_b
    assert len(code_a.emoji) == 7
    assert len(code_a.decimals) == 3
    alice_key = IdentityKey.generate().public_key
    b.check_their_mac(alice_key, a.mac_of_own_key(alice_key))
    with pytest.raises(VerificationFailed):
        b.check_their_mac(IdentityKey.generate().public_key, a.mac_of_own_key(alice_key))


def test_sas_refuses_a_key_that_breaks_its_commitment() -> None:
    a = SasExchange(SasParty(ALICE, "A1", "flowa"))
    b = SasExchange(SasParty(BOB, "B1", "flowb"))
    mitm = SasExchange(SasParty(BOB, "B1", "flowb"))
    with pytest.raises(VerificationFailed, match="commitment"):
        a.reveal(b.me, b.commitment, mitm.public_key)


def test_a_man_in_the_middle_gets_different_codes() -> None:
    a = SasExchange(SasParty(ALICE, "A1", "f1"))
    b = SasExchange(SasParty(BOB, "B1", "f2"))
    m_for_a = SasExchange(SasParty(BOB, "B1", "f2"))
    m_for_b = SasExchange(SasParty(ALICE, "A1", "f1"))
    code_a = a.reveal(m_for_a.me, m_for_a.commitment, m_for_a.public_key)
    code_b = b.reveal(m_for_b.me, m_for_b.commitment, m_for_b.public_key)
    assert code_a != code_b


# --- device-to-device contents ---------------------------------------------------------


def _header(sender: Party, device_id: str, to: str) -> dict[str, object]:
    return {
        "id": secrets.token_urlsafe(12),
        "from": sender.address,
        "from_device": device_id,
        "to": to,
        "sent_at": 1_700_000_000_000,
    }


def test_old_text_content_without_type_still_decodes() -> None:
    raw = (
        b'{"v":1,"id":"abcdefgh","from":"a#b.c","from_device":"D","to":"x#y.z",'
        b'"body":"hi","sent_at":1}'
    )
    assert isinstance(decode_content(raw), Content)
    with pytest.raises(ContentRejected):
        decode_content(raw.replace(b'"v":1', b'"v":1,"type":"from_the_future"'))


def test_a_malformed_content_is_described_in_one_line_without_its_text() -> None:
    raw = (
        b'{"v":1,"type":"text","id":"abcdefgh","from":"a#b.c","from_device":"D",'
        b'"to":"x#y.z","body":"the private words","sent_at":1,"unknown":"more of them"}'
    )
    with pytest.raises(ContentRejected) as caught:
        decode_content(raw)
    assert caught.value.message == (
        "the decrypted content is malformed: text.unknown: Extra inputs are not permitted"
    )


def test_identity_and_history_shares_come_only_from_own_devices() -> None:
    alice, bob = make_party(ALICE, ["A1", "A2"]), make_party(BOB, ["B1"])
    identity = IdentityKey.generate()
    share = IdentityShare.model_validate(
        {
            **_header(bob, "B1", ALICE),
            "identity_key": identity.public_key,
            "seed": "A" * 43,
            "confirm": "A" * 43,
        }
    )
    claimed = alice.claim("A1")
    out = bob.devices["B1"].encrypt(share, alice.device_list(), "A1", claimed)
    with pytest.raises(ContentRejected, match="own devices"):
        alice.devices["A1"].decrypt(envelope(out, BOB, "B1"), bob.device_list())

    history = HistoryShare.model_validate({**_header(alice, "A2", ALICE), "messages": []})
    out = alice.devices["A2"].encrypt(history, alice.device_list(), "A1", alice.claim("A1"))
    got = alice.devices["A1"].decrypt(envelope(out, ALICE, "A2", "e2"), alice.device_list())
    assert isinstance(got.content, HistoryShare)
    contacts = ContactsShare.model_validate({**_header(bob, "B1", ALICE), "contacts": []})
    out = bob.devices["B1"].encrypt(contacts, alice.device_list(), "A1", None)
    with pytest.raises(ContentRejected, match="own devices"):
        alice.devices["A1"].decrypt(envelope(out, BOB, "B1", "e3"), bob.device_list())


def test_sas_contents_come_only_from_another_account() -> None:
    alice = make_party(ALICE, ["A1", "A2"])
    start = SasStart.model_validate(
        {**_header(alice, "A2", ALICE), "flow": "flowflow", "commitment": "A" * 43}
    )
    out = alice.devices["A2"].encrypt(start, alice.device_list(), "A1", alice.claim("A1"))
    with pytest.raises(ContentRejected, match="another account"):
        alice.devices["A1"].decrypt(envelope(out, ALICE, "A2"), alice.device_list())
