"""`Client`: the async library every EMSG front end is built on.

One `Client` is one profile folder (its SQLite store) and one device of one
account. It encrypts to every verified device of a recipient and of its own
account, receives by long-poll (`fetch`) or WebSocket (`listen`), and keeps
history, pinned identity keys and Olm state in the local store.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from types import TracebackType
from typing import Any, Final

import httpx
from websockets.exceptions import WebSocketException

from emsg.client.devices import Devices
from emsg.client.discovery import homeserver_url
from emsg.client.errors import NotLoggedIn, ProfileExists
from emsg.client.inbox import Inbox, contact_info
from emsg.client.inputs import from_caller, with_login_key
from emsg.client.keyring import Keyring
from emsg.client.models import ClientEvent, ContactInfo, DeviceInfo, Message
from emsg.client.outgoing import Outgoing
from emsg.client.sender import Sender
from emsg.client.store import PinnedContact, ProfileStore, now_ms
from emsg.client.transport import HttpApi, StreamSession, path_address
from emsg.client.verify import Verifier
from emsg.crypto.identity import IdentityKey, open_identity, seal_identity
from emsg.crypto.keys import KdfParams
from emsg.crypto.olm import Olm
from emsg.proto.content import Content
from emsg.proto.errors import (
    AddressTaken,
    EmsgError,
    Forbidden,
    InvalidRequest,
    NoRequest,
    NotFound,
    ProtocolViolation,
    TokenExpired,
    Unauthorized,
    UnknownDevice,
)
from emsg.proto.ids import Address
from emsg.proto.wire import (
    Contact,
    ContactRequestBody,
    ContactsView,
    DeviceList,
    LoginRequest,
    PolicyBody,
    RegisterRequest,
    Session,
    StrangerPolicy,
    SyncResult,
    WhoAmI,
)

log = logging.getLogger(__name__)

_SEND_ATTEMPTS: Final = 6
_MAX_BACKOFF: Final = 30.0
# Events that arrived together are stored in one transaction and acked at once,
# up to this many (an unacked event is only redelivered).
_BATCH_EVENTS: Final = 256


async def _resume_registration(api: HttpApi, login: LoginRequest) -> Session:
    """After `address_taken`: a new session on the account if it is this caller's and
    its registration never finished (the reply to it was lost, or the process died
    before the profile was written), so that registering again finishes it; else
    `address_taken` stands. Its own: the password is right. Unfinished: no device
    list was ever published, so no device of it holds an identity key."""
    address = login.address
    try:
        session = await api.call_model(Session, "POST", "/login", login)
    except Unauthorized:
        raise AddressTaken(f"{address} is already registered") from None
    api.token = session.token
    try:
        await api.get_model(DeviceList, f"/keys/device-list/{path_address(address)}")
    except NotFound:
        return session
    await api.call("POST", "/logout")
    api.token = None
    raise AddressTaken(f"{address} is already registered and in use; log in instead")


@functools.lru_cache(maxsize=1024)
def _canonical_address(raw: str) -> str:
    """`str(Address.parse(raw))`, remembered: IDNA mapping costs more than a message."""
    return str(Address.parse(raw))


class Client:
    """One device of one account, backed by a profile folder."""

    address: Address
    device_id: str
    server_url: str

    def __init__(self, store: ProfileStore, api: HttpApi, identity: IdentityKey | None) -> None:
        self._store = store
        self._api = api
        self.address = Address.parse(store.address)
        self.device_id = store.device_id or ""
        self.server_url = store.server_url
        self._olm = Olm(store, store.keys.pickle_key, str(self.address), self.device_id)
        self._keyring = Keyring(api, store, self._olm, identity)
        self._sender = Sender(api, self._olm)
        self._outgoing = Outgoing(
            store, self._keyring, self._sender, str(self.address), self.device_id
        )
        self._devices = Devices(api, store, self._olm, self._keyring, self._sender)
        self._inbox = Inbox(store, self._olm, self._keyring, self._devices)
        self._verifier = Verifier(store, self._keyring, self._sender, self._inbox)
        # Shown once: the recovery key made at registration (None once reopened).
        self.recovery_key: str | None = None
        self._renewing = asyncio.Lock()
        api.renew = self._renew_session

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
        """Create the account; this profile becomes its first device and holds the new
        account identity key. `recovery_key` holds the recovery key to show the user."""
        home = Path(home)
        if ProfileStore.exists(home):
            raise ProfileExists(f"a profile already exists in {home}")
        addr = Address.parse(address)
        fields = {"address": str(addr), "password": password}
        request = with_login_key(RegisterRequest, fields, str(addr))
        api = HttpApi(
            server or await homeserver_url(addr.domain, transport=transport), transport=transport
        )
        try:
            unfinished = False
            try:
                session = await api.call_model(Session, "POST", "/accounts", request)
            except AddressTaken:
                login = LoginRequest(address=request.address, password=request.password)
                session = await _resume_registration(api, login)
                unfinished = True
            store = ProfileStore.create(
                home, password, address=session.address, server_url=api.server_url, kdf=kdf
            )
            identity = IdentityKey.generate()
            with store.transaction():
                store.save_identity(seal_identity(identity, store.keys.box))
                store.set_token(session.token)
                store.set_device_id(session.device_id)
                store.set_login_key(request.password)
            api.token = session.token
            client = cls(store, api, identity)
            await client._keyring.publish_device()
            if unfinished:
                await client._devices.revoke_unfinished(request.password)
            client.recovery_key = await client._devices.new_recovery_key()
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
        """Log in. In a profile whose device the server still has (its token expired,
        say), that device logs in again: same device id, keys and sessions, and what
        was queued for it meanwhile is delivered. Otherwise as a new device: in a
        profile that holds the identity key the new device replaces the old one in the
        signed list at once; in a new folder it is *pending* (`approved` is False)
        until another device approves it (`approval_code`) or the user enters the
        recovery key (`recover`)."""
        home = Path(home)
        addr = Address.parse(address)
        fields = {"address": str(addr), "password": password}
        request = with_login_key(LoginRequest, fields, str(addr))
        store: ProfileStore | None = None
        identity: IdentityKey | None = None
        if ProfileStore.exists(home):
            store = ProfileStore.open(home, password)
            if store.address != str(addr):
                store.close()
                raise ProfileExists(f"the profile in {home} belongs to {store.address}")
            sealed = store.load_identity()
            identity = None if sealed is None else open_identity(sealed, store.keys.box)
        if server is None:
            server = (
                store.server_url
                if store
                else await homeserver_url(addr.domain, transport=transport)
            )
        api = HttpApi(server, transport=transport)
        old_token = store.token if store is not None else None
        try:
            if store is not None and store.device_id:
                again = await cls._same_device(store, api, request, identity)
                if again is not None:
                    return again
            session = await api.call_model(Session, "POST", "/login", request)
            if old_token is not None:
                # This folder's device becomes a new one: end the old one at the
                # server, rather than leave it there, pending or listed, for good.
                api.token = old_token
                with contextlib.suppress(EmsgError, httpx.TransportError):
                    await api.call("POST", "/logout")
            api.token = session.token
            old_device = None
            if store is None:
                store = ProfileStore.create(
                    home, password, address=session.address, server_url=api.server_url, kdf=kdf
                )
            else:
                old_device = store.device_id
                store.reset_device()
            with store.transaction():
                store.set_server_url(api.server_url)
                store.set_token(session.token)
                store.set_device_id(session.device_id)
                store.set_flag("published", False)
                store.set_flag("keys_uploaded", False)
                store.put_secret("approval", None)
                store.set_login_key(request.password)
            client = cls(store, api, identity)
            if identity is not None:
                await client._keyring.publish_device(drop_device=old_device)
            else:
                await client._devices.start_pending()
        except BaseException:
            await api.aclose()
            if store is not None:
                store.close()
            raise
        return client

    @classmethod
    async def _same_device(
        cls, store: ProfileStore, api: HttpApi, request: LoginRequest, identity: IdentityKey | None
    ) -> Client | None:
        """The profile's device logged in again; None if the server no longer has it
        (logged out, revoked, another server): then the caller makes a new one."""
        again = request.model_copy(update={"device_id": store.device_id})
        try:
            session = await api.call_model(Session, "POST", "/login", again)
        except (UnknownDevice, Forbidden) as exc:
            log.info("device %s cannot log in again (%s): a new one", store.device_id, exc)
            return None
        with store.transaction():
            store.set_server_url(api.server_url)
            store.set_token(session.token)
            store.set_login_key(request.password)
        api.token = session.token
        client = cls(store, api, identity)
        await client._finish_setup()
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
            identity = None if sealed is None else open_identity(sealed, store.keys.box)
        except BaseException:
            store.close()
            raise
        client = cls(store, HttpApi(store.server_url, store.token, transport=transport), identity)
        await client._finish_setup()
        return client

    async def _finish_setup(self) -> None:
        """Finish a registration or login cut short: publish this device, or (a new
        device without the identity key) start waiting for approval."""
        if self._store.token is None or self._store.flag("published"):
            return
        if self._keyring.identity is not None:
            await self._keyring.publish_device()
        elif not self._store.flag("keys_uploaded"):
            await self._devices.start_pending()

    async def _renew_session(self, refused: str, why: EmsgError) -> None:
        """A new token for this same device in place of `refused`: the one in the
        profile if another process of it renewed first (and the server has deleted
        the expired one since), else, if `refused` has expired, by logging in again
        with the login key the profile keeps. Else `why` stands."""
        async with self._renewing:
            if self._api.token != refused:
                return  # another task of this process renewed it meanwhile
            stored = self._store.token
            if stored is not None and stored != refused:
                self._api.token = stored
                return
            if not isinstance(why, TokenExpired):
                raise why
            login_key = self._store.login_key
            if login_key is None:  # a profile from before the login key was kept
                raise TokenExpired(
                    "this device's session has expired; log in again in this folder"
                    " (emsg account login): the same device goes on"
                )
            request = LoginRequest(
                address=str(self.address), password=login_key, device_id=self.device_id
            )
            session = await self._api.call_model(Session, "POST", "/login", request, auth=False)
            self._store.set_token(session.token)
            self._api.token = session.token
            log.info("renewed the session of device %s", self.device_id)

    async def aclose(self) -> None:
        await self._outgoing.aclose()
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
        api = self._authed()
        try:
            await self._devices.leave_list()  # contacts stop encrypting to this device
        except (EmsgError, httpx.TransportError) as exc:
            log.warning("could not take this device out of the device list: %s", exc)
        await api.call("POST", "/logout")
        self._store.set_token(None)
        self._api.token = None

    # --- this account's devices ----------------------------------------------------

    @property
    def approved(self) -> bool:
        """Whether this device holds the identity key (is, or may sign itself, in the list)."""
        return self._keyring.identity is not None

    @property
    def approval_code(self) -> str | None:
        """The code to type on an approved device, while this one waits; else None."""
        return self._devices.approval_code()

    async def check_approval(self) -> bool:
        """Fetch what is pending (an identity key from an approving device); approved?"""
        if not self.approved:
            await self.fetch()
        return self.approved

    async def _require_approved(self) -> IdentityKey:
        if self._keyring.identity is None:
            await self.fetch()
        return self._keyring.require_identity()

    async def devices(self) -> list[DeviceInfo]:
        self._authed()
        return await self._devices.all()

    async def approve_device(self, code: str, *, history: bool = False) -> DeviceInfo:
        """Approve the pending device that shows `code`; with `history`, this device's
        messages (after fetching what is pending) are copied to it, encrypted."""
        self._authed()
        await self._require_approved()
        if history:
            await self.fetch()
        return await self._devices.approve(code, history=history)

    async def revoke_device(self, device_id: str, password: str) -> None:
        self._authed()
        await self._require_approved()
        await self._devices.revoke(device_id, password)

    async def recover(self, recovery_key: str) -> None:
        """Approve this pending device with the account recovery key."""
        self._authed()
        if self.approved:
            return
        await self._devices.recover(recovery_key)

    async def new_recovery_key(self) -> str:
        """Replace the recovery key (the old one stops opening the backup); show it once."""
        self._authed()
        await self._require_approved()
        return await self._devices.new_recovery_key()

    # --- verifying friends ---------------------------------------------------------

    @property
    def verify(self) -> Verifier:
        """Safety numbers, QR payloads, SAS and accepting a changed key (see `Verifier`)."""
        return self._verifier

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
        identity = await self._require_approved()
        devices = await self._keyring.fetch(peer)  # IdentityKeyChanged if it differs from a pin
        contact = await self._authed().call_model(
            Contact,
            "POST",
            "/contacts/requests",
            from_caller(
                ContactRequestBody,
                {"to": peer, "message": message, "identity_key": identity.public_key},
            ),
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
        await self._require_approved()
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
            changed = self._store.key_change(contact.address) is not None
            out.append(contact_info(contact, pinned, key_changed=changed))
        return out

    async def blocked(self) -> list[str]:
        return list((await self._view()).blocked)

    async def block(self, address: str) -> None:
        await self._authed().call("PUT", f"/blocks/{path_address(self._peer(address))}")

    async def unblock(self, address: str) -> None:
        await self._authed().call("DELETE", f"/blocks/{path_address(self._peer(address))}")

    async def set_stranger_policy(self, policy: StrangerPolicy | str) -> StrangerPolicy:
        body = from_caller(PolicyBody, {"strangers": policy})
        return (await self._authed().call_model(PolicyBody, "PUT", "/policy", body)).strangers

    async def get_stranger_policy(self) -> StrangerPolicy:
        return (await self._authed().get_model(PolicyBody, "/policy")).strangers

    # --- sending -------------------------------------------------------------------

    async def send_text(self, to: str, body: str) -> Message:
        peer = _canonical_address(to)
        me = str(self.address)
        content = from_caller(
            Content,
            {
                "id": secrets.token_urlsafe(16),
                "from": me,
                "from_device": self.device_id,
                "to": peer,
                "body": body,
                "sent_at": now_ms(),
            },
        )
        await self._require_approved()
        message = Message(content.id, me, peer, body, content.sent_at, None, "out")
        try:
            try:
                await self._outgoing.send(content, peer, message)
            except UnknownDevice:
                # A device list reused from cache named a device that has gone since.
                self._keyring.forget(peer)
                self._keyring.forget(me)
                await self._outgoing.send(content, peer, message)
        except BaseException:
            # History keeps what was sent, and what may have been: a send still in
            # the outbox (its outcome unknown) goes again with the next command.
            if message.id not in self._store.pending_message_ids():
                self._store.remove_message(message.id)
            raise
        return message

    # --- receiving -----------------------------------------------------------------

    async def fetch(self) -> list[Message]:
        api = self._authed()
        await self._outgoing.resend_pending()
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
            for item in await self._inbox.process_batch(result.events):
                if item.kind == "message" and item.message is not None:
                    new.append(item.message)
            self._store.advance_cursor(result.next)
        await self._replenish_if_used()
        return new

    def history(self, with_: str | None = None) -> list[Message]:
        return self._store.history(None if with_ is None else str(Address.parse(with_)))

    async def listen(self) -> AsyncIterator[ClientEvent]:
        """Live events over the WebSocket; reconnects with backoff and resumes at the cursor."""
        delay = 0.5
        reconnecting = False  # a connection failed or was lost since the last one
        while True:
            token = self._authed().token or ""
            try:
                stream = await StreamSession.connect(
                    self._api.stream_url(), token, self._store.cursor
                )
            except (TokenExpired, Unauthorized) as exc:
                await self._renew_session(token, exc)
                continue
            except (TimeoutError, OSError, WebSocketException) as exc:
                log.info("cannot reach the homeserver (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _MAX_BACKOFF)
                reconnecting = True
                continue
            if reconnecting:
                log.info("connected to the homeserver")
                reconnecting = False
            delay = 0.5
            self._sender.stream = stream
            try:
                await self._outgoing.resend_pending()
                async for events in stream.batches(_BATCH_EVENTS):
                    # Stored events are shown before anything else can fail: if the ack
                    # below is lost, the redelivered events are duplicates and dropped,
                    # so an item not yielded now would never be shown.
                    for item in await self._inbox.process_batch(events):
                        yield item
                    # Acks only follow events already committed; one ack covers every
                    # event up to its pos, so a busy stream acks every few ms, once.
                    stream.ack_soon(events[-1].pos)
                    await self._replenish_if_used()
            except TokenExpired as exc:  # the server closed the stream at its expiry
                await self._renew_session(token, exc)
            except (OSError, WebSocketException, ProtocolViolation) as exc:
                log.info("lost the homeserver (%s); reconnecting in %.1fs", exc, delay)
                reconnecting = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, _MAX_BACKOFF)
            finally:
                self._sender.stream = None
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
        return self._keyring.require_identity().public_key

    def _debug(self) -> dict[str, Any]:
        return {"cursor": self._store.cursor, "device_id": self.device_id}
