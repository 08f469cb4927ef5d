"""Test parties: accounts with devices, in-memory stores and verified device lists."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from emsg.crypto.device import Device
from emsg.crypto.identity import IdentityKey, VerifiedDeviceList, verify_device_list
from emsg.crypto.keys import PickleKey
from emsg.crypto.olm import Olm
from emsg.crypto.store import MemoryCryptoStore
from emsg.proto.content import Content
from emsg.proto.wire import ClaimedDevice, OneTimeKey


@dataclass
class Party:
    address: str
    identity: IdentityKey
    devices: dict[str, Olm]
    stores: dict[str, MemoryCryptoStore]

    def device_list(self, version: int = 1) -> VerifiedDeviceList:
        listed = [olm.load_device().listed() for olm in self.devices.values()]
        signed = self.identity.sign_device_list(self.address, version, listed)
        return verify_device_list(signed, address=self.address, pinned_identity_key=None)

    def claim(self, device_id: str, fallback: bool = False) -> ClaimedDevice:
        """What the server would return from /keys/claim for one device."""
        olm = self.devices[device_id]
        device = olm.load_device()
        otk: OneTimeKey = device.new_fallback_key() if fallback else device.new_one_time_keys(1)[0]
        device.mark_published()
        olm.save_device(device)
        return ClaimedDevice(device_keys=device.device_keys(), one_time_key=otk)


def make_party(address: str, device_ids: list[str]) -> Party:
    key = PickleKey(secrets.token_bytes(32))
    devices, stores = {}, {}
    for device_id in device_ids:
        store = MemoryCryptoStore()
        olm = Olm(store, key, address, device_id)
        olm.save_device(Device.create(address, device_id))
        devices[device_id], stores[device_id] = olm, store
    return Party(address, IdentityKey.generate(), devices, stores)


def content(sender: Olm, to: str, body: str = "hello", cid: str | None = None) -> Content:
    return Content.model_validate(
        {
            "id": cid or secrets.token_urlsafe(12),
            "from": sender.address,
            "from_device": sender.device_id,
            "to": to,
            "body": body,
            "sent_at": 1_700_000_000_000,
        }
    )
