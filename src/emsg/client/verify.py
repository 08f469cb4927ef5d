"""Verifying friends' account identity keys, and accepting a key that changed.

Verification compares the identity key this profile pinned for a friend with the
key the friend's own devices hold, over a channel no server controls: people
reading out a safety number, a QR code shown on one screen and scanned (or
pasted) on the other, or an interactive SAS exchange whose short code they
compare. A verified friend is marked so in every listing until their key changes.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Final, TypeVar

from emsg.client.keyring import Keyring
from emsg.client.sender import Sender
from emsg.client.store import PinnedContact, ProfileStore, now_ms
from emsg.crypto import verification
from emsg.crypto.errors import VerificationFailed
from emsg.crypto.identity import verify_device_list
from emsg.crypto.verification import SasExchange, SasParty, ShortCode
from emsg.proto.content import SasKey, SasMac, SasStart
from emsg.proto.errors import IdentityKeyChanged, InvalidRequest, NotFound
from emsg.proto.ids import Address
from emsg.proto.wire import Envelope

if TYPE_CHECKING:
    from emsg.client.inbox import Inbox

# SAS contents older than this when a verification starts belong to an earlier one.
_SAS_STALE_MS: Final = 5 * 60 * 1000
_POLL_SECONDS: Final = 0.3

C = TypeVar("C", SasStart, SasKey, SasMac)
Fetch = Callable[[], Awaitable[object]]
Compare = Callable[[ShortCode], Awaitable[bool]]


class Verifier:
    def __init__(self, store: ProfileStore, keyring: Keyring, sender: Sender, inbox: Inbox) -> None:
        self._store = store
        self._keyring = keyring
        self._sender = sender
        self._inbox = inbox

    @property
    def _me(self) -> str:
        return self._store.address

    def _peer(self, address: str) -> str:
        peer = str(Address.parse(address))
        if peer == self._me:
            raise InvalidRequest("that is this account's own address")
        return peer

    async def _pinned(self, address: str) -> tuple[str, PinnedContact]:
        """The peer and its pin, after checking its current list is still signed by it.

        A peer this profile has not met yet (a friend of the account, seen first from
        a new or recovered device) is pinned on first sight, as a send to them would:
        comparing the safety number is exactly how that first sight gets checked."""
        peer = self._peer(address)
        # IdentityKeyChanged, loudly, if the key differs from the pin
        await self._keyring.fetch(peer, tofu=True)
        pinned = self._store.contact(peer)
        if pinned is None or pinned.identity_key is None:
            raise NotFound(f"no identity key is known for {peer}")
        return peer, pinned

    # --- safety number and QR --------------------------------------------------------

    async def safety_number(self, address: str) -> str:
        peer, pinned = await self._pinned(address)
        me = self._keyring.require_identity()
        assert pinned.identity_key is not None
        return verification.safety_number(self._me, me.public_key, peer, pinned.identity_key)

    async def qr_payload(self, address: str) -> str:
        """What the friend scans (or pastes) into `emsg verify ME --scan`."""
        peer, pinned = await self._pinned(address)
        me = self._keyring.require_identity()
        assert pinned.identity_key is not None
        return verification.qr_payload(self._me, me.public_key, peer, pinned.identity_key)

    async def scan(self, address: str, payload: str) -> None:
        """Verify `address` with the payload of the QR code its client shows."""
        peer, pinned = await self._pinned(address)
        me = self._keyring.require_identity()
        assert pinned.identity_key is not None
        verification.check_qr(
            payload,
            me=self._me,
            my_key=me.public_key,
            peer=peer,
            pinned_peer_key=pinned.identity_key,
        )
        self._store.set_verified(peer, pinned.identity_key)

    async def confirm(self, address: str) -> None:
        """The people compared the safety number and it matched: mark the friend verified."""
        peer, pinned = await self._pinned(address)
        assert pinned.identity_key is not None
        self._store.set_verified(peer, pinned.identity_key)

    # --- a key that changed -----------------------------------------------------------

    async def accept_new_key(self, address: str) -> str:
        """Pin the identity key `address` shows now (after a warning); it is unverified."""
        peer = self._peer(address)
        noted = self._store.key_change(peer)
        pinned = self._store.contact(peer)
        raw = await self._keyring.fetch_raw(peer)
        new = verify_device_list(raw, address=peer, pinned_identity_key=None).identity_key
        if pinned is not None and pinned.identity_key == new and noted is None:
            return new  # nothing changed
        if noted is not None and noted != new:
            self._store.note_key_change(peer, new)
            raise IdentityKeyChanged(
                f"the identity key of {peer} changed again since the warning; compare safety"
                f" numbers and run `emsg contact trust {peer}` again"
            )
        if noted is None:
            raise NotFound(f"no changed identity key of {peer} is waiting to be accepted")
        with self._store.transaction():
            base = pinned or PinnedContact(peer, "stranger", None, False, "", now_ms())
            self._store.put_contact(replace(base, identity_key=new, verified=False))
            self._store.clear_key_change(peer)
        self._keyring.forget(peer)
        return new

    # --- SAS ---------------------------------------------------------------------------

    async def sas(
        self,
        address: str,
        compare: Compare,
        fetch: Fetch,
        timeout: float = 120.0,  # noqa: ASYNC109 - a deadline across many polls
    ) -> None:
        """Interactive verification with `address`, who must run it at the same time.

        `fetch` receives pending events (the client's `fetch`); `compare` shows the
        short code to the user and says whether it matches the friend's. Raises
        `VerificationFailed` on a mismatch, a bad MAC or a timeout; marks the friend
        verified on success.
        """
        peer, pinned = await self._pinned(address)
        assert pinned.identity_key is not None
        identity = self._keyring.require_identity()
        theirs = await self._keyring.fresh(peer)
        flow = secrets.token_urlsafe(12)
        me = SasParty(self._me, self._store.device_id or "", flow)
        exchange = SasExchange(me)
        started = now_ms()
        deadline = time.monotonic() + timeout
        self._inbox.sas_contents = []
        try:
            await self._sender.send_to_devices(
                SasStart.model_validate(
                    {**self._header(peer), "flow": flow, "commitment": exchange.commitment}
                ),
                theirs,
                [d.device_id for d in theirs.devices],
            )
            env, start = await self._wait(SasStart, peer, started, fetch, deadline)
            them = SasParty(peer, env.sender_device, start.flow)
            await self._sender.send_to_devices(
                SasKey.model_validate(
                    {**self._header(peer), "flow": flow, "key": exchange.public_key}
                ),
                theirs,
                [them.device_id],
            )
            _, key = await self._wait(SasKey, them, started, fetch, deadline)
            code = exchange.reveal(them, start.commitment, key.key)
            if not await compare(code):
                raise VerificationFailed("the short codes did not match: not verified")
            await self._sender.send_to_devices(
                SasMac.model_validate(
                    {
                        **self._header(peer),
                        "flow": flow,
                        "identity_key": identity.public_key,
                        "mac": exchange.mac_of_own_key(identity.public_key),
                    }
                ),
                theirs,
                [them.device_id],
            )
            _, mac = await self._wait(SasMac, them, started, fetch, deadline)
            exchange.check_their_mac(mac.identity_key, mac.mac)
            if mac.identity_key != pinned.identity_key:
                raise VerificationFailed(
                    f"{peer}'s device holds another identity key than the one pinned here"
                )
            self._store.set_verified(peer, pinned.identity_key)
        finally:
            self._inbox.sas_contents = None

    def _header(self, peer: str) -> dict[str, object]:
        return {
            "id": secrets.token_urlsafe(16),
            "from": self._me,
            "from_device": self._store.device_id or "",
            "to": peer,
            "sent_at": now_ms(),
        }

    async def _wait(
        self,
        kind: type[C],
        sender: SasParty | str,
        started: int,
        fetch: Fetch,
        deadline: float,
    ) -> tuple[Envelope, C]:
        """The next `kind` content from `sender` (a peer address: any of its devices)."""
        first = True
        while True:
            found = self._take(kind, sender, started)
            if found is not None:
                return found
            if time.monotonic() > deadline:
                raise VerificationFailed("the other side did not answer in time")
            if not first:
                await asyncio.sleep(_POLL_SECONDS)
            first = False
            await fetch()

    def _take(
        self, kind: type[C], sender: SasParty | str, started: int
    ) -> tuple[Envelope, C] | None:
        items = self._inbox.sas_contents or []
        for i, (envelope, content) in enumerate(items):
            if not isinstance(content, kind) or content.sent_at < started - _SAS_STALE_MS:
                continue
            if isinstance(sender, str):
                if envelope.sender != sender:
                    continue
            elif (envelope.sender, envelope.sender_device, content.flow) != (
                sender.address,
                sender.device_id,
                sender.flow,
            ):
                continue
            del items[: i + 1]
            return envelope, content
        return None
