"""Test parties: accounts with devices, in-memory stores and verified device lists."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from emsg.crypto.device import Device
from emsg.crypto.identity import IdentityKey, VerifiedDeviceList, verify_device_list
from emsg.crypto.keys import PickleKey
from emsg.crypto.olm import Olm
from emsg.crypto.store import MemoryCryptoStore
from emsg.proto.content import Content
from emsg.proto.wire import ClaimedDevice, OneTimeKey


class TransactionalStore(MemoryCryptoStore):
    """A MemoryCryptoStore with transactions, as the client's SQLite store has: what
    was written inside one is restored when it raises. Counts session writes."""

    def __init__(self) -> None:
        super().__init__()
        self.session_writes = 0
        self._flush: list[Callable[[], None]] | None = None
        self._discard: list[Callable[[], None]] = []

    @contextmanager
    def transaction(self) -> Iterator[None]:
        saved = ({k: dict(v) for k, v in self.sessions.items()}, self.account, set(self.replay))
        self._flush, self._discard = [], []
        try:
            yield
            while self._flush:
                self._flush.pop(0)()
        except BaseException:
            self.sessions, self.account, self.replay = saved
            for discard in self._discard:
                discard()
            raise
        finally:
            self._flush = None

    def defer_to_commit(self, flush: Callable[[], None], discard: Callable[[], None]) -> bool:
        if self._flush is None:
            return False
        self._flush.append(flush)
        self._discard.append(discard)
        return True

    def save_session(self, peer_key: str, session_id: str, pickle: str) -> None:
        self.session_writes += 1
        super().save_session(peer_key, session_id, pickle)


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


def make_party(
    address: str, device_ids: list[str], store_type: type[MemoryCryptoStore] = MemoryCryptoStore
) -> Party:
    key = PickleKey(secrets.token_bytes(32))
    devices, stores = {}, {}
    for device_id in device_ids:
        store = store_type()
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
