"""One awaitable `execute` over either a blocking or an asyncio SQLAlchemy connection.

The repositories are written once against `Conn`. SQLite runs on the event-loop
thread through the stdlib driver: in WAL mode with synchronous=NORMAL a statement
or a commit takes microseconds, far less than the hop to a worker thread that an
async driver needs for every statement. PostgreSQL keeps asyncpg, where a
statement is a network round trip that must not block the loop.

On SQLite, SQLAlchemy's execution machinery costs several times what the
statement itself does (about 40 us against 5), and a message send runs a handful
of statements. So a statement object seen a second time (the module-level
statements of the repositories; a statement built per call is never seen twice)
is compiled once into a `_Plan` and from then on run on the driver's cursor
directly. Statements the plan cannot express exactly (defaults computed by
SQLAlchemy, empty IN lists) keep going through SQLAlchemy.
"""

from __future__ import annotations

import sqlite3
from collections import namedtuple
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Final, Protocol

from sqlalchemy import CursorResult, Executable, Select
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.compiler import SQLCompiler

Params = Mapping[str, Any] | Sequence[Mapping[str, Any]] | None


class Result(Protocol):
    """What the repositories read from a statement's result."""

    @property
    def rowcount(self) -> int: ...

    def __iter__(self) -> Iterator[Any]: ...

    def first(self) -> Any: ...

    def scalar_one(self) -> Any: ...


class Conn(Protocol):
    @property
    def dialect(self) -> str: ...

    async def execute(self, stmt: Executable, params: Params = None) -> Result: ...


class BlockingConn:
    """A SQLite connection used on the loop thread; `execute` never suspends."""

    __slots__ = ("_c", "_driver", "_plans")

    def __init__(self, conn: Connection, plans: PlanCache) -> None:
        self._c = conn
        self._driver: sqlite3.Connection = conn.connection.driver_connection  # type: ignore[assignment]
        self._plans = plans

    @property
    def dialect(self) -> str:
        return "sqlite"

    async def execute(self, stmt: Executable, params: Params = None) -> Result:
        first = params[0] if isinstance(params, Sequence) and params else params
        plan = self._plans.get(stmt, first, self._c.dialect)  # type: ignore[arg-type]
        if plan is None:
            return self._c.execute(stmt, params)
        return plan.run(self._driver, params)


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


# --- the SQLite fast path ---------------------------------------------------------

_UNPLANNABLE: Final = object()
_REQUIRED: Final = object()  # a parameter the caller passes
_MAX_PLANS: Final = 512
Processor = Callable[[Any], Any] | None


class PlanCache:
    """Plans by statement object; a statement gets one when it is seen again."""

    __slots__ = ("_plans", "_seen")

    def __init__(self) -> None:
        # id -> (statement, plan): the statement is kept so that its id is not reused.
        self._plans: dict[tuple[int, tuple[str, ...]], tuple[Executable, Any]] = {}
        self._seen: dict[int, Executable] = {}

    def get(
        self, stmt: Executable, params: Mapping[str, Any] | None, dialect: Dialect
    ) -> _Plan | None:
        keys = tuple(params) if params else ()
        entry = self._plans.get((id(stmt), keys))
        if entry is not None and entry[0] is stmt:
            plan = entry[1]
            return None if plan is _UNPLANNABLE or not plan.fits(params) else plan
        if self._seen.get(id(stmt)) is not stmt:
            if len(self._seen) >= _MAX_PLANS:
                self._seen.clear()
            self._seen[id(stmt)] = stmt
            return None
        if len(self._plans) >= _MAX_PLANS:
            self._plans.clear()
        plan = _Plan.compile(stmt, keys, dialect)
        self._plans[(id(stmt), keys)] = (stmt, _UNPLANNABLE if plan is None else plan)
        return plan if plan is not None and plan.fits(params) else None


class _Rows:
    __slots__ = ("_rows", "rowcount")

    def __init__(self, rows: list[Any], rowcount: int) -> None:
        self._rows = rows
        self.rowcount = rowcount

    def __iter__(self) -> Iterator[Any]:
        return iter(self._rows)

    def first(self) -> Any:
        return self._rows[0] if self._rows else None

    def scalar_one(self) -> Any:
        if len(self._rows) != 1:
            raise LookupError(f"expected one row, got {len(self._rows)}")
        return self._rows[0][0]


class _Plan:
    """A statement compiled once for the sqlite3 driver (qmark parameters)."""

    __slots__ = ("_binds", "_expanding", "_processors", "_row", "_sql")

    def __init__(
        self,
        sql: str,
        binds: list[tuple[str, Any]],
        expanding: frozenset[str],
        row: Any,
        processors: list[Processor] | None,
    ) -> None:
        self._sql = sql
        self._binds = binds  # (parameter name, constant or _REQUIRED)
        self._expanding = expanding
        self._row = row
        self._processors = processors

    @classmethod
    def compile(cls, stmt: Executable, keys: tuple[str, ...], dialect: Dialect) -> _Plan | None:
        compiled = stmt.compile(dialect=dialect, column_keys=list(keys))  # type: ignore[attr-defined]
        if not isinstance(compiled, SQLCompiler) or compiled.literal_execute_params:
            return None
        binds: list[tuple[str, Any]] = []
        expanding = set()
        for name in compiled.positiontup or ():
            bind = compiled.binds[name]
            if bind.type.dialect_impl(dialect).bind_processor(dialect) is not None:
                return None
            if bind.expanding:
                expanding.add(name)
            if name in keys:
                binds.append((name, _REQUIRED))
            elif bind.callable is None and bind.value is not None and not bind.expanding:
                binds.append((name, bind.value))  # a literal such as LIMIT's OFFSET -1
            else:
                return None  # a default SQLAlchemy computes at execution
        row: Any = None
        processors: list[Processor] | None = None
        if isinstance(stmt, Select):
            columns = list(stmt.selected_columns)
            row = namedtuple("Row", [c.key for c in columns], rename=True)  # type: ignore[misc, no-redef]
            procs: list[Processor] = [
                c.type.dialect_impl(dialect).result_processor(dialect, None) for c in columns
            ]
            processors = procs if any(p is not None for p in procs) else None
        return cls(compiled.string, binds, frozenset(expanding), row, processors)

    def fits(self, params: Mapping[str, Any] | None) -> bool:
        # An empty IN list needs SQLAlchemy's "empty set" rendering.
        return not self._expanding or all(params and params[n] for n in self._expanding)

    def _args(self, params: Mapping[str, Any]) -> list[Any]:
        return [params[name] if value is _REQUIRED else value for name, value in self._binds]

    def run(self, db: sqlite3.Connection, params: Params) -> _Rows:
        if isinstance(params, Sequence):
            cursor = db.executemany(self._sql, [self._args(p) for p in params])
            return _Rows([], cursor.rowcount)
        args = self._args(params or {})
        sql = self._sql
        if self._expanding:
            sql, args = self._expand(sql, args)
        cursor = db.execute(sql, args)
        if self._row is None:
            return _Rows([], cursor.rowcount)
        make = self._row._make
        raw = cursor.fetchall()
        if self._processors is None:
            return _Rows([make(r) for r in raw], -1)
        procs = self._processors
        return _Rows(
            [make(v if p is None else p(v) for p, v in zip(procs, r, strict=True)) for r in raw],
            -1,
        )

    def _expand(self, sql: str, args: list[Any]) -> tuple[str, list[Any]]:
        flat: list[Any] = []
        for (name, _), value in zip(self._binds, args, strict=True):
            if name in self._expanding:
                sql = sql.replace(f"__[POSTCOMPILE_{name}]", ", ".join("?" * len(value)), 1)
                flat.extend(value)
            else:
                flat.append(value)
        return sql, flat
