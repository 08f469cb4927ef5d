"""The SQL unit of work: engine setup, migrations to head, one transaction per use."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import event, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from emsg.server.storage import ports
from emsg.server.storage.sql.repos import (
    SqlAccounts,
    SqlBlocks,
    SqlContacts,
    SqlDevices,
    SqlEvents,
    SqlHeld,
    SqlKeys,
    SqlTokens,
    SqlTxns,
)

_MIGRATIONS = Path(__file__).parent / "migrations"


class SqlTx:
    """All repositories over one connection inside one transaction."""

    __slots__ = (
        "accounts",
        "blocks",
        "contacts",
        "devices",
        "events",
        "held",
        "keys",
        "tokens",
        "txns",
    )

    def __init__(self, conn: AsyncConnection) -> None:
        self.accounts: ports.Accounts = SqlAccounts(conn)
        self.devices: ports.Devices = SqlDevices(conn)
        self.tokens: ports.Tokens = SqlTokens(conn)
        self.keys: ports.Keys = SqlKeys(conn)
        self.contacts: ports.Contacts = SqlContacts(conn)
        self.blocks: ports.Blocks = SqlBlocks(conn)
        self.events: ports.Events = SqlEvents(conn)
        self.held: ports.Held = SqlHeld(conn)
        self.txns: ports.Txns = SqlTxns(conn)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    # NORMAL in WAL mode is durable against process crashes (only a power cut can
    # lose the last commits), which is what "committed before acknowledged" needs.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def _upgrade(sync_conn: Connection) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    cfg.attributes["connection"] = sync_conn
    command.upgrade(cfg, "head")


class SqlUnitOfWork:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._sqlite = engine.dialect.name == "sqlite"
        # SQLite has one writer; serialising writers here avoids SQLITE_BUSY on the
        # read-to-write upgrade of a deferred transaction. PostgreSQL needs no lock.
        self._write_lock = asyncio.Lock() if self._sqlite else None

    @classmethod
    async def open(cls, url: str) -> SqlUnitOfWork:
        kwargs: dict[str, Any] = {}
        if url.startswith("sqlite"):
            path = url.split("///", 1)[-1]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
        else:
            kwargs = {"pool_size": 10, "max_overflow": 20, "pool_pre_ping": True}
        engine = create_async_engine(url, **kwargs)
        if engine.dialect.name == "sqlite":
            event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        async with engine.begin() as conn:
            await conn.run_sync(_upgrade)
        return cls(engine)

    @asynccontextmanager
    async def write(self) -> AsyncIterator[ports.Tx]:
        if self._write_lock is None:
            async with self._engine.begin() as conn:
                yield SqlTx(conn)
            return
        async with self._write_lock, self._engine.begin() as conn:
            yield SqlTx(conn)

    @asynccontextmanager
    async def read(self) -> AsyncIterator[ports.Tx]:
        async with self._engine.connect() as conn:
            yield SqlTx(conn)

    async def ping(self) -> None:
        async with self._engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def close(self) -> None:
        await self._engine.dispose()
