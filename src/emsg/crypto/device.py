"""A device: one vodozemac Olm account, its signed keys, and its pickle.

The key ids vodozemac makes are standard base64 (may hold `+` and `/`); the wire
allows `[A-Za-z0-9_-]`, so they are published in the URL-safe alphabet. Nobody
needs to map them back: vodozemac finds a one-time key by its public key.
"""

from __future__ import annotations

from typing import Any, Final

import vodozemac

from emsg.crypto.curve import curve25519_key
from emsg.crypto.errors import DecryptionFailed, UntrustedDevice
from emsg.crypto.keys import PickleKey
from emsg.proto import signing
from emsg.proto.errors import BadSignature
from emsg.proto.wire import DeviceKeys, ListedDevice, OneTimeKey, model_dump

MAX_ONE_TIME_KEYS: Final = 50  # vodozemac's advice; it keeps at most 100 private halves


def _wire_key_id(key_id: str) -> str:
    return key_id.replace("+", "-").replace("/", "_").rstrip("=")


class Device:
    """This device's Olm account, bound to the address and device id it serves."""

    __slots__ = ("_account", "address", "device_id")

    def __init__(self, account: vodozemac.Account, address: str, device_id: str) -> None:
        self._account = account
        self.address = address
        self.device_id = device_id

    @classmethod
    def create(cls, address: str, device_id: str) -> Device:
        return cls(vodozemac.Account(), address, device_id)

    @classmethod
    def from_pickle(cls, pickle: str, key: PickleKey, address: str, device_id: str) -> Device:
        try:
            account = vodozemac.Account.from_pickle(pickle, key.raw)
        except (vodozemac.PickleException, ValueError):
            raise DecryptionFailed("the device account pickle does not decrypt") from None
        return cls(account, address, device_id)

    def pickle(self, key: PickleKey) -> str:
        return self._account.pickle(key.raw)

    def copy(self, key: PickleKey) -> Device:
        """An independent copy, so a failed operation can be thrown away whole."""
        return Device.from_pickle(self.pickle(key), key, self.address, self.device_id)

    @property
    def account(self) -> vodozemac.Account:
        """The raw account, for `olm` only; keys must go through the methods here."""
        return self._account

    @property
    def curve25519(self) -> str:
        return self._account.curve25519_key.to_base64()

    @property
    def ed25519(self) -> str:
        return self._account.ed25519_key.to_base64()

    def listed(self) -> ListedDevice:
        return ListedDevice(
            device_id=self.device_id, curve25519=self.curve25519, ed25519=self.ed25519
        )

    def _sign(self, purpose: str, obj: dict[str, Any]) -> str:
        return self._account.sign(signing.signable(purpose, obj)).to_base64()

    def device_keys(self) -> DeviceKeys:
        body: dict[str, Any] = {
            "address": self.address,
            "device_id": self.device_id,
            "curve25519": self.curve25519,
            "ed25519": self.ed25519,
        }
        return DeviceKeys.model_validate(
            {**body, "signature": self._sign(signing.DEVICE_KEYS, body)}
        )

    def _signed_key(
        self, key_id: str, key: vodozemac.Curve25519PublicKey, fallback: bool
    ) -> OneTimeKey:
        body: dict[str, Any] = {
            "key_id": _wire_key_id(key_id),
            "key": key.to_base64(),
            "fallback": fallback,
        }
        return OneTimeKey.model_validate(
            {**body, "signature": self._sign(signing.ONE_TIME_KEY, body)}
        )

    def new_one_time_keys(self, count: int) -> list[OneTimeKey]:
        """Generate `count` keys and return every unpublished one, signed.

        Call `mark_published` (and save the pickle) once the server took them.
        """
        count = max(0, min(count, MAX_ONE_TIME_KEYS))
        if count:
            self._account.generate_one_time_keys(count)
        keys = self._account.one_time_keys
        return [self._signed_key(kid, key, False) for kid, key in sorted(keys.items())]

    def new_fallback_key(self) -> OneTimeKey:
        """Generate a fallback key (replacing the previous one after its next use)."""
        # vodozemac 0.10 has these two but its .pyi does not declare them
        account: Any = self._account
        account.generate_fallback_key()
        fallback: dict[str, vodozemac.Curve25519PublicKey] = account.fallback_key
        ((kid, key),) = fallback.items()
        return self._signed_key(kid, key, True)

    def mark_published(self) -> None:
        self._account.mark_keys_as_published()


def verify_device_keys(keys: DeviceKeys, listed: ListedDevice, address: str) -> None:
    """A claimed `DeviceKeys` must be self-signed and match the verified device list."""
    if (keys.address, keys.device_id) != (address, listed.device_id) or (
        keys.curve25519,
        keys.ed25519,
    ) != (listed.curve25519, listed.ed25519):
        raise UntrustedDevice(
            f"device keys of {address}/{listed.device_id} differ from its signed device list"
        )
    try:
        signing.verify(signing.DEVICE_KEYS, model_dump(keys), keys.signature, keys.ed25519)
    except BadSignature:
        raise UntrustedDevice(f"device keys of {address}/{listed.device_id} are forged") from None


def verify_one_time_key(otk: OneTimeKey, listed: ListedDevice) -> vodozemac.Curve25519PublicKey:
    """Refuse a claimed key not signed by the device's Ed25519 key from the verified list."""
    try:
        signing.verify(signing.ONE_TIME_KEY, model_dump(otk), otk.signature, listed.ed25519)
    except BadSignature:
        raise UntrustedDevice(
            f"one-time key {otk.key_id} is not signed by device {listed.device_id}"
        ) from None
    return curve25519_key(otk.key)
