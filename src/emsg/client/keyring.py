"""Publishing this device's keys, and fetching other accounts' verified device lists.

Device lists are verified against the identity key this profile pinned for the
address (its own key for itself); a first sight pins the key (TOFU) only where the
caller asks for it, so a contact request can never quietly re-pin a changed key.
"""

from __future__ import annotations

import logging
import time
from typing import Final

from emsg.client.errors import DeviceNotApproved, NotLoggedIn
from emsg.client.store import PinnedContact, ProfileStore, now_ms
from emsg.client.transport import HttpApi, path_address
from emsg.crypto.device import MAX_ONE_TIME_KEYS, Device
from emsg.crypto.errors import CryptoError, UntrustedDevice
from emsg.crypto.identity import (
    IdentityKey,
    VerifiedDeviceList,
    check_not_older,
    seal_identity,
    verify_device_list,
)
from emsg.crypto.olm import Olm
from emsg.proto.errors import EmsgError, IdentityKeyChanged, NotFound
from emsg.proto.wire import DeviceList, KeyCounts, KeysUpload, ListedDevice

log = logging.getLogger(__name__)

MIN_ONE_TIME_KEYS: Final = 25
# How long a verified device list is reused for sending before it is fetched again.
# A device added to the account meanwhile starts receiving at the next refresh.
DEVICE_LIST_FRESH_FOR: Final = 30.0
_UPLOAD_BATCH: Final = 50


class Keyring:
    def __init__(
        self, api: HttpApi, store: ProfileStore, olm: Olm, identity: IdentityKey | None
    ) -> None:
        self._api = api
        self._store = store
        self._olm = olm
        self._identity = identity
        self._cache: dict[str, VerifiedDeviceList] = {}
        self._fetched_at: dict[str, float] = {}

    # --- other accounts ------------------------------------------------------------

    @property
    def identity(self) -> IdentityKey | None:
        """The account identity key, or None while this device waits for approval."""
        return self._identity

    def require_identity(self) -> IdentityKey:
        if self._identity is None:
            raise DeviceNotApproved()
        return self._identity

    def adopt_identity(self, identity: IdentityKey, *, published: bool) -> None:
        """This device was approved (or recovered): it now holds the identity key.

        `published`: whether the signed list already names this device."""
        with self._store.transaction():
            self._store.save_identity(seal_identity(identity, self._store.keys.box))
            self._store.put_secret("approval", None)
            self._store.set_flag("published", published)
        self._identity = identity
        self.forget(self._store.address)

    def pinned_key(self, address: str) -> str | None:
        if address == self._store.address:
            return None if self._identity is None else self._identity.public_key
        contact = self._store.contact(address)
        return None if contact is None else contact.identity_key

    async def fetch_raw(self, address: str) -> DeviceList:
        """The device list as the server hands it out: verify before any use."""
        if self._api.token is None:
            raise NotLoggedIn()  # as every other request says it, not the server's 401
        return await self._api.get_model(DeviceList, f"/keys/device-list/{path_address(address)}")

    def _key_changed(self, address: str, raw: DeviceList) -> EmsgError:
        """The error for a list signed by another key than the pinned one; a list that
        is at least signed by the key it names is remembered so the user can accept it."""
        try:
            verify_device_list(raw, address=address, pinned_identity_key=None)
        except CryptoError:
            return UntrustedDevice(f"the device list of {address} is not signed by its key")
        self._store.note_key_change(address, raw.identity_key)
        contact = self._store.contact(address)
        verified = " You had verified the old key." if contact and contact.verified else ""
        log.warning("the identity key of %s changed", address)
        return IdentityKeyChanged(
            f"WARNING: the account identity key of {address} has changed.{verified} This happens"
            " if they re-created their account, or if a server is trying to read their"
            " messages. Nothing is sent to them until you compare safety numbers"
            f" (`emsg verify {address}`) and accept the new key with"
            f" `emsg contact trust {address}`."
        )

    async def fetch(
        self, address: str, *, expect_key: str | None = None, tofu: bool = False
    ) -> VerifiedDeviceList:
        """Fetch and verify `address`'s device list; raise `IdentityKeyChanged` on mismatch.

        `expect_key` is a key the list must be signed by in addition to any pinned
        one (e.g. the key stated in a contact request). With `tofu`, a first sight
        pins the key as a stranger's.
        """
        raw = await self.fetch_raw(address)
        pinned = self.pinned_key(address)
        try:
            verified = verify_device_list(raw, address=address, pinned_identity_key=pinned)
        except IdentityKeyChanged:
            raise self._key_changed(address, raw) from None
        if expect_key is not None:
            verify_device_list(raw, address=address, pinned_identity_key=expect_key)
        self._remember(verified)
        if pinned is None and tofu:
            self._store.put_contact(
                PinnedContact(address, "stranger", verified.identity_key, False, "", now_ms())
            )
            log.info("pinned the identity key of %s on first sight", address)
        self._cache[address] = verified
        self._fetched_at[address] = time.monotonic()
        return verified

    def _remember(self, verified: VerifiedDeviceList) -> None:
        """Refuse a list older than one seen before (a server replaying the list from
        before a revocation), else remember it as the newest."""
        address, key = verified.address, verified.identity_key
        check_not_older(verified, self._store.newest_device_list(address, key))
        self._store.note_device_list(address, key, verified.version, verified.device_list.signature)

    async def fresh(self, address: str, *, tofu: bool = False) -> VerifiedDeviceList:
        """The verified list, reused while it is younger than DEVICE_LIST_FRESH_FOR."""
        cached = self._cache.get(address)
        age = time.monotonic() - self._fetched_at.get(address, float("-inf"))
        if cached is not None and age < DEVICE_LIST_FRESH_FOR:
            return cached
        return await self.fetch(address, tofu=tofu)

    def forget(self, address: str) -> None:
        self._cache.pop(address, None)
        self._fetched_at.pop(address, None)

    async def for_sender(self, address: str, device_id: str) -> VerifiedDeviceList:
        """The sender's list from cache if it names `device_id`, else fetched anew."""
        cached = self._cache.get(address)
        if cached is not None and any(d.device_id == device_id for d in cached.devices):
            return cached
        return await self.fetch(address, tofu=True)

    # --- this device ---------------------------------------------------------------

    async def upload_keys(self) -> Device:
        """Upload this device's keys, one-time keys and fallback key.

        Safe to repeat after a crash: the account is created once and reused.
        """
        address, device_id = self._store.address, self._store.device_id
        assert device_id is not None
        with self._store.transaction():
            if self._store.load_account() is None:
                self._olm.save_device(Device.create(address, device_id))
            device = self._olm.load_device()
            one_time_keys = device.new_one_time_keys(MAX_ONE_TIME_KEYS)
            fallback = device.new_fallback_key()
            self._olm.save_device(device)
        await self._api.call_model(
            KeyCounts,
            "POST",
            "/keys/upload",
            KeysUpload(
                device_keys=device.device_keys(),
                one_time_keys=one_time_keys,
                fallback_key=fallback,
            ),
        )
        with self._store.transaction():
            device = self._olm.load_device()
            device.mark_published()
            self._olm.save_device(device)
            self._store.set_flag("keys_uploaded", True)
        return device

    async def publish_device(self, drop_device: str | None = None) -> None:
        """Upload this device's keys and sign it into the account's device list."""
        identity = self.require_identity()
        device = await self.upload_keys()
        current = await self.own_list()
        devices = [d for d in (current.devices if current else []) if d.device_id != drop_device]
        devices = [d for d in devices if d.device_id != device.device_id] + [device.listed()]
        await self.publish_list(identity, current, devices)
        self._store.set_flag("published", True)

    async def own_list(self) -> VerifiedDeviceList | None:
        """This account's verified device list, fetched now; None if none was published."""
        try:
            return await self.fetch(self._store.address)
        except NotFound:
            return None

    async def publish_list(
        self,
        identity: IdentityKey,
        current: VerifiedDeviceList | None,
        devices: list[ListedDevice],
    ) -> VerifiedDeviceList:
        """Sign `devices` as the next version of this account's list and publish it."""
        address = self._store.address
        signed = identity.sign_device_list(
            address, (current.version + 1) if current else 1, devices
        )
        await self._api.call("PUT", "/keys/device-list", signed)
        verified = verify_device_list(
            signed, address=address, pinned_identity_key=identity.public_key
        )
        self._remember(verified)
        self._cache[address] = verified
        self._fetched_at[address] = time.monotonic()
        return verified

    async def replenish(self) -> KeyCounts:
        """Keep at least MIN_ONE_TIME_KEYS one-time keys and a fallback key on the server."""
        counts = await self._api.call_model(KeyCounts, "POST", "/keys/upload", KeysUpload())
        if counts.one_time_keys >= MIN_ONE_TIME_KEYS and counts.has_fallback_key:
            return counts
        with self._store.transaction():
            device = self._olm.load_device()
            wanted = max(0, _UPLOAD_BATCH - counts.one_time_keys)
            one_time_keys = device.new_one_time_keys(wanted) if wanted else []
            fallback = None if counts.has_fallback_key else device.new_fallback_key()
            self._olm.save_device(device)
        counts = await self._api.call_model(
            KeyCounts,
            "POST",
            "/keys/upload",
            KeysUpload(one_time_keys=one_time_keys[:100], fallback_key=fallback),
        )
        with self._store.transaction():
            device = self._olm.load_device()
            device.mark_published()
            self._olm.save_device(device)
        return counts
