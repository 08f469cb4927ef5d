"""Checking a friend's account identity key out of band: safety number, QR, SAS.

- **Safety number**: 60 digits, the same on both sides. Each side's half is 30
  digits from 5200 iterations of SHA-512 over its identity key and address (as
  Signal does); the two halves are ordered, so the number does not depend on who
  looks at it.
- **QR payload**: `emsg-verify:1:` and the unpadded base64url of the canonical
  JSON `{"a", "a_key", "b", "b_key"}`: the scanner's peer `a` with its own key and
  the key it pinned for the scanner `b`. The scanner checks both.
- **SAS**: vodozemac's `Sas`, wrapped in a commit-then-reveal exchange
  (`sas_start` commits to the key, `sas_key` reveals it), then both people compare
  seven emoji or three four-digit numbers, and each side MACs its own identity key
  under the shared secret (`sas_mac`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from typing import Any, Final

import vodozemac

from emsg.crypto.errors import VerificationFailed
from emsg.proto import b64
from emsg.proto.errors import EmsgError
from emsg.proto.jsoncodec import canonical, loads_strict

ITERATIONS: Final = 5200
QR_PREFIX: Final = "emsg-verify:1:"


def _half(address: str, identity_key: str) -> str:
    key = b64.decode(identity_key)
    digest = hashlib.sha512(b"\x00\x00" + key + address.encode()).digest()
    for _ in range(ITERATIONS):
        digest = hashlib.sha512(digest + key).digest()
    chunks = (int.from_bytes(digest[i : i + 5], "big") % 100_000 for i in range(0, 30, 5))
    return "".join(f"{c:05d}" for c in chunks)


def safety_number(address_a: str, key_a: str, address_b: str, key_b: str) -> str:
    """60 digits in 12 groups of five, identical whichever side computes it."""
    digits = "".join(sorted((_half(address_a, key_a), _half(address_b, key_b))))
    return " ".join(digits[i : i + 5] for i in range(0, 60, 5))


def qr_payload(me: str, my_key: str, peer: str, peer_key: str) -> str:
    """What this side shows: itself with its own key, and the peer with the key it pinned."""
    body = canonical({"a": me, "a_key": my_key, "b": peer, "b_key": peer_key})
    return QR_PREFIX + base64.urlsafe_b64encode(body).decode().rstrip("=")


def check_qr(payload: str, *, me: str, my_key: str, peer: str, pinned_peer_key: str) -> None:
    """Raise `VerificationFailed` unless the payload `peer` shows agrees with both keys."""
    text = payload.strip()
    if not text.startswith(QR_PREFIX):
        raise VerificationFailed("this is not an EMSG verification code")
    raw = text.removeprefix(QR_PREFIX)
    try:
        body: Any = loads_strict(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (ValueError, EmsgError) as exc:  # binascii.Error is a ValueError
        raise VerificationFailed(f"the verification code is damaged ({exc})") from None
    if not isinstance(body, dict) or set(body) != {"a", "a_key", "b", "b_key"}:
        raise VerificationFailed("the verification code is damaged")
    if body["a"] != peer or body["b"] != me:
        raise VerificationFailed(f"this code is from {body['a']} for {body['b']}")
    if not hmac.compare_digest(str(body["a_key"]), pinned_peer_key):
        raise VerificationFailed(f"{peer}'s identity key differs from the one pinned here")
    if not hmac.compare_digest(str(body["b_key"]), my_key):
        raise VerificationFailed(f"{peer} has pinned another identity key for you")


# --- SAS ----------------------------------------------------------------------------

# The Matrix SAS emoji table (index -> emoji, name), so people on any client agree.
EMOJI: Final = (
    ("🐶", "Dog"), ("🐱", "Cat"), ("🦁", "Lion"), ("🐎", "Horse"), ("🦄", "Unicorn"),
    ("🐷", "Pig"), ("🐘", "Elephant"), ("🐰", "Rabbit"), ("🐼", "Panda"), ("🐓", "Rooster"),
    ("🐧", "Penguin"), ("🐢", "Turtle"), ("🐟", "Fish"), ("🐙", "Octopus"),
    ("🦋", "Butterfly"), ("🌷", "Flower"), ("🌳", "Tree"), ("🌵", "Cactus"),
    ("🍄", "Mushroom"), ("🌏", "Globe"), ("🌙", "Moon"), ("☁️", "Cloud"), ("🔥", "Fire"),
    ("🍌", "Banana"), ("🍎", "Apple"), ("🍓", "Strawberry"), ("🌽", "Corn"), ("🍕", "Pizza"),
    ("🎂", "Cake"), ("❤️", "Heart"), ("😀", "Smiley"), ("🤖", "Robot"), ("🎩", "Hat"),
    ("👓", "Glasses"), ("🔧", "Spanner"), ("🎅", "Santa"), ("👍", "Thumbs Up"),
    ("☂️", "Umbrella"), ("⌛", "Hourglass"), ("⏰", "Clock"), ("🎁", "Gift"),
    ("💡", "Light Bulb"), ("📕", "Book"), ("✏️", "Pencil"), ("📎", "Paperclip"),
    ("✂️", "Scissors"), ("🔒", "Lock"), ("🔑", "Key"), ("🔨", "Hammer"), ("☎️", "Telephone"),
    ("🏁", "Flag"), ("🚂", "Train"), ("🚲", "Bicycle"), ("✈️", "Aeroplane"), ("🚀", "Rocket"),
    ("🏆", "Trophy"), ("⚽", "Ball"), ("🎸", "Guitar"), ("🎺", "Trumpet"), ("🔔", "Bell"),
    ("⚓", "Anchor"), ("🎧", "Headphones"), ("📁", "Folder"), ("📌", "Pin"),
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class SasParty:
    address: str
    device_id: str
    flow: str


@dataclass(frozen=True, slots=True)
class ShortCode:
    emoji: tuple[tuple[str, str], ...]
    decimals: tuple[int, int, int]

    def emoji_text(self) -> str:
        return "  ".join(f"{e} {name}" for e, name in self.emoji)

    def decimal_text(self) -> str:
        return " ".join(str(d) for d in self.decimals)


def commitment(public_key: str) -> str:
    return b64.encode(hashlib.sha256(b"emsg.sas.commit.v1\x00" + public_key.encode()).digest())


class SasExchange:
    """One side of an interactive verification, sans-I/O."""

    def __init__(self, me: SasParty) -> None:
        self.me = me
        self._sas = vodozemac.Sas()
        self.public_key = self._sas.public_key.to_base64()
        self._established: vodozemac.EstablishedSas | None = None
        self._info = ""
        self._them: SasParty | None = None

    @property
    def commitment(self) -> str:
        return commitment(self.public_key)

    def reveal(self, them: SasParty, their_commitment: str, their_key: str) -> ShortCode:
        """Their key arrived after their commitment: derive the short code to compare."""
        if not hmac.compare_digest(commitment(their_key), their_commitment):
            raise VerificationFailed("the other side's SAS key does not match its commitment")
        try:
            peer_key = vodozemac.Curve25519PublicKey.from_base64(their_key)
            self._established = self._sas.diffie_hellman(peer_key)
        except (vodozemac.SasException, vodozemac.KeyException, ValueError) as exc:
            raise VerificationFailed(f"bad SAS key: {exc}") from None
        self._them = them
        parties = sorted(
            [
                (self.me.address, self.me.device_id, self.me.flow, self.public_key),
                (them.address, them.device_id, them.flow, their_key),
            ]
        )
        self._info = "EMSG_SAS_V1|" + "|".join(",".join(p) for p in parties)
        sas_bytes = self._established.bytes(self._info)
        emoji = tuple(EMOJI[i] for i in sas_bytes.emoji_indices)
        d = sas_bytes.decimals
        return ShortCode(emoji, (d[0], d[1], d[2]))

    def _mac_info(self, sender: SasParty, receiver: SasParty) -> str:
        return f"{self._info}|MAC|{sender.address},{sender.device_id}>{receiver.address}"

    def mac_of_own_key(self, identity_key: str) -> str:
        if self._established is None or self._them is None:
            raise VerificationFailed("no SAS secret yet")
        return self._established.calculate_mac(identity_key, self._mac_info(self.me, self._them))

    def check_their_mac(self, identity_key: str, mac: str) -> None:
        if self._established is None or self._them is None:
            raise VerificationFailed("no SAS secret yet")
        try:
            self._established.verify_mac(identity_key, self._mac_info(self._them, self.me), mac)
        except (vodozemac.SasException, ValueError):
            raise VerificationFailed("the other side's identity key MAC does not verify") from None
