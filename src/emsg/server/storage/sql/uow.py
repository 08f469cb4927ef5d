"""The SQL unit of work: engine setup, migrations to head, one transaction per use.

SQLite runs on the event-loop thread (see `conn.py`) over two connections: one
writer, serialised by a lock, and readers that each see the last commit (WAL
snapshots), never another coroutine's half-done write. No SQLite transaction is
held across an await that waits on anything but the database: the repositories'
awaits return at once on this backend. PostgreSQL runs over asyncpg's pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, NullPool, create_engine, event, make_url, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from emsg.server.federation import ports as fp
from emsg.server.federation.sqlstore import SqlFedInbox, SqlOutbox, SqlServerKeys
from emsg.server.storage import ports
from emsg.server.storage.sql.base import SqlCaches
from emsg.server.storage.sql.cache import Invalidations
from emsg.server.storage.sql.conn import AwaitingConn, BlockingConn, Conn, PlanCache
from emsg.server.storage.sql.repos import (
    SqlAccounts,
    SqlDevices,
    SqlIdentityBackups,
    SqlKeys,
    SqlTokens,
)
from emsg.server.storage.sql.repos_contacts import SqlBlocks, SqlContacts
from emsg.server.storage.sql.repos_queue import SqlEvents, SqlHeld, SqlTxns
from emsg.sqlite_checkpoint import WalCheckpointer

_MIGRATIONS = Path(__file__).parent / "migrations"
log = logging.getLogger("emsg.server.storage")


class SqlTx:
    """All repositories over one connection inside one transaction."""

    __slots__ = (
        "accounts",
        "backups",
        "blocks",
        "contacts",
        "devices",
        "events",
        "fed_inbox",
        "held",
        "keys",
        "outbox",
        "server_keys",
        "tokens",
        "txns",
    )

    def __init__(self, conn: Conn, caches: SqlCaches, inv: Invalidations) -> None:
        self.accounts: ports.Accounts = SqlAccounts(conn, caches, inv)
        self.devices: ports.Devices = SqlDevices(conn, caches, inv)
        self.tokens: ports.Tokens = SqlTokens(conn, caches, inv)
        self.backups: ports.IdentityBackups = SqlIdentityBackups(conn, caches, inv)
        self.keys: ports.Keys = SqlKeys(conn, caches, inv)
        self.contacts: ports.Contacts = SqlContacts(conn, caches, inv)
        self.blocks: ports.Blocks = SqlBlocks(conn, caches, inv)
        self.events: ports.Events = SqlEvents(conn, caches, inv)
        self.held: ports.Held = SqlHeld(conn, caches, inv)
        self.txns: ports.Txns = SqlTxns(conn, caches, inv)
        self.outbox: fp.Outbox = SqlOutbox(conn)
        self.fed_inbox: fp.FedInbox = SqlFedInbox(conn)
        self.server_keys: fp.ServerKeyCache = SqlServerKeys(conn)


def _upgrade(sync_conn: Connection) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    cfg.attributes["connection"] = sync_conn
    command.upgrade(cfg, "head")


# The writer checkpoints only if the background checkpointer falls far behind.
_WAL_BACKSTOP_PAGES: Final = 16_384


def _sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
    # Autocommit at the driver: the writer issues BEGIN IMMEDIATE itself, and a
    # reader's statements each see the last commit without holding a snapshot.
    dbapi_conn.isolation_level = None
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    # NORMAL in WAL mode is durable against process crashes (only a power cut can
    # lose the last commits), which is what "committed before acknowledged" needs.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    # A checkpoint fsyncs; done by a commit it would stall the event loop (about
    # 100 us per commit, amortised). `WalCheckpointer` does it in a worker thread.
    cursor.execute(f"PRAGMA wal_autocheckpoint={_WAL_BACKSTOP_PAGES}")
    cursor.close()


def _create_private(path: Path) -> None:
    """Create the database file readable by its owner only (it holds password
    hashes, token hashes and identity backups); SQLite gives its `-wal` and `-shm`
    files the database file's permissions. An existing file is left as it is: its
    mode is the operator's choice."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


class SqliteUnitOfWork:
    def __init__(self, engine: Engine, path: str) -> None:
        self._engine = engine
        self._caches = SqlCaches()
        self._writer = engine.connect()
        driver = self._writer.connection.driver_connection
        assert isinstance(driver, sqlite3.Connection)
        self._writer_driver = driver
        self._write_lock = asyncio.Lock()
        self._reader = engine.connect()
        self._checkpointer = WalCheckpointer(Path(path))
        self._plans = PlanCache()

    @classmethod
    def open(cls, url: str) -> SqliteUnitOfWork:
        parsed = make_url(url).set(drivername="sqlite+pysqlite")
        path = parsed.database or ""
        if path in ("", ":memory:") or path.startswith("file:"):
            raise ValueError("SQLite needs a database file path (readers and writer share it)")
        Path(path).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        _create_private(Path(path))
        engine = create_engine(parsed, poolclass=NullPool)
        event.listen(engine, "connect", _sqlite_connect)
        with engine.connect() as conn:
            conn.exec_driver_sql("BEGIN")
            _upgrade(conn)
            conn.commit()
        return cls(engine, path)

    @asynccontextmanager
    async def write(self) -> AsyncIterator[ports.Tx]:
        inv = Invalidations()
        # BEGIN and COMMIT go to the driver itself: SQLAlchemy's transaction and
        # `exec_driver_sql` took 20 us for an empty write transaction, this 12.
        # The driver is in autocommit (isolation_level=None), so SQLAlchemy's own
        # begin and commit send nothing; a statement that falls back to SQLAlchemy
        # only opens its bookkeeping, which is closed after our COMMIT or ROLLBACK.
        driver = self._writer_driver
        async with self._write_lock:
            try:
                # Take the write lock up front: a deferred transaction that reads
                # and then writes could fail with SQLITE_BUSY on the upgrade.
                driver.execute("BEGIN IMMEDIATE")
                yield SqlTx(BlockingConn(self._writer, self._plans), self._caches, inv)
                driver.execute("COMMIT")
            finally:
                if driver.in_transaction:  # an error, or a COMMIT that failed
                    driver.execute("ROLLBACK")
                if self._writer.in_transaction():
                    self._writer.rollback()  # SQLAlchemy's bookkeeping only: no SQL
                inv.replay()
        self._checkpointer.committed()

    @asynccontextmanager
    async def read(self) -> AsyncIterator[ports.Tx]:
        # Autocommit: no transaction to hold. The repositories never suspend on this
        # backend, so a read block runs in one go and sees one committed state.
        try:
            yield SqlTx(BlockingConn(self._reader, self._plans), self._caches, Invalidations())
        finally:
            self._reader.rollback()  # ends SQLAlchemy's bookkeeping; no SQL is sent

    async def ping(self) -> None:
        self._reader.exec_driver_sql("SELECT 1")
        self._reader.rollback()

    async def close(self) -> None:
        async with self._write_lock:
            await asyncio.to_thread(self._checkpointer.close)  # waits for one under way
            self._writer.close()
            self._reader.close()
            self._engine.dispose()


# pg_advisory_xact_lock key of the writer lock: "EMSG" in ASCII.
_WRITER_LOCK: Final = 0x454D5347


class AsyncUnitOfWork:
    """PostgreSQL over asyncpg: concurrent reads from a connection pool, and write
    transactions one at a time, across every server process on the database.

    Each write takes one transaction-level advisory lock first, so writes commit
    in the order they began, as on SQLite. Queue positions come from a sequence
    (`events.pos`): two concurrent writers could commit them out of order, and a
    stream that had delivered and acknowledged position p, deleting everything up
    to it, would never see the smaller position committed after. The services'
    check-then-write steps (a contact request, a transaction id) also assume this
    serial order. Reads take no lock.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._caches = SqlCaches()

    @classmethod
    async def open(cls, url: str) -> AsyncUnitOfWork:
        engine = create_async_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)
        async with engine.begin() as conn:
            await conn.run_sync(_upgrade)
        return cls(engine)

    @asynccontextmanager
    async def write(self) -> AsyncIterator[ports.Tx]:
        inv = Invalidations()
        try:
            async with self._engine.begin() as conn:
                await conn.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": _WRITER_LOCK}
                )
                yield SqlTx(AwaitingConn(conn), self._caches, inv)
        finally:
            inv.replay()

    @asynccontextmanager
    async def read(self) -> AsyncIterator[ports.Tx]:
        async with self._engine.connect() as conn:
            yield SqlTx(AwaitingConn(conn), self._caches, Invalidations())

    async def ping(self) -> None:
        async with self._engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def close(self) -> None:
        await self._engine.dispose()


async def open_unit_of_work(url: str) -> ports.UnitOfWork:
    """SQLite (any `sqlite` URL, run on the loop thread) or an asyncio database URL."""
    backend = make_url(url).get_backend_name()
    if backend == "sqlite":
        return SqliteUnitOfWork.open(url)
    if backend != "postgresql":  # the writer lock is PostgreSQL's advisory lock
        raise ValueError(f"database_url: {backend} is not supported (use sqlite or postgresql)")
    return await AsyncUnitOfWork.open(url)
