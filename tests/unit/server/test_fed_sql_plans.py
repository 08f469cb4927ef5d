"""Federation's hot statements run on the SQLite fast path, with SQLAlchemy's results.

A statement that falls back to SQLAlchemy fires its `before_execute` event; one run
by a plan goes to the driver's cursor and fires none. So after a warm-up (a
statement is planned when it is seen the second time) the hot paths must fire none.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import ClauseElement, Engine, create_engine, event, select
from sqlalchemy.engine import Connection
from tests.unit.server.fed_store_kit import envelope_transaction, exercise, expected_round_zero

from emsg.proto.errors import TxnConflict, Unauthorized
from emsg.proto.federation import RetryPolicy
from emsg.server.clock import FakeClock
from emsg.server.fanout import LocalNotifier
from emsg.server.federation import sqlstore
from emsg.server.federation.auth import Signed
from emsg.server.federation.client import FederationClient
from emsg.server.federation.inbound import Inbound
from emsg.server.federation.keys import SigningKeyring
from emsg.server.federation.outbox import OutboxSender
from emsg.server.federation.ports import OutboxItem, fed
from emsg.server.federation.sqlstore import SqlFedInbox, SqlOutbox, SqlServerKeys
from emsg.server.storage.sql.conn import BlockingConn, Params, PlanCache
from emsg.server.storage.sql.uow import SqliteUnitOfWork

DAY_MS = 86_400_000


class SqlAlchemyConn:
    """The repositories' statements on SQLAlchemy's full path: the reference."""

    dialect = "sqlite"

    def __init__(self, conn: Connection) -> None:
        self._c = conn

    async def execute(self, stmt: Any, params: Params = None) -> Any:
        return self._c.execute(stmt, params)


class Repos:
    def __init__(self, conn: Any) -> None:
        self.outbox = SqlOutbox(conn)
        self.fed_inbox = SqlFedInbox(conn)
        self.server_keys = SqlServerKeys(conn)


def slow_statements(*conns: Connection) -> list[Any]:
    """Statements from now on executed through SQLAlchemy on `conns` (the plain SQL
    the unit of work sends itself, such as BEGIN IMMEDIATE, is not a statement)."""
    slow: list[Any] = []

    def record(_conn: Any, stmt: Any, *_args: Any) -> None:
        if isinstance(stmt, ClauseElement):
            slow.append(stmt)

    for conn in conns:
        event.listen(conn, "before_execute", record)
    return slow


@pytest.fixture
def engines(tmp_path: Path) -> Iterator[tuple[Engine, Engine]]:
    a, b = (create_engine(f"sqlite+pysqlite:///{tmp_path / n}") for n in ("a.db", "b.db"))
    for engine in (a, b):
        sqlstore.metadata.create_all(engine)
    yield a, b
    for engine in (a, b):
        engine.dispose()


async def test_fed_repositories_match_sqlalchemy_and_run_planned(
    engines: tuple[Engine, Engine],
) -> None:
    with engines[0].connect() as ref_conn, engines[1].connect() as fast_conn:
        reference = Repos(SqlAlchemyConn(ref_conn))
        fast = Repos(BlockingConn(fast_conn, PlanCache()))
        slow = slow_statements(fast_conn)
        for r in range(3):
            slow.clear()
            expected = await exercise(reference, r)  # type: ignore[arg-type]
            assert await exercise(fast, r) == expected  # type: ignore[arg-type]
            if r == 0:
                assert expected == expected_round_zero()
                assert slow  # first sightings: SQLAlchemy ran them
            else:
                assert slow == []  # every statement of the script ran from a plan
        for table in sqlstore.metadata.sorted_tables:
            query = select(table).order_by(*table.primary_key.columns)
            assert list(fast_conn.execute(query)) == list(ref_conn.execute(query)), table.name


# --- the two hot paths, end to end on a real SQLite unit of work -------------------


@pytest.fixture
async def uow(tmp_path: Path) -> AsyncIterator[SqliteUnitOfWork]:
    uow = SqliteUnitOfWork.open(f"sqlite:///{tmp_path / 'beta.sqlite3'}")
    async with uow.write() as tx:
        await tx.accounts.create("bob#beta.test", "h", 0)
        await tx.devices.create("DB", "bob#beta.test", "phone", 0)
    yield uow
    await uow.close()


async def test_receiving_a_transaction_runs_on_plans(uow: SqliteUnitOfWork) -> None:
    inbound = Inbound("beta.test", uow, FakeClock())
    # The unit of work's two connections are private; watching them is all this does.
    slow = slow_statements(uow._writer, uow._reader)
    for k in range(4):
        slow.clear()
        signed = Signed("alpha.test", f"alpha.test/n{k}")
        got = await inbound.receive(signed, f"t{k}", envelope_transaction(k), f"h{k}")
        assert got.result == {"txn_id": f"t{k}", "results": [{"id": f"e{k}"}]}
        assert got.woken == ["DB"]
        if k >= 1:  # the first saw each statement once, and ran the hourly prune
            assert slow == []

    # Idempotency, conflicts and replays behave as before, and also run planned.
    slow.clear()
    again = await inbound.receive(
        Signed("alpha.test", "alpha.test/m1"), "t1", envelope_transaction(1), "h1"
    )
    assert (again.result, again.woken) == ({"txn_id": "t1", "results": [{"id": "e1"}]}, [])
    with pytest.raises(TxnConflict):
        await inbound.receive(
            Signed("alpha.test", "alpha.test/m2"), "t1", envelope_transaction(9), "other"
        )
    with pytest.raises(Unauthorized):
        await inbound.receive(
            Signed("alpha.test", "alpha.test/n3"), "t9", envelope_transaction(9), "h9"
        )
    assert slow == []
    async with uow.read() as tx:
        assert [e.pos for e in await tx.events.after("DB", 0, 100)] == [1, 2, 3, 4]
        assert await fed(tx).fed_inbox.get_txn("alpha.test", "t9") is None  # rolled back


class Peer:
    """beta, as seen from the wire: accepts every event, keeps them in order."""

    def __init__(self) -> None:
        self.events: list[str] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        ids = [e["event_id"] for e in body["events"]]
        self.events += ids
        txn_id = request.url.path.rsplit("/", 1)[1]
        return httpx.Response(200, json={"txn_id": txn_id, "results": [{"id": i} for i in ids]})


async def test_an_outbox_step_runs_on_plans(uow: SqliteUnitOfWork, tmp_path: Path) -> None:
    clock, peer = FakeClock(), Peer()
    ring = SigningKeyring.load(tmp_path, clock.now_ms(), 7 * DAY_MS)
    slow = slow_statements(uow._writer, uow._reader)
    async with httpx.AsyncClient(transport=httpx.MockTransport(peer.handle)) as http:
        client = FederationClient("alpha.test", ring, http, clock)
        sender = OutboxSender(uow, client, clock, LocalNotifier(), RetryPolicy(), batch_size=2)
        for k in range(4):
            async with uow.write() as tx:
                items = [
                    OutboxItem("beta.test", "envelope", f"ev{k}-{i}", "alice#alpha.test", "DA",
                               {"event_id": f"ev{k}-{i}"})
                    for i in range(3)
                ]  # fmt: skip
                await fed(tx).outbox.enqueue(items, clock.now_ms())
            slow.clear()
            assert await sender._step("beta.test") == 0.0  # two rows
            assert await sender._step("beta.test") == 0.0  # the third
            assert await sender._step("beta.test") is None  # the queue is empty
            if k >= 1:  # the first took the lease, read the backoff, saw each statement once
                assert slow == []
        await sender.close()
    assert peer.events == [f"ev{k}-{i}" for k in range(4) for i in range(3)]
