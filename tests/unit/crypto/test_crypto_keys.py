from __future__ import annotations

import re
import secrets
import unicodedata

import pytest
from crypto_helpers import make_party
from hypothesis import given, settings
from hypothesis import strategies as st

from emsg.crypto.curve import LOW_ORDER_POINTS, curve25519_key
from emsg.crypto.device import Device, verify_device_keys, verify_one_time_key
from emsg.crypto.errors import DecryptionFailed, InvalidKey, UntrustedDevice, WrongPassphrase
from emsg.crypto.identity import (
    IdentityKey,
    check_not_older,
    open_identity,
    seal_identity,
    verify_device_list,
)
from emsg.crypto.keys import (
    FAST_KDF_FOR_TESTS,
    PickleKey,
    ProfileKeys,
    SecretBox,
    login_key,
    new_salt,
)
from emsg.proto import b64, signing
from emsg.proto.errors import BadSignature, IdentityKeyChanged
from emsg.proto.wire import model_dump


def test_kdf_is_deterministic_per_salt_and_checks_passphrase() -> None:
    salt = new_salt()
    a = ProfileKeys.derive("hunter22", salt, FAST_KDF_FOR_TESTS)
    b = ProfileKeys.derive("hunter22", salt, FAST_KDF_FOR_TESTS)
    assert a.verifier == b.verifier
    assert a.pickle_key.raw == b.pickle_key.raw
    assert a.pickle_key.raw != a.verifier  # sub-keys are independent
    assert ProfileKeys.derive("hunter22", new_salt(), FAST_KDF_FOR_TESTS).verifier != a.verifier
    b.check(a.verifier)
    with pytest.raises(WrongPassphrase):
        ProfileKeys.derive("hunter23", salt, FAST_KDF_FOR_TESTS).check(a.verifier)


def test_login_key_matches_the_protocol_test_vector() -> None:
    # protocol.md §4: any client of the account must arrive at this very string.
    assert login_key("correct horse battery", "alice#example.org") == (
        "Zn3WOA4qXYc3JUfr99lXMGmRs1o1aWJ9s_0AgCVUa2g"
    )


def test_login_key_is_the_same_password_however_its_accents_were_typed() -> None:
    composed, decomposed = "caf\u00e9 au lait", "cafe\u0301 au lait"
    assert composed != decomposed
    assert login_key(composed, "a#b.example", FAST_KDF_FOR_TESTS) == login_key(
        decomposed, "a#b.example", FAST_KDF_FOR_TESTS
    )


@settings(max_examples=50, deadline=None)
@given(
    password=st.text(st.characters(blacklist_categories=["Cs"]), min_size=8, max_size=64),
    other=st.text(st.characters(blacklist_categories=["Cs"]), min_size=8, max_size=64),
)
def test_login_key_hides_the_password_and_depends_on_password_and_address(
    password: str, other: str
) -> None:
    key = login_key(password, "alice#example.org", FAST_KDF_FOR_TESTS)
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", key)
    assert password not in key
    assert key == login_key(password, "alice#example.org", FAST_KDF_FOR_TESTS)
    assert key != login_key(password, "bob#example.org", FAST_KDF_FOR_TESTS)
    if unicodedata.normalize("NFC", other) != unicodedata.normalize("NFC", password):
        assert key != login_key(other, "alice#example.org", FAST_KDF_FOR_TESTS)


def test_default_kdf_is_argon2id_64mib() -> None:
    keys = ProfileKeys.derive("pass phrase", bytes(16))
    assert len(keys.verifier) == 32
    assert "secret" in repr(keys.pickle_key)


@settings(max_examples=50)
@given(data=st.binary(max_size=300), label=st.text(max_size=20))
def test_secret_box_round_trip_and_binding(data: bytes, label: str) -> None:
    box = SecretBox(secrets.token_bytes(32))
    sealed = box.seal(data, label)
    assert box.open(sealed, label) == data
    with pytest.raises(DecryptionFailed):
        box.open(sealed, label + "x")
    with pytest.raises(DecryptionFailed):
        SecretBox(secrets.token_bytes(32)).open(sealed, label)
    tampered = bytearray(sealed)
    tampered[-1] ^= 1
    with pytest.raises(DecryptionFailed):
        box.open(bytes(tampered), label)


def test_identity_key_export_import_and_seal() -> None:
    key = IdentityKey.generate()
    assert IdentityKey.from_private_bytes(key.private_bytes()).public_key == key.public_key
    box = SecretBox(secrets.token_bytes(32))
    assert open_identity(seal_identity(key, box), box).public_key == key.public_key


def test_device_list_verification() -> None:
    bob = make_party("bob#b.example", ["B1"])
    listed = [bob.devices["B1"].load_device().listed()]
    signed = bob.identity.sign_device_list(bob.address, 3, listed)
    ok = verify_device_list(
        signed, address=bob.address, pinned_identity_key=bob.identity.public_key
    )
    assert ok.version == 3
    assert ok.device("B1").curve25519 == listed[0].curve25519
    with pytest.raises(IdentityKeyChanged):
        verify_device_list(
            signed, address=bob.address, pinned_identity_key=IdentityKey.generate().public_key
        )
    with pytest.raises(UntrustedDevice):
        verify_device_list(signed, address="eve#b.example", pinned_identity_key=None)
    forged = signed.model_copy(update={"version": 4})
    with pytest.raises(UntrustedDevice):
        verify_device_list(forged, address=bob.address, pinned_identity_key=None)
    mallory = IdentityKey.generate().sign_device_list(bob.address, 5, listed)
    with pytest.raises(IdentityKeyChanged):
        verify_device_list(
            mallory, address=bob.address, pinned_identity_key=bob.identity.public_key
        )


_BOB = make_party("bob#b.example", ["B1", "B2"])


@settings(max_examples=50, deadline=None)
@given(seen=st.integers(1, 6), version=st.integers(1, 6), same_devices=st.booleans())
def test_a_list_older_than_one_seen_is_refused(seen: int, version: int, same_devices: bool) -> None:
    """Only a newer version, or the very list already seen, passes: a server cannot
    hand back the list from before a revocation, nor a second list under one version."""
    devices = [_BOB.devices[d].load_device().listed() for d in ("B1", "B2")]
    newest = _BOB.identity.sign_device_list(_BOB.address, seen, devices[:1])
    offered = verify_device_list(
        _BOB.identity.sign_device_list(
            _BOB.address, version, devices[:1] if same_devices else devices
        ),
        address=_BOB.address,
        pinned_identity_key=_BOB.identity.public_key,
    )
    check_not_older(offered, None)  # nothing seen yet: any version
    if version > seen or (version == seen and same_devices):
        check_not_older(offered, (seen, newest.signature))
    else:
        with pytest.raises(UntrustedDevice, match=r"older|two different"):
            check_not_older(offered, (seen, newest.signature))


def test_signature_purposes_are_not_interchangeable() -> None:
    device = Device.create("bob#b.example", "B1")
    keys = device.device_keys()
    otk = device.new_one_time_keys(1)[0]
    verify_device_keys(keys, device.listed(), "bob#b.example")
    verify_one_time_key(otk, device.listed())
    body = model_dump(keys)
    signing.verify(signing.DEVICE_KEYS, body, keys.signature, keys.ed25519)
    for purpose in (signing.ONE_TIME_KEY, signing.DEVICE_LIST):
        with pytest.raises(BadSignature):
            signing.verify(purpose, body, keys.signature, keys.ed25519)
    with pytest.raises(BadSignature):
        signing.verify(signing.DEVICE_KEYS, model_dump(otk), otk.signature, keys.ed25519)
    # an identity signature over a device list cannot pass as device keys
    identity = IdentityKey.generate()
    dl = identity.sign_device_list("bob#b.example", 1, [device.listed()])
    with pytest.raises(BadSignature):
        signing.verify(signing.DEVICE_KEYS, model_dump(dl), dl.signature, identity.public_key)


def test_one_time_keys_are_signed_and_fallback_flagged() -> None:
    device = Device.create("bob#b.example", "B1")
    keys = device.new_one_time_keys(10)
    assert len(keys) == 10
    assert not any(k.fallback for k in keys)
    fallback = device.new_fallback_key()
    assert fallback.fallback
    verify_one_time_key(fallback, device.listed())
    other = Device.create("bob#b.example", "B1")
    with pytest.raises(UntrustedDevice):
        verify_one_time_key(fallback, other.listed())
    device.mark_published()
    assert device.new_one_time_keys(0) == []


def test_device_pickle_round_trip_and_wrong_key() -> None:
    device = Device.create("bob#b.example", "B1")
    key = PickleKey(secrets.token_bytes(32))
    pickle = device.pickle(key)
    assert Device.from_pickle(pickle, key, "bob#b.example", "B1").curve25519 == device.curve25519
    with pytest.raises(DecryptionFailed):
        Device.from_pickle(pickle, PickleKey(secrets.token_bytes(32)), "bob#b.example", "B1")
    with pytest.raises(ValueError, match="32 bytes"):
        PickleKey(b"short")


@pytest.mark.parametrize("point", sorted(LOW_ORDER_POINTS))
def test_low_order_curve_keys_are_refused(point: bytes) -> None:
    with pytest.raises(InvalidKey):
        curve25519_key(b64.encode(point))
    high = point[:31] + bytes([point[31] | 0x80])
    with pytest.raises(InvalidKey):
        curve25519_key(b64.encode(high))


def test_malformed_curve_keys_are_refused() -> None:
    with pytest.raises(InvalidKey):
        curve25519_key("not base64!")
    with pytest.raises(InvalidKey):
        curve25519_key(b64.encode(bytes(31)))
    assert curve25519_key(Device.create("a#b.c", "D").curve25519)


def test_low_order_key_in_device_list_is_refused() -> None:
    bob = make_party("bob#b.example", ["B1"])
    listed = (
        bob.devices["B1"]
        .load_device()
        .listed()
        .model_copy(update={"curve25519": b64.encode(bytes(32))})
    )
    signed = bob.identity.sign_device_list(bob.address, 1, [listed])
    with pytest.raises(InvalidKey):
        verify_device_list(signed, address=bob.address, pinned_identity_key=None)
