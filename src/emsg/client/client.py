"""`Client`: the async library every EMSG front end is built on.

One `Client` is one profile folder (its SQLite store) and one device of one
account. It encrypts to every verified device of a recipient and of its own
account, receives by long-poll (`fetch`) or WebSocket (`listen`), and keeps
history, pinned identity keys and Olm state in the local store.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import TracebackType
from typing import Any, Final

import httpx
from websockets.exceptions import WebSocketException

from emsg.client.errors import DeviceNotApproved, NotLoggedIn, ProfileExists
from emsg.client.inbox import Inbox, contact_info
from emsg.client.keyring import Keyring
from emsg.client.models import ClientEvent, ContactInfo, Message
from emsg.client.store import PinnedContact, ProfileStore, now_ms
from emsg.client.transport import HttpApi, StreamSession, path_address
from emsg.crypto.errors import CryptoError
from emsg.crypto.identity import IdentityKey, VerifiedDeviceList, open_identity, seal_identity
from emsg.crypto.keys import KdfParams
from emsg.crypto.olm import Olm
from emsg.proto.content import Content
from emsg.proto.errors import (
    InvalidRequest,
    KeysExhausted,
    NoRequest,
    NotFound,
    ProtocolViolation,
    RateLimited,
    UnknownDevice,
)
from emsg.proto.ids import Address
from emsg.proto.wire import (
    MAX_ENVELOPES_PER_SEND,
    ClaimedDevice,
    Contact,
    ContactRequestBody,
    ContactsView,
    KeysClaimRequest,
    KeysClaimResult,
    LoginRequest,
    OutgoingEnvelope,
    PolicyBody,
    RegisterRequest,
    SendRequest,
    SendResult,
    Session,
    StrangerPolicy,
    SyncResult,
    WhoAmI,
)

log = logging.getLogger(__name__)

_SEND_ATTEMPTS: Final = 6
_MAX_BACKOFF: Final = 30.0
# A listener acks when its queue of received events runs dry, or after this many
# events or seconds, whichever comes first (an unacked event is only redelivered).
_ACK_EVERY_EVENTS: Final = 64
_ACK_EVERY_SECONDS: Final = 0.005


@functools.lru_cache(maxsize=1024)
def _canonical_address(raw: str) -> str:
    """`str(Address.parse(raw))`, remembered: IDNA mapping costs more than a message."""
    return str(Address.parse(raw))


def _default_server(address: Address) -> str:
    return f"https://{address.domain}"


class Client:
    """One device of one account, backed by a profile folder."""

    address: Address
    device_id: str
    server_url: str

    def __init__(self, store: ProfileStore, api: HttpApi, identity: IdentityKey) -> None:
        self._store = store
        self._api = api
        self._identity = identity
        self.address = Address.parse(store.address)
        self.device_id = store.device_id or ""
        self.server_url = store.server_url
        self._olm = Olm(store, store.keys.pickle_key, str(self.address), self.device_id)
        self._keyring = Keyring(api, store, self._olm, identity)
        self._inbox = Inbox(store, self._olm, self._keyring)
        # The stream `listen()` holds open, if any: sends are pipelined over it.
        self._stream: StreamSession | None = None

    # --- opening and closing -------------------------------------------------------

    @classmethod
    async def register(
        cls,
        home: Path,
        address: str,
        password: str,
        server: str | None = None,
        *,
        kdf: KdfParams = KdfParams(),
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> Client:
        home = Path(home)
        if ProfileStore.exists(home):
            raise ProfileExists(f"a profile already exists in {home}")
        addr = Address.parse(address)
        api = HttpApi(server or _default_server(addr), transport=transport)
        try:
            session = await api.call_model(
                Session, "POST", "/accounts", RegisterRequest(address=str(addr), password=password)
            )
            store = ProfileStore.create(
                home, password, address=session.address, server_url=api.server_url, kdf=kdf
            )
            identity = IdentityKey.generate()
            with store.transaction():
                store.save_identity(seal_identity(identity, store.keys.box))
                store.set_token(session.token)
                store.set_device_id(session.device_id)
            api.token = session.token
            client = cls(store, api, identity)
            await client._keyring.publish_device()
        except BaseException:
            await api.aclose()
            raise
        return client

    @classmethod
    async def login(
        cls,
        home: Path,
        address: str,
        password: str,
        server: str | None = None,
        *,
        kdf: KdfParams = KdfParams(),
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> Client:
        home = Path(home)
        addr = Address.parse(address)
        store: ProfileStore | None = None
        identity: IdentityKey | None = None
        if ProfileStore.exists(home):
            store = ProfileStore.open(home, password)
            if store.address != str(addr):
                store.close()
                raise ProfileExists(f"the profile in {home} belongs to {store.address}")
            sealed = store.load_identity()
            identity = None if sealed is None else open_identity(sealed, store.keys.box)
        api = HttpApi(
            server or (store.server_url if store else _default_server(addr)), transport=transport
        )
        try:
            session = await api.call_model(
                Session, "POST", "/login", LoginRequest(address=str(addr), password=password)
            )
            api.token = session.token
            if store is None or identity is None:
                # Without the identity key this device cannot join the device list.
                await api.call("POST", "/logout")
                raise DeviceNotApproved()
            old_device = store.device_id
            with store.transaction():
                store.reset_device()
                store.set_server_url(api.server_url)
                store.set_token(session.token)
                store.set_device_id(session.device_id)
                store.set_flag("published", False)
            client = cls(store, api, identity)
            await client._keyring.publish_device(drop_device=old_device)
        except BaseException:
            await api.aclose()
            if store is not None:
                store.close()
            raise
        return client

    @classmethod
    async def open(
        cls,
        home: Path,
        password: str,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> Client:
        store = ProfileStore.open(Path(home), password)
        try:
            sealed = store.load_identity()
            if sealed is None:
                raise DeviceNotApproved()
            identity = open_identity(sealed, store.keys.box)
        except BaseException:
            store.close()
            raise
        client = cls(store, HttpApi(store.server_url, store.token, transport=transport), identity)
        if store.token is not None and not store.flag("published"):
            await client._keyring.publish_device()  # finish a registration cut short
        return client

    async def aclose(self) -> None:
        await self._api.aclose()
        self._store.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _authed(self) -> HttpApi:
        if self._api.token is None:
            raise NotLoggedIn()
        return self._api

    # --- account -------------------------------------------------------------------

    async def whoami(self) -> dict[str, str]:
        me = await self._authed().get_model(WhoAmI, "/whoami")
        return {"address": me.address, "device_id": me.device_id}

    async def logout(self) -> None:
        await self._authed().call("POST", "/logout")
        self._store.set_token(None)
        self._api.token = None

    # --- contacts ------------------------------------------------------------------

    async def _view(self) -> ContactsView:
        return await self._authed().get_model(ContactsView, "/contacts")

    def _peer(self, address: str) -> str:
        peer = str(Address.parse(address))
        if peer == str(self.address):
            raise InvalidRequest("that is this account's own address")
        return peer

    def _pin(self, contact: Contact, identity_key: str, state: str | None = None) -> PinnedContact:
        old = self._store.contact(contact.address)
        pinned = PinnedContact(
            contact.address,
            state or contact.state.value,
            identity_key,
            bool(old and old.verified and old.identity_key == identity_key),
            contact.message,
            contact.since,
        )
        self._store.put_contact(pinned)
        return pinned

    async def add_contact(self, address: str, message: str = "") -> ContactInfo:
        peer = self._peer(address)
        devices = await self._keyring.fetch(peer)  # IdentityKeyChanged if it differs from a pin
        contact = await self._authed().call_model(
            Contact,
            "POST",
            "/contacts/requests",
            ContactRequestBody(to=peer, message=message, identity_key=self._identity.public_key),
        )
        return contact_info(contact, self._pin(contact, devices.identity_key))

    async def contact_requests(self) -> list[ContactInfo]:
        view = await self._view()
        out = [
            contact_info(c, self._store.contact(c.address) if c.state.value == "outgoing" else None)
            for c in view.contacts
            if c.state.value in ("incoming", "outgoing")
        ]
        for held in view.message_requests:
            pinned = self._store.contact(held.address)
            out.append(
                ContactInfo(
                    address=held.address,
                    state="message_request",
                    message=f"{held.held_messages} held message(s)",
                    identity_key=pinned.identity_key if pinned else None,
                    verified=bool(pinned and pinned.verified),
                    since=held.first_at,
                )
            )
        return out

    async def accept_contact(self, address: str) -> ContactInfo:
        peer = self._peer(address)
        view = await self._view()
        request = next(
            (c for c in view.contacts if c.address == peer and c.state.value == "incoming"), None
        )
        if request is None:
            if any(m.address == peer for m in view.message_requests):
                return await self.add_contact(peer)  # befriending releases held messages
            raise NoRequest(f"there is no contact request from {peer}")
        if request.identity_key is None:
            raise InvalidRequest(f"the request from {peer} states no identity key")
        # The list must be signed by the key stated in the request (and any pin).
        devices = await self._keyring.fetch(peer, expect_key=request.identity_key)
        contact = await self._authed().call_model(
            Contact, "POST", f"/contacts/requests/{path_address(peer)}/accept"
        )
        return contact_info(contact, self._pin(contact, devices.identity_key, "friend"))

    async def decline_contact(self, address: str) -> None:
        peer = self._peer(address)
        await self._authed().call("POST", f"/contacts/requests/{path_address(peer)}/decline")

    async def contacts(self) -> list[ContactInfo]:
        view = await self._view()
        out = []
        for contact in view.contacts:
            pinned = self._store.contact(contact.address)
            if pinned is not None and pinned.state != contact.state.value:
                pinned = self._pin(contact, pinned.identity_key or "", contact.state.value)
            out.append(contact_info(contact, pinned))
        return out

    async def blocked(self) -> list[str]:
        return list((await self._view()).blocked)

    async def block(self, address: str) -> None:
        await self._authed().call("PUT", f"/blocks/{path_address(self._peer(address))}")

    async def unblock(self, address: str) -> None:
        await self._authed().call("DELETE", f"/blocks/{path_address(self._peer(address))}")

    async def set_stranger_policy(self, policy: StrangerPolicy | str) -> StrangerPolicy:
        body = PolicyBody(strangers=StrangerPolicy(policy))
        return (await self._authed().call_model(PolicyBody, "PUT", "/policy", body)).strangers

    async def get_stranger_policy(self) -> StrangerPolicy:
        return (await self._authed().get_model(PolicyBody, "/policy")).strangers

    # --- sending -------------------------------------------------------------------

    async def send_text(self, to: str, body: str) -> Message:
        peer = _canonical_address(to)
        me = str(self.address)
        content = Content.model_validate(
            {
                "id": secrets.token_urlsafe(16),
                "from": me,
                "from_device": self.device_id,
                "to": peer,
                "body": body,
                "sent_at": now_ms(),
            }
        )
        message = Message(content.id, me, peer, body, content.sent_at, None, "out")
        try:
            try:
                await self._send_content(content, peer, message)
            except UnknownDevice:
                # A device list reused from cache named a device that has gone since.
                self._keyring.forget(peer)
                self._keyring.forget(me)
                await self._send_content(content, peer, message)
        except BaseException:
            self._store.remove_message(message.id)  # history keeps what was sent
            raise
        return message

    async def _send_content(self, content: Content, peer: str, message: Message) -> None:
        """Encrypt to every device, then send: the history row and every session the
        message advanced are saved in one commit before any ciphertext leaves."""
        me = str(self.address)
        mine = await self._keyring.fresh(me)
        targets: list[tuple[VerifiedDeviceList, list[str]]] = []
        if peer != me:
            theirs = await self._keyring.fresh(peer, tofu=True)
            targets.append((theirs, [d.device_id for d in theirs.devices]))
        own = [d.device_id for d in mine.devices if d.device_id != self.device_id]
        if own:
            targets.append((mine, own))
        claimed = [await self._claim(devices, device_ids) for devices, device_ids in targets]
        envelopes: list[OutgoingEnvelope] = []
        with self._store.transaction():
            for (devices, device_ids), keys in zip(targets, claimed, strict=True):
                out = self._encrypt_to(content, devices, device_ids, keys)
                if not out and devices is not mine:
                    raise KeysExhausted(f"no device of {peer} can receive a message right now")
                envelopes += out
            self._store.add_message(message)
        if envelopes:
            await self._send(envelopes)

    async def _claim(
        self, devices: VerifiedDeviceList, device_ids: list[str]
    ) -> dict[str, ClaimedDevice]:
        """One-time keys for the devices this device has no session with yet."""
        need = [d for d in device_ids if not self._olm.has_session(devices.device(d).curve25519)]
        if not need:
            return {}
        result = await self._authed().call_model(
            KeysClaimResult,
            "POST",
            "/keys/claim",
            KeysClaimRequest(address=devices.address, device_ids=need),
        )
        return {c.device_keys.device_id: c for c in result.devices}

    def _encrypt_to(
        self,
        content: Content,
        devices: VerifiedDeviceList,
        device_ids: list[str],
        claimed: dict[str, ClaimedDevice],
    ) -> list[OutgoingEnvelope]:
        out = []
        for device_id in device_ids:
            try:
                out.append(self._olm.encrypt(content, devices, device_id, claimed.get(device_id)))
            except CryptoError as exc:  # no key left, or a key that does not verify
                log.warning("not sending to %s/%s: %s", devices.address, device_id, exc)
        return out

    async def _send(self, envelopes: list[OutgoingEnvelope]) -> list[SendResult]:
        results = []
        for start in range(0, len(envelopes), MAX_ENVELOPES_PER_SEND):
            batch = SendRequest(envelopes=envelopes[start : start + MAX_ENVELOPES_PER_SEND])
            txn_id = secrets.token_urlsafe(18)
            results.append(await self._put_send(txn_id, batch))
        return results

    async def _put_send(self, txn_id: str, batch: SendRequest) -> SendResult:
        """Send over the open stream if there is one, else PUT until the server answers.

        Both routes take the same transaction id, so a send that failed on the stream
        and is repeated over HTTP is stored once.
        """
        stream = self._stream
        if stream is not None:
            try:
                return await stream.send(txn_id, list(batch.envelopes))
            except (OSError, WebSocketException, ProtocolViolation) as exc:
                log.info("stream send %s failed (%s); falling back to HTTP", txn_id, exc)
        delay = 0.25
        for attempt in range(_SEND_ATTEMPTS):
            try:
                return await self._authed().call_model(SendResult, "PUT", f"/send/{txn_id}", batch)
            except (httpx.TransportError, RateLimited) as exc:
                if attempt == _SEND_ATTEMPTS - 1:
                    raise
                wait = exc.retry_after if isinstance(exc, RateLimited) else delay
                log.info("send %s failed (%s); retrying in %.2fs", txn_id, exc, wait)
                await asyncio.sleep(min(wait, _MAX_BACKOFF))
                delay = min(delay * 2, _MAX_BACKOFF)
        raise AssertionError("unreachable")  # pragma: no cover

    # --- receiving -----------------------------------------------------------------

    async def fetch(self) -> list[Message]:
        api = self._authed()
        new: list[Message] = []
        while True:
            try:
                result = await api.get_model(
                    SyncResult, "/sync", since=self._store.cursor, timeout=0, limit=100
                )
            except httpx.TransportError:
                if new:  # already stored: return them; the next sync acknowledges them
                    log.warning("sync interrupted; returning the %d messages stored", len(new))
                    break
                raise
            if not result.events:
                break  # that request's `since` acknowledged everything processed
            for event in result.events:
                for item in await self._inbox.process(event):
                    if item.message is not None:
                        new.append(item.message)
            self._store.advance_cursor(result.next)
        await self._replenish_if_used()
        return new

    def history(self, with_: str | None = None) -> list[Message]:
        return self._store.history(None if with_ is None else str(Address.parse(with_)))

    async def listen(self) -> AsyncIterator[ClientEvent]:
        """Live events over the WebSocket; reconnects with backoff and resumes at the cursor."""
        delay = 0.5
        while True:
            token = self._authed().token or ""
            try:
                stream = await StreamSession.connect(
                    self._api.stream_url(), token, self._store.cursor
                )
            except (TimeoutError, OSError, WebSocketException) as exc:
                log.info("stream connect failed (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _MAX_BACKOFF)
                continue
            delay = 0.5
            self._stream = stream
            unacked, last_ack = 0, time.monotonic()
            try:
                async for event in stream.events():
                    # Stored events are shown before anything else can fail: if the ack
                    # below is lost, the redelivered event is a duplicate and dropped,
                    # so an item not yielded now would never be shown.
                    for item in await self._inbox.process(event):
                        yield item
                    # Acks only follow events already committed; one ack covers every
                    # event up to its pos, so a burst is acked once at its end.
                    unacked += 1
                    now = time.monotonic()
                    if (
                        not stream.queued_events()
                        or unacked >= _ACK_EVERY_EVENTS
                        or now - last_ack >= _ACK_EVERY_SECONDS
                    ):
                        await stream.ack(event.pos)
                        unacked, last_ack = 0, now
                    await self._replenish_if_used()
            except (OSError, WebSocketException, ProtocolViolation) as exc:
                log.info("stream lost (%s); reconnecting in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _MAX_BACKOFF)
            finally:
                self._stream = None
                await stream.aclose()

    async def replenish_keys(self) -> None:
        await self._keyring.replenish()

    async def _replenish_if_used(self) -> None:
        if self._inbox.one_time_keys_used:
            self._inbox.one_time_keys_used = 0
            try:
                await self._keyring.replenish()
            except (httpx.TransportError, NotFound) as exc:
                log.warning("could not replenish one-time keys: %s", exc)

    # --- for tests and diagnostics ------------------------------------------------

    @property
    def identity_key(self) -> str:
        """This account's public identity key (what contacts pin)."""
        return self._identity.public_key

    def _debug(self) -> dict[str, Any]:
        return {"cursor": self._store.cursor, "device_id": self.device_id}
