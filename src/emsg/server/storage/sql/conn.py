"""One awaitable `execute` over either a blocking or an asyncio SQLAlchemy connection.

The repositories are written once against `Conn`. SQLite runs on the event-loop
thread through the stdlib driver: in WAL mode with synchronous=NORMAL a statement
or a commit takes microseconds, far less than the hop to a worker thread that an
async driver needs for every statement. PostgreSQL keeps asyncpg, where a
statement is a network round trip that must not block the loop.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from sqlalchemy import CursorResult, Executable
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

Params = Mapping[str, Any] | Sequence[Mapping[str, Any]] | None


class Conn(Protocol):
    @property
    def dialect(self) -> str: ...

    async def execute(self, stmt: Executable, params: Params = None) -> CursorResult[Any]: ...


class BlockingConn:
    """A SQLite connection used on the loop thread; `execute` never suspends."""

    __slots__ = ("_c",)

    def __init__(self, conn: Connection) -> None:
        self._c = conn

    @property
    def dialect(self) -> str:
        return self._c.dialect.name

    async def execute(self, stmt: Executable, params: Params = None) -> CursorResult[Any]:
        return self._c.execute(stmt, params)


class AwaitingConn:
    """An asyncio connection (asyncpg): every statement is awaited."""

    __slots__ = ("_c",)

    def __init__(self, conn: AsyncConnection) -> None:
        self._c = conn

    @property
    def dialect(self) -> str:
        return self._c.dialect.name

    async def execute(self, stmt: Executable, params: Params = None) -> CursorResult[Any]:
        return await self._c.execute(stmt, params)
