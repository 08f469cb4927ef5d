"""Turning queued events into stored messages and contact changes.

Each event is processed in one store transaction together with the cursor, so a
crash either keeps all of it or none, and the server redelivers what was not
acknowledged. Duplicates are dropped by envelope id and by content id. Content
that fails protocol.md §9 is logged and dropped, never shown.
"""

from __future__ import annotations

import logging

from emsg.client.keyring import Keyring
from emsg.client.models import ClientEvent, ContactInfo, Message
from emsg.client.store import PinnedContact, ProfileStore, now_ms
from emsg.crypto.errors import CryptoError
from emsg.crypto.olm import Olm
from emsg.proto.errors import BadSignature, EmsgError, IdentityKeyChanged, NotFound
from emsg.proto.wire import Contact, Envelope, Event, EventKind

log = logging.getLogger(__name__)


def contact_info(
    contact: Contact, pinned: PinnedContact | None, state: str | None = None
) -> ContactInfo:
    return ContactInfo(
        address=contact.address,
        state=state or contact.state.value,
        message=contact.message,
        identity_key=pinned.identity_key
        if pinned and pinned.identity_key
        else contact.identity_key,
        verified=bool(pinned and pinned.verified),
        since=contact.since,
    )


class Inbox:
    def __init__(self, store: ProfileStore, olm: Olm, keyring: Keyring) -> None:
        self._store = store
        self._olm = olm
        self._keyring = keyring
        self.one_time_keys_used = 0

    async def process(self, event: Event) -> list[ClientEvent]:
        """Handle one event durably and return what the user should see (maybe nothing)."""
        if event.kind is EventKind.ENVELOPE and event.envelope is not None:
            return await self._envelope(event.pos, event.envelope)
        with self._store.transaction():
            out = self._contact_event(event)
            self._store.advance_cursor(event.pos)
        return out

    async def _envelope(self, pos: int, envelope: Envelope) -> list[ClientEvent]:
        try:
            devices = await self._keyring.for_sender(envelope.sender, envelope.sender_device)
        except (IdentityKeyChanged, CryptoError, BadSignature, NotFound) as exc:
            log.warning("dropping envelope %s from %s: %s", envelope.id, envelope.sender, exc)
            with self._store.transaction():
                self._store.mark_seen(envelope.id)
                self._store.advance_cursor(pos)
            return []
        # One transaction: seen id, session state, replay hash, history row and cursor.
        with self._store.transaction():
            self._store.advance_cursor(pos)
            if not self._store.mark_seen(envelope.id):
                return []  # a redelivery of an envelope already handled
            try:
                decrypted = self._olm.decrypt(envelope, devices)
            except EmsgError as exc:
                log.warning("dropping envelope %s from %s: %s", envelope.id, envelope.sender, exc)
                return []
            content = decrypted.content
            mine = envelope.sender == self._store.address
            message = Message(
                id=content.id,
                sender=content.from_,
                recipient=content.to,
                body=content.body,
                sent_at=content.sent_at,
                received_at=now_ms(),
                direction="out" if mine else "in",
            )
            new = self._store.add_message(message)
        if decrypted.used_one_time_key:
            self.one_time_keys_used += 1
        return [ClientEvent("message", message=message)] if new else []

    def _contact_event(self, event: Event) -> list[ClientEvent]:
        contact = event.contact
        if contact is None:
            return []
        pinned = self._store.contact(contact.address)
        if event.kind is EventKind.CONTACT_REQUEST:
            # The stated key is shown but pinned only when the user accepts.
            return [ClientEvent("contact_request", contact=contact_info(contact, None, "incoming"))]
        if event.kind is EventKind.CONTACT_ACCEPTED:
            key = pinned.identity_key if pinned else None
            updated = PinnedContact(
                contact.address,
                "friend",
                key,
                bool(pinned and pinned.verified),
                pinned.message if pinned else "",
                contact.since,
            )
            self._store.put_contact(updated)
            return [
                ClientEvent("contact_accepted", contact=contact_info(contact, updated, "friend"))
            ]
        if event.kind is EventKind.CONTACT_DECLINED:
            if pinned is not None:
                self._store.put_contact(
                    PinnedContact(
                        pinned.address,
                        "stranger",
                        pinned.identity_key,
                        pinned.verified,
                        "",
                        pinned.since,
                    )
                )
            return [
                ClientEvent("contact_declined", contact=contact_info(contact, pinned, "declined"))
            ]
        return []
