"""Bounded read-through caches for the lookups every send makes.

Every write that can change a cached value goes through a repository, which
drops the key at once and again after its transaction ends (see `Invalidations`).
A reader that queried before a write committed may still hold the old value when
it comes back to fill the cache; a generation counter, bumped by each
invalidation, makes such a late fill a no-op. So the cache never serves a value
older than the last commit that this process made.

One process only: with several server processes on one PostgreSQL, a write in one
must reach the others' caches (over the notifier, as the Redis fan-out will) before
these caches may be shared by them.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import Final, Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

DEFAULT_MAX: Final = 50_000
_MISSING: Final = object()


class LookupCache(Generic[K, V]):
    """An LRU map with generation-checked fills."""

    __slots__ = ("_data", "_max", "generation")

    def __init__(self, max_items: int = DEFAULT_MAX) -> None:
        self._data: dict[K, V] = {}
        self._max = max_items
        self.generation = 0

    def get(self, key: K) -> V | object:
        """The cached value, or `MISSING`."""
        value = self._data.pop(key, _MISSING)
        if value is not _MISSING:
            self._data[key] = value  # type: ignore[assignment]  # most recent last
        return value

    def fill(self, generation: int, items: Iterable[tuple[K, V]]) -> None:
        """Store what a query read, unless an invalidation happened since it began."""
        if generation != self.generation:
            return
        data = self._data
        for key, value in items:
            data[key] = value
        while len(data) > self._max:
            del data[next(iter(data))]

    def invalidate(self, key: K) -> None:
        self._data.pop(key, None)
        self.generation += 1

    def clear(self) -> None:
        self._data.clear()
        self.generation += 1


MISSING: Final = _MISSING


class Invalidations:
    """The keys a transaction changed; dropped again once it has committed or failed."""

    __slots__ = ("_keys",)

    def __init__(self) -> None:
        self._keys: list[tuple[LookupCache[object, object], object]] = []

    def drop(self, cache: LookupCache[K, V], key: K) -> None:
        cache.invalidate(key)
        self._keys.append((cache, key))  # type: ignore[arg-type]

    def touched(self, cache: LookupCache[K, V]) -> bool:
        """Whether this transaction changed anything behind `cache`."""
        return any(c is cache for c, _ in self._keys)

    def replay(self) -> None:
        for cache, key in self._keys:
            cache.invalidate(key)
        self._keys.clear()
