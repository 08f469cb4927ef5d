"""The devices of this account: approval, history transfer, revocation, recovery.

A device is approved iff it is in the account's device list signed by the account
identity key; every client encrypts only to listed devices, so a pending device
receives nothing but what its own account's devices send it. Approving a device
signs it into the list and hands it the identity key (protocol.md §3.1).
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import replace
from typing import Final

from emsg.client.inputs import with_login_key
from emsg.client.keyring import Keyring
from emsg.client.models import DeviceInfo
from emsg.client.sender import Sender
from emsg.client.store import PinnedContact, ProfileStore, now_ms
from emsg.client.transport import HttpApi
from emsg.crypto import approval
from emsg.crypto.curve import curve25519_key
from emsg.crypto.errors import CryptoError, UntrustedDevice
from emsg.crypto.identity import IdentityKey, VerifiedDeviceList, verify_device_list
from emsg.crypto.olm import Olm
from emsg.crypto.recovery import RecoveryKey
from emsg.proto import b64, signing
from emsg.proto.content import (
    MAX_SHARED_CONTACTS,
    MAX_SHARED_MESSAGES,
    ContactsShare,
    HistoryShare,
    IdentityShare,
    SharedContact,
    SharedMessage,
)
from emsg.proto.devices import DevicesView, IdentityBackup, RevokeRequest
from emsg.proto.errors import (
    BadSignature,
    InvalidRequest,
    KeysExhausted,
    MethodNotAllowed,
    NotFound,
)
from emsg.proto.wire import DeviceKeys, KeysClaimRequest, KeysClaimResult, ListedDevice, model_dump

log = logging.getLogger(__name__)

# Plaintext bytes per history_share: an Olm message of it stays well under the
# 64 KiB of base64 an envelope may carry.
_HISTORY_BATCH_BYTES: Final = 30_000


def _content_id() -> str:
    return secrets.token_urlsafe(16)


class Devices:
    def __init__(
        self,
        api: HttpApi,
        store: ProfileStore,
        olm: Olm,
        keyring: Keyring,
        sender: Sender,
    ) -> None:
        self._api = api
        self._store = store
        self._olm = olm
        self._keyring = keyring
        self._sender = sender

    @property
    def _me(self) -> str:
        return self._store.address

    # --- a new device --------------------------------------------------------------

    async def start_pending(self) -> None:
        """Make this (new) device's keys and its approval secret; it waits for approval."""
        if self._store.get_secret("approval") is None:
            self._store.put_secret("approval", approval.new_secret())
        await self._keyring.upload_keys()

    def approval_code(self) -> str | None:
        """The code this device shows until it is approved; None once it is."""
        secret = self._store.get_secret("approval")
        if secret is None or self._keyring.identity is not None:
            return None
        return approval.approval_code(secret, self._olm.load_device().device_keys())

    def accept_identity_share(self, share: IdentityShare, sender_list: VerifiedDeviceList) -> None:
        """Adopt the identity key another device of this account sent after approving us.

        `sender_list` is this account's list as the server gave it, verified only under
        the key it names; the approval code's MAC proves the key is the one the user's
        own device holds, and the list must name this device with its keys.
        """
        secret = self._store.get_secret("approval")
        if secret is None:
            raise UntrustedDevice("this device is not waiting for approval")
        mine = self._olm.load_device()
        approval.check_confirm(secret, share.identity_key, mine.device_keys(), share.confirm)
        identity = IdentityKey.from_private_bytes(b64.decode(share.seed))
        if identity.public_key != share.identity_key or (
            sender_list.identity_key != share.identity_key
        ):
            raise UntrustedDevice("the identity key shared does not sign the device list")
        listed = sender_list.device(mine.device_id)
        if (listed.curve25519, listed.ed25519) != (mine.curve25519, mine.ed25519):
            raise UntrustedDevice("the device list names this device with other keys")
        self._keyring.adopt_identity(identity, published=True)
        log.info("this device was approved by %s", share.from_device)

    # --- listing -------------------------------------------------------------------

    async def _server_view(self) -> DevicesView | None:
        try:
            return await self._api.get_model(DevicesView, "/devices")
        except (NotFound, MethodNotAllowed):
            return None  # a server without the device API: only the signed list is known

    async def _own_list_for_display(self) -> VerifiedDeviceList | None:
        if self._keyring.identity is not None:
            return await self._keyring.own_list()
        try:  # a pending device cannot check the key yet: for display only
            raw = await self._keyring.fetch_raw(self._me)
            return verify_device_list(raw, address=self._me, pinned_identity_key=None)
        except (NotFound, CryptoError):
            return None

    async def all(self) -> list[DeviceInfo]:
        """Every device of the account with its state: approved, pending or revoked."""
        current = await self._own_list_for_display()
        listed = {d.device_id: d for d in (current.devices if current else [])}
        view = await self._server_view()
        out: list[DeviceInfo] = []
        seen: set[str] = set()
        for device in view.devices if view else []:
            seen.add(device.device_id)
            entry = listed.get(device.device_id)
            keys = device.device_keys
            in_list = entry is not None and (
                keys is None or (keys.curve25519, keys.ed25519) == (entry.curve25519, entry.ed25519)
            )
            state = "revoked" if device.revoked else "approved" if in_list else "pending"
            out.append(self._info(device.device_id, state, device.name, device.created_at, keys))
        for device_id, entry in listed.items():
            if device_id not in seen:
                out.append(self._info(device_id, "approved", "", None, None, entry))
        if self.device_id not in listed and self.device_id not in seen:
            out.append(self._info(self.device_id, "pending", "", None, None))
        return out

    @property
    def device_id(self) -> str:
        return self._store.device_id or ""

    def _info(
        self,
        device_id: str,
        state: str,
        name: str,
        created_at: int | None,
        keys: DeviceKeys | None,
        entry: ListedDevice | None = None,
    ) -> DeviceInfo:
        ed25519 = keys.ed25519 if keys else entry.ed25519 if entry else None
        return DeviceInfo(device_id, state, name, created_at, device_id == self.device_id, ed25519)

    # --- approving -----------------------------------------------------------------

    async def _pending_keys(self, listed: set[str]) -> list[DeviceKeys]:
        view = await self._server_view()
        if view is not None:
            return [
                d.device_keys
                for d in view.devices
                if not d.revoked and d.device_keys is not None and d.device_id not in listed
            ]
        # Without the device API, claiming for the whole account shows every device's keys.
        result = await self._api.call_model(
            KeysClaimResult, "POST", "/keys/claim", KeysClaimRequest(address=self._me)
        )
        return [c.device_keys for c in result.devices if c.device_keys.device_id not in listed]

    async def approve(self, code: str, *, history: bool = False) -> DeviceInfo:
        """Sign the pending device that shows `code` into the list and send it the key."""
        identity = self._keyring.require_identity()
        secret, _ = approval.parse_code(code)
        current = await self._keyring.own_list()
        if current is None:
            raise NotFound("this account has no device list yet")
        listed = {d.device_id for d in current.devices}
        candidates = [
            k
            for k in await self._pending_keys(listed)
            if k.address == self._me and approval.matches(code, k)
        ]
        if len(candidates) != 1:
            raise NotFound(
                "no device waiting for approval shows that code; check it, and that the new"
                " device ran `emsg account login`"
            )
        keys = candidates[0]
        try:
            signing.verify(signing.DEVICE_KEYS, model_dump(keys), keys.signature, keys.ed25519)
        except BadSignature:
            raise UntrustedDevice("the pending device's keys are not self-signed") from None
        curve25519_key(keys.curve25519)  # refuses all-zero and low-order keys
        new_list = await self._keyring.publish_list(
            identity,
            current,
            [
                *current.devices,
                ListedDevice(
                    device_id=keys.device_id, curve25519=keys.curve25519, ed25519=keys.ed25519
                ),
            ],
        )
        share = IdentityShare.model_validate(
            {
                "id": _content_id(),
                "from": self._me,
                "from_device": self.device_id,
                "to": self._me,
                "sent_at": now_ms(),
                "identity_key": identity.public_key,
                "seed": b64.encode(identity.private_bytes()),
                "confirm": approval.confirm_tag(secret, identity.public_key, keys),
            }
        )
        if not await self._sender.send_to_devices(share, new_list, [keys.device_id]):
            raise KeysExhausted(f"could not reach device {keys.device_id}; approve it again")
        await self.share_contacts(new_list, keys.device_id)
        if history:
            await self.share_history(new_list, keys.device_id)
        return self._info(keys.device_id, "approved", "", None, keys)

    async def share_contacts(self, own: VerifiedDeviceList, device_id: str) -> None:
        """Send the identity keys pinned here to another device of the account."""
        pinned = [
            SharedContact(address=c.address, identity_key=c.identity_key, verified=c.verified)
            for c in self._store.all_contacts()
            if c.identity_key is not None
        ]
        for start in range(0, len(pinned), MAX_SHARED_CONTACTS):
            share = ContactsShare.model_validate(
                {
                    **self._header(),
                    "contacts": [
                        c.model_dump() for c in pinned[start : start + MAX_SHARED_CONTACTS]
                    ],
                }
            )
            await self._sender.send_to_devices(share, own, [device_id])

    def accept_contacts_share(self, share: ContactsShare) -> None:
        """Pin what another device of this account pinned, where nothing is pinned here."""
        for item in share.contacts:
            pinned = self._store.contact(item.address)
            if pinned is None or pinned.identity_key is None:
                base = pinned or PinnedContact(item.address, "stranger", None, False, "", now_ms())
                self._store.put_contact(
                    replace(base, identity_key=item.identity_key, verified=item.verified)
                )
            elif pinned.identity_key == item.identity_key and item.verified:
                self._store.set_verified(item.address, item.identity_key)
            elif pinned.identity_key != item.identity_key:
                log.warning("another device pinned another key for %s", item.address)

    def _header(self) -> dict[str, object]:
        return {
            "id": _content_id(),
            "from": self._me,
            "from_device": self.device_id,
            "to": self._me,
            "sent_at": now_ms(),
        }

    async def share_history(self, own: VerifiedDeviceList, device_id: str) -> int:
        """Send this device's history to another device of the account; how many messages."""
        batch: list[SharedMessage] = []
        size = sent = 0
        for message in self._store.history():
            item = SharedMessage.model_validate(
                {
                    "id": message.id,
                    "from": message.sender,
                    "to": message.recipient,
                    "body": message.body,
                    "sent_at": message.sent_at,
                }
            )
            item_size = len(item.model_dump_json(by_alias=True))
            if batch and (
                size + item_size > _HISTORY_BATCH_BYTES or len(batch) >= MAX_SHARED_MESSAGES
            ):
                sent += await self._send_history(own, device_id, batch)
                batch, size = [], 0
            batch.append(item)
            size += item_size
        if batch:
            sent += await self._send_history(own, device_id, batch)
        return sent

    async def _send_history(
        self, own: VerifiedDeviceList, device_id: str, batch: list[SharedMessage]
    ) -> int:
        share = HistoryShare.model_validate(
            {**self._header(), "messages": [m.model_dump(by_alias=True) for m in batch]}
        )
        await self._sender.send_to_devices(share, own, [device_id])
        return len(batch)

    # --- revoking ------------------------------------------------------------------

    async def revoke(self, device_id: str, password: str) -> None:
        """End another device: the server drops its tokens, the list drops the device."""
        identity = self._keyring.require_identity()
        if device_id == self.device_id:
            raise InvalidRequest("this is the device you are using: `emsg account logout`")
        request = with_login_key(RevokeRequest, {"password": password}, self._store.address)
        await self._revoke(identity, device_id, request)

    async def _revoke(self, identity: IdentityKey, device_id: str, request: RevokeRequest) -> None:
        await self._api.call("POST", f"/devices/{device_id}/revoke", request)
        current = await self._keyring.own_list()
        if current is not None and any(d.device_id == device_id for d in current.devices):
            await self._keyring.publish_list(
                identity, current, [d for d in current.devices if d.device_id != device_id]
            )

    async def revoke_unfinished(self, login_key: str) -> None:
        """End the devices an unfinished registration left behind: devices that never
        uploaded keys, of an account whose first list this device just published.
        `login_key` is the one registration derived already (an argon2id run each)."""
        identity = self._keyring.require_identity()
        request = RevokeRequest(password=login_key)
        view = await self._server_view()
        left = [
            d.device_id
            for d in (view.devices if view is not None else [])
            if not d.revoked and d.device_keys is None and d.device_id != self.device_id
        ]
        for device_id in left:
            await self._revoke(identity, device_id, request)

    async def leave_list(self) -> None:
        """Take this device out of the signed list (before it logs out)."""
        identity = self._keyring.identity
        if identity is None:
            return
        current = await self._keyring.own_list()
        if current is not None and any(d.device_id == self.device_id for d in current.devices):
            await self._keyring.publish_list(
                identity, current, [d for d in current.devices if d.device_id != self.device_id]
            )

    # --- recovery ------------------------------------------------------------------

    async def new_recovery_key(self) -> str:
        """Seal the identity key under a new recovery key, store the backup, show the key."""
        identity = self._keyring.require_identity()
        key = RecoveryKey.generate()
        await self._api.call("PUT", "/account/identity-backup", key.seal(identity, self._me))
        return key.display()

    async def recover(self, recovery_key: str) -> None:
        """Approve this device with the recovery key instead of another device."""
        key = RecoveryKey.parse(recovery_key)
        backup = await self._api.get_model(IdentityBackup, "/account/identity-backup")
        identity = key.open(backup, self._me)
        try:
            raw = await self._keyring.fetch_raw(self._me)
        except NotFound:
            raw = None
        if raw is not None:  # the backup must hold the key that signs the published list
            verify_device_list(raw, address=self._me, pinned_identity_key=identity.public_key)
        self._keyring.adopt_identity(identity, published=False)
        await self._keyring.publish_device()
