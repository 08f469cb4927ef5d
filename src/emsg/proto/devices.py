"""Wire models of the device-management API (protocol.md §3.3).

The server lists an account's devices and keeps an opaque identity backup; it
never decides which device is approved: that is the signed device list's job,
which every client verifies itself.
"""

from __future__ import annotations

from typing import Annotated, Final

from pydantic import Field, StringConstraints

from emsg.proto.wire import DeviceIdText, DeviceKeys, DeviceList, Key, Password, Wire

MAX_BACKUP: Final = 512  # base64 characters of a sealed identity backup
# Devices in a `DevicesView`: every login makes one, so an old account can have more.
MAX_DEVICES_SHOWN: Final = 1000


class AccountDevice(Wire):
    """One device of the caller's account as the server knows it."""

    device_id: DeviceIdText
    name: str = ""
    created_at: int
    revoked: bool = False
    device_keys: DeviceKeys | None = None


class DevicesView(Wire):
    """`GET /devices`: every device of the account and its current signed device list."""

    devices: Annotated[list[AccountDevice], Field(max_length=MAX_DEVICES_SHOWN)]
    device_list: DeviceList | None = None


class RevokeRequest(Wire):
    """Revoking a device needs the account password as well as an approved device."""

    password: Password


class IdentityBackup(Wire):
    """The identity key's seed sealed under a key derived from the recovery key."""

    identity_key: Key
    sealed: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9+/]{16,512}$")]
