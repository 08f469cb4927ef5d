"""Token buckets keyed by account or client address."""

from __future__ import annotations

from typing import Final

from emsg.proto.errors import RateLimited
from emsg.server.clock import Clock

_MAX_KEYS: Final = 100_000


class RateLimiter:
    def __init__(self, rate_per_second: float, burst: float, clock: Clock) -> None:
        self._rate = rate_per_second
        self._burst = max(burst, 1.0)
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}

    def hit(self, key: str) -> None:
        """Take one token for `key` or raise `RateLimited` with the wait in seconds."""
        now = self._clock.monotonic()
        tokens, last = self._buckets.get(key, (self._burst, now))
        tokens = min(self._burst, tokens + (now - last) * self._rate)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            raise RateLimited((1.0 - tokens) / self._rate)
        if len(self._buckets) >= _MAX_KEYS and key not in self._buckets:
            self._prune(now)
        self._buckets[key] = (tokens - 1.0, now)

    def _prune(self, now: float) -> None:
        # Buckets that would be full again carry no information: drop them.
        full_after = self._burst / self._rate
        self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < full_after}
