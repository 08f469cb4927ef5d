"""Live fan-out: wake the sync waiters and WebSockets of a device after a commit.

A notification carries no data; listeners re-read the queue from their cursor, so
a lost or duplicated notification is harmless. That keeps a Redis implementation
(for several server processes) a drop-in behind the same Protocol.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Protocol


class Subscription(Protocol):
    def clear(self) -> None:
        """Forget past notifications; call before re-reading the queue."""
        ...

    async def wait(self, seconds: float | None) -> bool:
        """True if notified before `seconds` passed (None: wait for ever)."""
        ...

    def close(self) -> None: ...


class Watch(Protocol):
    def close(self) -> None: ...


class Notifier(Protocol):
    def subscribe(self, device_id: str) -> Subscription: ...
    def watch(self, device_id: str, callback: Callable[[], None]) -> Watch:
        """Call `callback` (on the event loop, without awaiting) on each notification.

        Cheaper than a `Subscription` for a listener that is busy anyway: no task
        needs to sit waiting on it.
        """
        ...

    async def publish(self, device_ids: Iterable[str]) -> None: ...
    async def close(self) -> None: ...


class _LocalWatch:
    __slots__ = ("_device_id", "_owner", "notify")

    def __init__(self, owner: LocalNotifier, device_id: str, callback: Callable[[], None]) -> None:
        self._owner = owner
        self._device_id = device_id
        self.notify = callback

    def close(self) -> None:
        self._owner._drop(self._device_id, self)


class _LocalSubscription:
    __slots__ = ("_device_id", "_event", "_owner")

    def __init__(self, owner: LocalNotifier, device_id: str) -> None:
        self._owner = owner
        self._device_id = device_id
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()

    def clear(self) -> None:
        self._event.clear()

    async def wait(self, seconds: float | None) -> bool:
        try:
            await asyncio.wait_for(self._event.wait(), seconds)
        except TimeoutError:
            return False
        return True

    def close(self) -> None:
        self._owner._drop(self._device_id, self)


class LocalNotifier:
    """In-process fan-out: enough for one server process."""

    def __init__(self) -> None:
        self._subs: dict[str, set[_LocalSubscription | _LocalWatch]] = {}

    def subscribe(self, device_id: str) -> Subscription:
        sub = _LocalSubscription(self, device_id)
        self._subs.setdefault(device_id, set()).add(sub)
        return sub

    def watch(self, device_id: str, callback: Callable[[], None]) -> Watch:
        watch = _LocalWatch(self, device_id, callback)
        self._subs.setdefault(device_id, set()).add(watch)
        return watch

    def _drop(self, device_id: str, sub: _LocalSubscription | _LocalWatch) -> None:
        subs = self._subs.get(device_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subs[device_id]

    async def publish(self, device_ids: Iterable[str]) -> None:
        for device_id in set(device_ids):
            for sub in tuple(self._subs.get(device_id, ())):
                sub.notify()

    async def close(self) -> None:
        # Wake every waiter so long-polls return promptly at shutdown.
        for subs in self._subs.values():
            for sub in subs:
                sub.notify()
