"""The devices of an account: listing, revoking, and the sealed identity backup.

The server never decides which device is approved: clients verify the device list
signed by the account identity key. It only enforces what it can: a revoked device's
tokens stop working at once (the token cache is evicted after the commit and its
open WebSocket is woken, rechecks and closes), envelopes to it are refused
(`unknown_device`, in `MessageService._check` and federation inbound), and only a
device in the published list may revoke, with the account password.
"""

from __future__ import annotations

from emsg.proto.devices import MAX_DEVICES_SHOWN, AccountDevice, DevicesView, IdentityBackup
from emsg.proto.errors import Forbidden, InvalidRequest, NotFound, UnknownDevice
from emsg.proto.wire import DeviceKeys, DeviceList
from emsg.server.clock import Clock
from emsg.server.fanout import Notifier
from emsg.server.services.accounts import AccountService
from emsg.server.services.common import Caller
from emsg.server.storage.ports import UnitOfWork
from emsg.server.storage.records import Account, Device


def _listed_ids(account: Account) -> set[str]:
    """The devices the account's published (signed) device list names."""
    if account.device_list is None:
        return set()
    return {str(d.get("device_id")) for d in account.device_list.get("devices", [])}


def _listed(account: Account | None, device_id: str) -> bool:
    """Whether the account's published (signed) device list names `device_id`."""
    return account is not None and device_id in _listed_ids(account)


class DeviceService:
    def __init__(
        self, uow: UnitOfWork, clock: Clock, notifier: Notifier, accounts: AccountService
    ) -> None:
        self._uow = uow
        self._clock = clock
        self._notifier = notifier
        self._accounts = accounts

    async def list(self, me: Caller) -> DevicesView:
        async with self._uow.read() as tx:
            account = await tx.accounts.get(me.address)
            devices = await tx.devices.all_of(me.address)
        listed = set() if account is None else _listed_ids(account)
        if len(devices) > MAX_DEVICES_SHOWN:
            # Listed devices first, then the other live ones, then the revoked: the
            # newest of each, as many as the view holds, in their usual order.
            def rank(d: Device) -> tuple[int, int]:
                return (0 if d.device_id in listed else 2 if d.revoked else 1, -d.created_at)

            kept = {d.device_id for d in sorted(devices, key=rank)[:MAX_DEVICES_SHOWN]}
            devices = [d for d in devices if d.device_id in kept]
        return DevicesView(
            devices=[
                AccountDevice(
                    device_id=d.device_id,
                    name=d.name,
                    created_at=d.created_at,
                    revoked=d.revoked,
                    device_keys=None
                    if d.device_keys is None
                    else DeviceKeys.model_validate(d.device_keys),
                )
                for d in devices
            ],
            device_list=None
            if account is None or account.device_list is None
            else DeviceList.model_validate(account.device_list),
        )

    async def revoke(self, me: Caller, device_id: str, password: str) -> None:
        """End `device_id` of the caller's account; idempotent for a revoked device."""
        async with self._uow.read() as tx:
            account = await tx.accounts.get(me.address)
            target = await tx.devices.get(device_id)
        if target is None or target.address != me.address:
            raise UnknownDevice(f"{me.address} has no device {device_id}")
        if not _listed(account, me.device_id):
            raise Forbidden("only a device in the signed device list may revoke a device")
        await self._accounts.check_password(me.address, password)
        if target.revoked:
            return
        async with self._uow.write() as tx:
            hashes = await tx.tokens.delete_for_device(device_id)
            await tx.devices.revoke(device_id)
        self._accounts.forget_tokens(hashes)
        # Wakes the device's open WebSocket, which finds its token gone and closes.
        await self._notifier.publish([device_id])

    async def put_backup(self, me: Caller, backup: IdentityBackup) -> None:
        async with self._uow.read() as tx:
            account = await tx.accounts.get(me.address)
        if not _listed(account, me.device_id):
            raise Forbidden("only a device in the signed device list may store the backup")
        if account is not None and account.identity_key not in (None, backup.identity_key):
            raise InvalidRequest("the backup is of another key than the account's identity key")
        async with self._uow.write() as tx:
            await tx.backups.put(me.address, backup.model_dump(), self._clock.now_ms())

    async def get_backup(self, me: Caller) -> IdentityBackup:
        async with self._uow.read() as tx:
            body = await tx.backups.get(me.address)
        if body is None:
            raise NotFound("this account has no identity backup")
        return IdentityBackup.model_validate(body)
