"""Turning queued events into stored messages and contact changes.

The events that arrived together are processed in one store transaction with the
cursor, so a crash either keeps all of them or none, and the server redelivers
what was not acknowledged. Duplicates are dropped by envelope id and by content id. Content
that fails protocol.md §9 is logged and dropped, never shown.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from emsg.client.devices import Devices
from emsg.client.keyring import Keyring
from emsg.client.models import ClientEvent, ContactInfo, Message
from emsg.client.store import PinnedContact, ProfileStore, now_ms
from emsg.crypto.errors import CryptoError, UntrustedDevice
from emsg.crypto.identity import VerifiedDeviceList, verify_device_list
from emsg.crypto.olm import Olm
from emsg.proto.content import AnyContent, ContactsShare, Content, HistoryShare, IdentityShare
from emsg.proto.errors import BadSignature, EmsgError, IdentityKeyChanged, NotFound
from emsg.proto.wire import Contact, Envelope, Event, EventKind

log = logging.getLogger(__name__)


def contact_info(
    contact: Contact,
    pinned: PinnedContact | None,
    state: str | None = None,
    key_changed: bool = False,
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
        key_changed=key_changed,
    )


class Inbox:
    def __init__(self, store: ProfileStore, olm: Olm, keyring: Keyring, devices: Devices) -> None:
        self._store = store
        self._olm = olm
        self._keyring = keyring
        self._devices = devices
        self.one_time_keys_used = 0
        # Verification contents (sas_*) go to whoever waits for them; else dropped.
        self.sas_contents: list[tuple[Envelope, AnyContent]] | None = None

    async def process(self, event: Event) -> list[ClientEvent]:
        """Handle one event durably and return what the user should see (maybe nothing)."""
        return await self.process_batch([event])

    async def process_batch(self, events: Sequence[Event]) -> list[ClientEvent]:
        """Handle events in queue order in one transaction with the cursor.

        A crash keeps all of them or none (the server redelivers what was not
        acknowledged); an envelope that fails to verify or decrypt is dropped alone.
        """
        if not events:
            return []
        # Device lists may need the network: look them up before the transaction.
        senders = [
            await self._sender_devices(e.envelope)
            if e.kind is EventKind.ENVELOPE and e.envelope is not None
            else None
            for e in events
        ]
        out: list[ClientEvent] = []
        with self._store.transaction():
            for event, devices in zip(events, senders, strict=True):
                if event.kind is EventKind.ENVELOPE and event.envelope is not None:
                    out += self._envelope(event.envelope, devices)
                elif event.kind is EventKind.BOUNCE:
                    out += self._bounce(event)
                else:
                    out += self._contact_event(event)
            self._store.advance_cursor(events[-1].pos)
        return out

    def _bounce(self, event: Event) -> list[ClientEvent]:
        bounce = event.bounce
        if bounce is None:
            return []
        detail = f"{bounce.reason}: {bounce.message}"
        log.warning("undeliverable to %s: %s", bounce.destination, detail)
        messages = self._store.mark_bounced([e.id for e in bounce.envelopes], bounce.reason)
        out = [ClientEvent("bounce", message=m, detail=detail) for m in messages]
        if bounce.contact is not None:
            pinned = self._store.contact(bounce.contact)
            if pinned is not None and pinned.state == "outgoing":
                self._store.remove_contact(bounce.contact)
            out.append(
                ClientEvent("bounce", detail=f"contact request to {bounce.contact}: {detail}")
            )
        return out

    async def _sender_devices(self, envelope: Envelope) -> VerifiedDeviceList | EmsgError:
        """The sender's verified device list, or why its envelope is to be dropped."""
        try:
            if self._keyring.identity is None:
                # Waiting for approval: only this account's own devices may write to us,
                # and what they send is checked against the approval code.
                if envelope.sender != self._store.address:
                    raise UntrustedDevice("a device waiting for approval takes nothing from others")
                raw = await self._keyring.fetch_raw(envelope.sender)
                return verify_device_list(raw, address=envelope.sender, pinned_identity_key=None)
            return await self._keyring.for_sender(envelope.sender, envelope.sender_device)
        except (IdentityKeyChanged, CryptoError, BadSignature, NotFound) as exc:
            return exc

    def _envelope(
        self, envelope: Envelope, devices: VerifiedDeviceList | EmsgError | None
    ) -> list[ClientEvent]:
        """Inside the batch's transaction: seen id, session state, replay hash, history."""
        if not self._store.mark_seen(envelope.id):
            return []  # a redelivery of an envelope already handled
        if not isinstance(devices, VerifiedDeviceList):
            log.warning("dropping envelope %s from %s: %s", envelope.id, envelope.sender, devices)
            if isinstance(devices, IdentityKeyChanged):
                return [self._key_changed_event(envelope.sender, devices.message)]
            return []
        try:
            decrypted = self._olm.decrypt(envelope, devices)
            out = self._content(envelope, decrypted.content, devices)
        except EmsgError as exc:
            log.warning("dropping envelope %s from %s: %s", envelope.id, envelope.sender, exc)
            return []
        if decrypted.used_one_time_key:
            self.one_time_keys_used += 1
        return out

    def _content(
        self, envelope: Envelope, content: AnyContent, devices: VerifiedDeviceList
    ) -> list[ClientEvent]:
        """Act on a decrypted content (inside the envelope's transaction)."""
        pending = self._keyring.identity is None
        if isinstance(content, IdentityShare):
            if not pending:
                return []  # already approved: nothing to learn
            self._devices.accept_identity_share(content, devices)
            return [ClientEvent("approved", detail=envelope.sender_device)]
        if pending:
            raise UntrustedDevice(f"{content.type} before this device was approved")
        if isinstance(content, Content):
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
            return [ClientEvent("message", message=message)] if new else []
        if isinstance(content, HistoryShare):
            return self._import_history(content)
        if isinstance(content, ContactsShare):
            self._devices.accept_contacts_share(content)
            return []
        if self.sas_contents is not None:
            self.sas_contents.append((envelope, content))
        return []

    def _import_history(self, share: HistoryShare) -> list[ClientEvent]:
        me, now, added = self._store.address, now_ms(), 0
        for item in share.messages:
            if me not in (item.from_, item.to):
                continue  # only this account's own conversations
            added += self._store.add_message(
                Message(
                    item.id,
                    item.from_,
                    item.to,
                    item.body,
                    item.sent_at,
                    now,
                    "out" if item.from_ == me else "in",
                )
            )
        return [ClientEvent("history", detail=str(added))] if added else []

    def _key_changed_event(self, address: str, why: str) -> ClientEvent:
        pinned = self._store.contact(address)
        info = ContactInfo(
            address=address,
            state=pinned.state if pinned else "stranger",
            message=why,
            identity_key=self._store.key_change(address),
            verified=bool(pinned and pinned.verified),
            since=pinned.since if pinned else None,
            key_changed=True,
        )
        return ClientEvent("key_changed", contact=info)

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
