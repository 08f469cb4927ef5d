"""Addresses and identifiers: parsed once, canonical, look-alikes refused."""

from __future__ import annotations

import contextlib
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from emsg.proto.errors import InvalidAddress, InvalidIdentifier
from emsg.proto.ids import Address, DeviceId, Domain, TxnId

locals_ = st.from_regex(r"[a-z0-9](?:[a-z0-9_-]{0,20}[a-z0-9])?", fullmatch=True)
# IDNA 2008 reserves hyphens in positions 3 and 4 for A-labels (`xn--`).
labels = st.from_regex(r"[a-z](?:[a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True).filter(
    lambda label: label[2:4] != "--"
)
domains = st.lists(labels, min_size=1, max_size=4).map(".".join)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("ALICE#Domain.Example", "alice#domain.example"),
        ("  bob#im.example.org ", "bob#im.example.org"),
        ("a.b_c-d#x.y", "a.b_c-d#x.y"),
        ("bob#bücher.de", "bob#xn--bcher-kva.de"),
        ("bob#EXAMPLE.ORG.", "bob#example.org"),
        ("carol#localhost:8448", "carol#localhost:8448"),
    ],
)
def test_valid_addresses_are_normalised(raw: str, expected: str) -> None:
    assert str(Address.parse(raw)) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "a#b#c", "#d", "u#", "nohash", "", "#", "al ice#x.y", ".alice#x.y", "alice.#x.y",
        "al..ice#x.y", "a" * 65 + "#x.y", "аlice#x.y",  # Cyrillic а
        "alice#exаmple.org",  # Cyrillic а inside a Latin label
        "alice#-x.y", "alice#x_y.z", "alice#x.y:0", "alice#x.y:99999", "alice#x.y:8a",
        "alice#" + "a" * 64 + ".org", "ａlice#x.y",  # fullwidth a
        "alice#ab--cd.org",  # hyphens in positions 3-4 are for A-labels only
        "\u212aate#x.y",  # KELVIN SIGN, which str.lower() folds to an ASCII k
    ],
)  # fmt: skip
def test_invalid_addresses_are_refused(raw: str) -> None:
    with pytest.raises(InvalidAddress):
        Address.parse(raw)


def test_reserved_locals_are_flagged() -> None:
    assert Address.parse("Postmaster#x.y").is_reserved
    assert not Address.parse("postman#x.y").is_reserved


@given(locals_, domains)
def test_round_trip(local: str, domain: str) -> None:
    address = Address.parse(f"{local}#{domain}")
    assert Address.parse(str(address)) == address
    assert Address.parse(str(address).upper()) == address


@given(st.text(max_size=80))
def test_parse_never_crashes(raw: str) -> None:
    try:
        address = Address.parse(raw)
    except InvalidAddress:
        return
    assert str(address).isascii()
    assert Address.parse(str(address)) == address


@given(st.text(max_size=30), st.characters(min_codepoint=0x80), st.text(max_size=30))
def test_a_local_part_with_any_character_beyond_ascii_is_refused(
    before: str, other: str, after: str
) -> None:
    with pytest.raises(InvalidAddress):
        Address.parse(f"a{before}{other}{after}z#x.y")


@given(st.text(alphabet=string.printable, max_size=70))
def test_domain_parse_never_crashes(raw: str) -> None:
    with contextlib.suppress(InvalidAddress):
        Domain.parse(raw)


def test_device_and_txn_ids() -> None:
    assert str(DeviceId.parse("ABC_def-1")) == "ABC_def-1"
    assert str(TxnId.parse("m1.2~3")) == "m1.2~3"
    for bad in ["", "a b", "x" * 65, "é"]:
        with pytest.raises(InvalidIdentifier):
            DeviceId.parse(bad)
    with pytest.raises(InvalidIdentifier):
        TxnId.parse("a/b")
