"""The account identity key, and device lists that chain up to it.

A `VerifiedDeviceList` can only be obtained from `verify_device_list`, so code that
encrypts to a device cannot forget to check the list's signature or the pinned key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from emsg.crypto.curve import curve25519_key
from emsg.crypto.errors import InvalidKey, UntrustedDevice
from emsg.crypto.keys import SecretBox
from emsg.proto import b64, signing
from emsg.proto.errors import BadSignature, IdentityKeyChanged
from emsg.proto.wire import DeviceList, ListedDevice, model_dump


class IdentityKey:
    """The Ed25519 key that signs an account's device list; lives only on its devices."""

    __slots__ = ("_private",)

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private

    @classmethod
    def generate(cls) -> IdentityKey:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_private_bytes(cls, raw: bytes) -> IdentityKey:
        if len(raw) != 32:
            raise InvalidKey("an Ed25519 private key is 32 bytes")
        return cls(Ed25519PrivateKey.from_private_bytes(raw))

    def private_bytes(self) -> bytes:
        """The raw 32-byte seed, for the store to seal; never write it anywhere else."""
        return self._private.private_bytes_raw()

    @property
    def public_key(self) -> str:
        raw = self._private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return b64.encode(raw)

    def sign(self, purpose: str, obj: dict[str, Any]) -> str:
        return b64.encode(self._private.sign(signing.signable(purpose, obj)))

    def sign_device_list(
        self, address: str, version: int, devices: list[ListedDevice]
    ) -> DeviceList:
        body: dict[str, Any] = {
            "address": address,
            "identity_key": self.public_key,
            "version": version,
            "devices": [model_dump(d) for d in devices],
        }
        return DeviceList.model_validate(
            {**body, "signature": self.sign(signing.DEVICE_LIST, body)}
        )

    def __repr__(self) -> str:
        return f"IdentityKey(public={self.public_key})"


@dataclass(frozen=True, slots=True)
class VerifiedDeviceList:
    """A device list whose signature verified under the identity key the caller trusts."""

    device_list: DeviceList

    @property
    def address(self) -> str:
        return self.device_list.address

    @property
    def identity_key(self) -> str:
        return self.device_list.identity_key

    @property
    def version(self) -> int:
        return self.device_list.version

    @property
    def devices(self) -> list[ListedDevice]:
        return list(self.device_list.devices)

    def device(self, device_id: str) -> ListedDevice:
        for listed in self.device_list.devices:
            if listed.device_id == device_id:
                return listed
        raise UntrustedDevice(f"{device_id!r} is not in the verified device list of {self.address}")


def verify_device_list(
    device_list: DeviceList, *, address: str, pinned_identity_key: str | None
) -> VerifiedDeviceList:
    """Check signature, address, pin and keys; `pinned_identity_key=None` means TOFU.

    Raises `IdentityKeyChanged` if the list is signed by another key than the pinned
    one, `UntrustedDevice` if the signature or anything else is wrong.
    """
    if device_list.address != address:
        raise UntrustedDevice(f"the device list is for {device_list.address}, not {address}")
    if pinned_identity_key is not None and device_list.identity_key != pinned_identity_key:
        raise IdentityKeyChanged(
            f"the identity key of {address} changed from the pinned one; "
            "verify it with them before trusting it"
        )
    try:
        signing.verify(
            signing.DEVICE_LIST,
            model_dump(device_list),
            device_list.signature,
            device_list.identity_key,
        )
    except BadSignature:
        raise UntrustedDevice(f"the device list of {address} is not signed by its key") from None
    seen: set[str] = set()
    for listed in device_list.devices:
        if listed.device_id in seen:
            raise UntrustedDevice(f"device {listed.device_id!r} listed twice")
        seen.add(listed.device_id)
        curve25519_key(listed.curve25519)  # refuses low-order keys
    return VerifiedDeviceList(device_list)


def check_not_older(verified: VerifiedDeviceList, seen: tuple[int, str] | None) -> None:
    """Refuse a list older than one already verified under the same identity key.

    `seen` is the (version, signature) of the newest list this profile verified
    for the address and key. A server that hands out an old list (one that still
    names a revoked device) is refused, and so is a second, different list under
    a version already seen: Ed25519 signatures are deterministic, so the same
    list always carries the same signature.
    """
    if seen is None:
        return
    version, signature = seen
    if verified.version < version:
        raise UntrustedDevice(
            f"the server handed out an older device list of {verified.address}"
            f" (version {verified.version}; this device has seen version {version})"
        )
    if verified.version == version and verified.device_list.signature != signature:
        raise UntrustedDevice(
            f"the server handed out two different device lists of {verified.address}"
            f" under version {version}"
        )


_IDENTITY_LABEL = "emsg.identity_key.v1"


def seal_identity(key: IdentityKey, box: SecretBox) -> bytes:
    return box.seal(key.private_bytes(), _IDENTITY_LABEL)


def open_identity(sealed: bytes, box: SecretBox) -> IdentityKey:
    return IdentityKey.from_private_bytes(box.open(sealed, _IDENTITY_LABEL))
