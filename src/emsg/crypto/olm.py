"""Olm 1:1 encryption of `Content` between devices, with protocol.md §9's checks.

`Olm` binds a `CryptoStore` to this device. It reloads the account from the store
whenever it needs it, so two processes sharing a profile never act on a stale
account.

The store stays the truth for sessions, but unpickling one per message is most of
the cost of a message, so live vodozemac sessions are kept in memory keyed by the
exact pickle they were last saved as. Every use reads the pickles from the store
(in the caller's transaction) and reuses the live session only when the stored
pickle is the one it was saved as; a pickle written by another process, or rolled
back with its transaction, simply misses and is unpickled. A session taken for a
decryption that fails is dropped, never put back, so a corrupt, forged or
misaddressed message can neither advance nor wedge a session: the next message
starts again from the stored, last good state.

Every change is saved before its ciphertext or plaintext can leave the caller's
transaction. Inside one, a session that advances is pickled and written once, just
before the transaction commits (`CryptoStore.defer_to_commit`), so a burst of
messages to or from one device costs one pickle, not one each; until then the
session itself is the newest state of its id. A rollback drops those states, and
the stored pickles are the last good ones again. vodozemac leaves a session
untouched when a decryption fails (a unit test holds it to that), so a failure
on such a session keeps it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

import vodozemac
from pydantic import ValidationError

from emsg.crypto import replay
from emsg.crypto.curve import curve25519_key
from emsg.crypto.device import Device, verify_device_keys, verify_one_time_key
from emsg.crypto.errors import ContentRejected, DecryptionFailed, UntrustedDevice
from emsg.crypto.identity import VerifiedDeviceList
from emsg.crypto.keys import PickleKey
from emsg.crypto.store import CryptoStore
from emsg.proto import b64
from emsg.proto.content import ANY_CONTENT, AnyContent, ContentHeader, ContentType
from emsg.proto.errors import EmsgError
from emsg.proto.jsoncodec import loads_strict
from emsg.proto.wire import (
    MAX_CIPHERTEXT,
    ClaimedDevice,
    Envelope,
    OutgoingEnvelope,
    why_refused,
)

PRE_KEY, NORMAL = 0, 1
# Device-to-device contents and who may send them (protocol.md §9).
OWN_ACCOUNT_ONLY: Final = frozenset(
    {ContentType.IDENTITY_SHARE, ContentType.CONTACTS_SHARE, ContentType.HISTORY_SHARE}
)
PEER_ONLY: Final = frozenset({ContentType.SAS_START, ContentType.SAS_KEY, ContentType.SAS_MAC})
# Live sessions kept in memory; past this many (stale entries included) start over.
MAX_LIVE_SESSIONS: Final = 4096


@dataclass(frozen=True, slots=True)
class Decrypted:
    """A content that decrypted and passed every §9 check."""

    content: AnyContent
    sender: str
    sender_device: str
    used_one_time_key: bool  # a new inbound session: time to check the key count


def encode_content(content: ContentHeader) -> bytes:
    # the same bytes as jsoncodec.dumps(content.model_dump(mode="json", by_alias=True))
    return content.model_dump_json(by_alias=True).encode()


def decode_content(plaintext: bytes) -> AnyContent:
    try:
        raw = loads_strict(plaintext)
        if isinstance(raw, dict) and "type" not in raw:
            raw = {**raw, "type": "text"}  # `type` was optional for text in the first release
        return ANY_CONTENT.validate_python(raw)
    except (EmsgError, ValidationError) as exc:
        what = why_refused(exc)
        raise ContentRejected(f"the decrypted content is malformed: {what}") from None


class Olm:
    """This device's end of every Olm session, over a `CryptoStore`."""

    def __init__(self, store: CryptoStore, key: PickleKey, address: str, device_id: str) -> None:
        self._store = store
        self._key = key
        self.address = address
        self.device_id = device_id
        # pickle -> the session in exactly the state that pickle holds
        self._live: dict[str, vodozemac.Session] = {}
        # peer key -> session id -> session, advanced in the store's open transaction
        # and not saved yet, least recently used first; None while nothing is deferred
        self._unsaved: dict[str, dict[str, vodozemac.Session]] | None = None
        self._curve25519: str | None = None

    def load_device(self) -> Device:
        pickle = self._store.load_account()
        if pickle is None:
            raise DecryptionFailed("this profile has no device account")
        return Device.from_pickle(pickle, self._key, self.address, self.device_id)

    def save_device(self, device: Device) -> None:
        self._store.save_account(device.pickle(self._key))

    def has_session(self, peer_curve25519: str) -> bool:
        unsaved = self._unsaved is not None and bool(self._unsaved.get(peer_curve25519))
        return unsaved or self._store.has_session(peer_curve25519)

    @property
    def curve25519(self) -> str:
        """This device's Curve25519 key: fixed for the life of the device's account."""
        if self._curve25519 is None:
            self._curve25519 = self.load_device().curve25519
        return self._curve25519

    def _take_session(self, pickle: str) -> vodozemac.Session:
        """The session `pickle` holds, now owned by the caller: save it or drop it."""
        session = self._live.pop(pickle, None)
        return session if session is not None else self._unpickle_session(pickle)

    def _put_session(self, pickle: str, session: vodozemac.Session) -> None:
        if len(self._live) >= MAX_LIVE_SESSIONS:
            self._live.clear()
        self._live[pickle] = session

    def _save_session(self, peer_key: str, session: vodozemac.Session) -> None:
        """Make `session` the newest state of its id: written now, or at commit."""
        if self._unsaved is None:
            if not self._store.defer_to_commit(self._write_unsaved, self._drop_unsaved):
                self._write_session(peer_key, session)
                return
            self._unsaved = {}
        sessions = self._unsaved.setdefault(peer_key, {})
        session_id = session.session_id
        sessions.pop(session_id, None)  # re-inserted as the most recently used
        sessions[session_id] = session

    def _write_session(self, peer_key: str, session: vodozemac.Session) -> None:
        pickle = session.pickle(self._key.raw)
        self._store.save_session(peer_key, session.session_id, pickle)
        self._put_session(pickle, session)

    def _write_unsaved(self) -> None:
        unsaved, self._unsaved = self._unsaved or {}, None
        for peer_key, sessions in unsaved.items():
            for session in sessions.values():  # oldest first: the last is the newest
                self._write_session(peer_key, session)

    def _drop_unsaved(self) -> None:
        self._unsaved = None

    def _unsaved_with(self, peer_key: str) -> list[vodozemac.Session]:
        """The unsaved sessions with `peer_key`, most recently used first."""
        if self._unsaved is None or peer_key not in self._unsaved:
            return []
        return list(reversed(self._unsaved[peer_key].values()))

    def _sessions_with(self, peer_key: str) -> Iterator[tuple[str | None, vodozemac.Session]]:
        """Every session with `peer_key`, most recently used first, each with the stored
        pickle it was taken from (None for an unsaved one, which stays where it is).

        A session taken from a pickle is the caller's: save it or put it back.
        """
        unsaved = self._unsaved_with(peer_key)
        for session in unsaved:
            yield None, session
        skip = {s.session_id for s in unsaved}
        for session_id, pickle in self._store.load_sessions(peer_key):
            if session_id not in skip:
                yield pickle, self._take_session(pickle)

    # --- sending -------------------------------------------------------------------

    def encrypt(
        self,
        content: ContentHeader,
        peer: VerifiedDeviceList,
        device_id: str,
        claimed: ClaimedDevice | None = None,
    ) -> OutgoingEnvelope:
        """Encrypt `content` to one device of a verified list.

        Reuses the newest session with that device; otherwise `claimed` (from
        `/keys/claim`) must hold its device keys and a one-time key, both of which
        are checked against the verified list before a session is made.
        """
        listed = peer.device(device_id)
        peer_key = curve25519_key(listed.curve25519)
        if content.from_ != self.address or content.from_device != self.device_id:
            raise ContentRejected("content must name this device as its sender")
        newest = next(self._sessions_with(listed.curve25519), None)
        if newest is not None:
            session = newest[1]
        else:
            if claimed is None or claimed.one_time_key is None:
                raise UntrustedDevice(
                    f"no session with {peer.address}/{device_id} and no one-time key to start one"
                )
            verify_device_keys(claimed.device_keys, listed, peer.address)
            one_time_key = verify_one_time_key(claimed.one_time_key, listed)
            session = self.load_device().account.create_outbound_session(peer_key, one_time_key)
        message_type, body = session.encrypt(encode_content(content)).to_parts()
        text = b64.encode(body)
        if len(text) > MAX_CIPHERTEXT:
            # Dropped: the stored session is still the state before this (an unsaved
            # one keeps the unused message key, a gap its receiver skips over).
            raise ContentRejected(f"too large to send: {len(text)} > {MAX_CIPHERTEXT} characters")
        self._save_session(listed.curve25519, session)
        # Validated from a plain dict: pydantic-core does that in 2.6 us where
        # `model_construct` of the two models, which checks nothing, takes 4.9.
        return OutgoingEnvelope.model_validate(
            {
                "to": peer.address,
                "device_id": device_id,
                "ciphertext": {
                    "type": 0 if message_type == PRE_KEY else 1,
                    "body": text,
                    "sender_key": self.curve25519,
                },
            }
        )

    # --- receiving -----------------------------------------------------------------

    def decrypt(self, envelope: Envelope, sender_devices: VerifiedDeviceList) -> Decrypted:
        """Decrypt an envelope for this device and enforce protocol.md §9.

        `sender_devices` is the sender's device list, verified by the caller under
        the identity key it pinned (or this account's own key for its own devices).
        Raises `DecryptionFailed` (or its `ReplayedMessage`/`ContentRejected`).
        """
        self._check_envelope(envelope, sender_devices)
        ciphertext = envelope.ciphertext
        try:
            body = b64.decode(ciphertext.body)
            message = vodozemac.AnyOlmMessage.from_parts(ciphertext.type, body)
        except (EmsgError, ValueError):
            raise DecryptionFailed("the ciphertext is not an Olm message") from None
        pre_key = message.to_pre_key() if ciphertext.type == PRE_KEY else None
        if ciphertext.type == PRE_KEY and pre_key is None:
            raise DecryptionFailed("a type 0 ciphertext that is not a pre-key message")

        # A pre-key message of a session this device has is decrypted by that session
        # or refused (its message key is used up), so only a message that would start
        # a new session needs the replay cache. Sessions are never deleted.
        plaintext = self._decrypt_existing(ciphertext.sender_key, message, pre_key, body)
        used_one_time_key = False
        if plaintext is None:
            if pre_key is None:
                raise DecryptionFailed("no session with this sender decrypts the message")
            replay.check_fresh(self._store, body)
            plaintext = self._decrypt_new(ciphertext.sender_key, pre_key)
            replay.remember(self._store, body)
            used_one_time_key = True

        content = decode_content(plaintext)
        self._check_content(envelope, content)
        return Decrypted(content, envelope.sender, envelope.sender_device, used_one_time_key)

    def _check_envelope(self, envelope: Envelope, sender_devices: VerifiedDeviceList) -> None:
        if (envelope.recipient, envelope.device_id) != (self.address, self.device_id):
            raise DecryptionFailed("the envelope is addressed to another device")
        if sender_devices.address != envelope.sender:
            raise UntrustedDevice("the device list passed is not the sender's")
        listed = sender_devices.device(envelope.sender_device)
        if listed.curve25519 != envelope.ciphertext.sender_key:
            raise UntrustedDevice(
                f"sender key is not the key of {envelope.sender}/{envelope.sender_device}"
            )
        curve25519_key(envelope.ciphertext.sender_key)  # refuses low-order keys

    def _check_content(self, envelope: Envelope, content: AnyContent) -> None:
        if content.from_ != envelope.sender or content.from_device != envelope.sender_device:
            raise ContentRejected("the content names another sender than the envelope")
        if envelope.sender == self.address:
            # a copy of our own message from another of our devices: `to` is the peer
            if envelope.sender_device == self.device_id:
                raise ContentRejected("a message from this very device")
            if content.type in PEER_ONLY:
                raise ContentRejected(f"{content.type} comes only from another account")
        elif content.to != self.address:
            raise ContentRejected("the content is addressed to someone else")
        elif content.type in OWN_ACCOUNT_ONLY:
            raise ContentRejected(f"{content.type} comes only from this account's own devices")

    def _unpickle_session(self, pickle: str) -> vodozemac.Session:
        try:
            return vodozemac.Session.from_pickle(pickle, self._key.raw)
        except (vodozemac.PickleException, ValueError):
            raise DecryptionFailed("a session pickle does not decrypt") from None

    def _decrypt_existing(
        self,
        sender_key: str,
        message: vodozemac.AnyOlmMessage,
        pre_key: vodozemac.PreKeyMessage | None,
        body: bytes,
    ) -> bytes | None:
        for pickle, session in self._sessions_with(sender_key):
            if pre_key is not None and not session.session_matches(pre_key):
                if pickle is not None:
                    self._put_session(pickle, session)  # untouched
                continue
            try:
                plaintext = session.decrypt(message)
            except (vodozemac.OlmDecryptionException, ValueError):
                # A taken session is dropped: the stored pickle still holds the last
                # good state. An unsaved one stays: a failure leaves it untouched.
                if pre_key is not None:
                    # the pre-key message belongs to this session and still fails
                    replay.check_fresh(self._store, body)  # the precise reason, if known
                    raise DecryptionFailed("the pre-key message does not decrypt") from None
                continue
            self._save_session(sender_key, session)
            return plaintext
        return None

    def _decrypt_new(self, sender_key: str, pre_key: vodozemac.PreKeyMessage) -> bytes:
        device = self.load_device()
        try:
            session, plaintext = device.account.create_inbound_session(
                curve25519_key(sender_key), pre_key
            )
        except (vodozemac.SessionCreationException, ValueError):
            raise DecryptionFailed("the pre-key message does not start a session") from None
        self.save_device(device)  # the one-time key is used up
        self._save_session(sender_key, session)
        return plaintext
