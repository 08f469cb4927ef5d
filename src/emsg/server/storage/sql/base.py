"""What every repository shares: the connection, the caches, named parameters."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from sqlalchemy import BindParameter, Insert, bindparam
from sqlalchemy.dialects import postgresql, sqlite

from emsg.server.storage.records import Account, ContactRow, Device
from emsg.server.storage.sql.cache import MISSING, Invalidations, K, LookupCache, V
from emsg.server.storage.sql.conn import Conn


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def loads_opt(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def param(name: str) -> BindParameter[Any]:
    # `b_` names: a bare column name is reserved for the VALUES/SET of INSERT/UPDATE.
    return bindparam(f"b_{name}")


def params(name: str) -> BindParameter[Any]:
    return bindparam(f"b_{name}", expanding=True)


def insert_ignore(table: Any) -> dict[str, Insert]:
    """INSERT that skips rows whose key exists (both backends speak ON CONFLICT)."""
    return {
        "postgresql": postgresql.insert(table).on_conflict_do_nothing(),
        "sqlite": sqlite.insert(table).on_conflict_do_nothing(),
    }


class SqlCaches:
    """The process-wide caches behind the repositories (see `cache.py`)."""

    __slots__ = ("accounts", "blocks", "contacts", "devices")

    def __init__(self) -> None:
        self.accounts: LookupCache[str, Account] = LookupCache()
        self.devices: LookupCache[str, Device] = LookupCache()
        self.blocks: LookupCache[tuple[str, str], bool] = LookupCache()
        self.contacts: LookupCache[tuple[str, str], ContactRow | None] = LookupCache()


class Repo:
    __slots__ = ("_c", "_caches", "_inv")

    def __init__(self, conn: Conn, caches: SqlCaches, inv: Invalidations) -> None:
        self._c = conn
        self._caches = caches
        self._inv = inv

    def _cache_usable(self, cache: LookupCache[Any, Any]) -> bool:
        # A transaction that changed a cached table reads its own uncommitted rows:
        # those must neither be served from the cache nor put into it.
        return not self._inv.touched(cache)


def split_cached(
    cache: LookupCache[K, V], keys: Iterable[K], usable: bool
) -> tuple[dict[K, V], list[K]]:
    """The cached values of `keys`, and the keys that must be queried."""
    found: dict[K, V] = {}
    missing: list[K] = []
    for key in keys:
        hit = cache.get(key) if usable else MISSING
        if hit is MISSING:
            missing.append(key)
        else:
            found[key] = hit  # type: ignore[assignment]
    return found, missing
