"""Device keys, one-time and fallback keys, and the signed device list."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from emsg.proto import signing
from emsg.proto.errors import (
    Forbidden,
    IdentityKeyChanged,
    InvalidRequest,
    NotFound,
    UnknownDevice,
    UnknownRecipient,
)
from emsg.proto.wire import (
    ClaimedDevice,
    DeviceKeys,
    DeviceList,
    KeyCounts,
    KeysClaimResult,
    KeysUpload,
    OneTimeKey,
    model_dump,
)
from emsg.server.services.common import AddressRules, Caller
from emsg.server.storage.ports import UnitOfWork

if TYPE_CHECKING:
    from emsg.server.federation.service import Federation

MAX_UNCLAIMED: Final = 200


class KeyService:
    def __init__(
        self, uow: UnitOfWork, rules: AddressRules, federation: Federation | None = None
    ) -> None:
        self._uow = uow
        self._federation = federation
        self._rules = rules

    async def upload(self, me: Caller, body: KeysUpload) -> KeyCounts:
        # Every check (and every signature) passes before anything is written.
        new_keys = None
        if body.device_keys is not None:
            dk = body.device_keys
            if self._rules.parse(dk.address) != self._rules.parse(me.address) or (
                dk.device_id != me.device_id
            ):
                raise Forbidden("device keys must name the calling account and device")
            signing.verify(signing.DEVICE_KEYS, model_dump(dk), dk.signature, dk.ed25519)
            new_keys = model_dump(dk)
        otks = list(body.one_time_keys)
        if any(k.fallback for k in otks):
            raise InvalidRequest("one_time_keys must not be marked fallback")
        if body.fallback_key is not None and not body.fallback_key.fallback:
            raise InvalidRequest("fallback_key must be marked fallback")
        if len({k.key_id for k in otks}) != len(otks):
            raise InvalidRequest("duplicate key_id in one_time_keys")
        async with self._uow.write() as tx:
            device = await tx.devices.get(me.device_id)
            if device is None or device.revoked:
                raise Forbidden("this device is revoked")
            stored = device.device_keys
            if new_keys is not None and stored is not None and stored != new_keys:
                raise Forbidden("device keys, once set, cannot be changed")
            current = new_keys or stored
            signed: list[OneTimeKey] = [*otks]
            if body.fallback_key is not None:
                signed.append(body.fallback_key)
            if signed and current is None:
                raise InvalidRequest("upload device_keys before one-time keys")
            for key in signed:
                assert current is not None
                signing.verify(
                    signing.ONE_TIME_KEY, model_dump(key), key.signature, current["ed25519"]
                )
            existing = await tx.keys.existing_key_ids(me.device_id, [k.key_id for k in otks])
            fresh = [model_dump(k) for k in otks if k.key_id not in existing]
            count = await tx.keys.count_one_time(me.device_id)
            if count + len(fresh) > MAX_UNCLAIMED:
                raise InvalidRequest(f"a device holds at most {MAX_UNCLAIMED} one-time keys")
            if new_keys is not None and stored is None:
                await tx.devices.set_device_keys(me.device_id, new_keys)
            await tx.keys.add_one_time(me.device_id, fresh)
            if body.fallback_key is not None:
                await tx.keys.set_fallback(me.device_id, model_dump(body.fallback_key))
            has_fallback = await tx.keys.get_fallback(me.device_id) is not None
        return KeyCounts(one_time_keys=count + len(fresh), has_fallback_key=has_fallback)

    async def put_device_list(self, me: Caller, body: DeviceList) -> None:
        if self._rules.local(body.address) != me.address:
            raise Forbidden("a device list may only be published for the calling account")
        signing.verify(signing.DEVICE_LIST, model_dump(body), body.signature, body.identity_key)
        async with self._uow.write() as tx:
            account = await tx.accounts.get(me.address)
            if account is None:
                raise Forbidden("no such account")
            if account.identity_key is not None and account.identity_key != body.identity_key:
                raise IdentityKeyChanged("the account's identity key is pinned")
            if body.version <= account.device_list_version:
                raise InvalidRequest(f"version must be greater than {account.device_list_version}")
            await tx.accounts.set_device_list(
                me.address, body.identity_key, model_dump(body), body.version
            )

    async def get_device_list(self, raw_address: str) -> DeviceList:
        if self._federation is not None and self._rules.is_remote(raw_address):
            return await self._federation.device_list(self._rules.parse(raw_address))
        address = self._rules.local(raw_address)
        async with self._uow.read() as tx:
            account = await tx.accounts.get(address)
        if account is None:
            raise UnknownRecipient(f"no account {address}")
        if account.device_list is None:
            raise NotFound(f"{address} has published no device list")
        return DeviceList.model_validate(account.device_list)

    async def claim(
        self, raw_address: str, device_ids: list[str] | None, requester: str | None = None
    ) -> KeysClaimResult:
        if (
            requester is not None
            and self._federation is not None
            and self._rules.is_remote(raw_address)
        ):
            remote = self._rules.parse(raw_address)
            return await self._federation.claim(requester, remote, device_ids)
        address = self._rules.local(raw_address)
        claimed: list[ClaimedDevice] = []
        async with self._uow.write() as tx:
            if await tx.accounts.get(address) is None:
                raise UnknownRecipient(f"no account {address}")
            active = {d.device_id: d for d in await tx.devices.active_of(address)}
            if device_ids is None:
                wanted = [d for d in active.values() if d.device_keys is not None]
            else:
                wanted = []
                for device_id in dict.fromkeys(device_ids):
                    device = active.get(device_id)
                    if device is None or device.device_keys is None:
                        raise UnknownDevice(f"{address} has no device {device_id} with keys")
                    wanted.append(device)
            for device in wanted:
                assert device.device_keys is not None
                key = await tx.keys.take_one_time(device.device_id)
                if key is None:
                    key = await tx.keys.get_fallback(device.device_id)
                claimed.append(
                    ClaimedDevice(
                        device_keys=DeviceKeys.model_validate(device.device_keys),
                        one_time_key=None if key is None else OneTimeKey.model_validate(key),
                    )
                )
        return KeysClaimResult(address=address, devices=claimed)
