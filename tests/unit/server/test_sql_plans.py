"""The SQLite fast path gives what SQLAlchemy gives, statement for statement."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, insert, select
from sqlalchemy.engine import Connection

from emsg.server.storage.sql import repos, repos_contacts, repos_queue
from emsg.server.storage.sql import tables as t
from emsg.server.storage.sql.conn import BlockingConn, PlanCache


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = create_engine(f"sqlite+pysqlite:///{tmp_path / 'db.sqlite3'}")
    t.metadata.create_all(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def conn(engine: Engine) -> Iterator[Connection]:
    with engine.connect() as connection:
        connection.execute(
            insert(t.accounts),
            [
                {
                    "address": f"u{i}#a.example",
                    "password_hash": "h",
                    "policy": "open",
                    "created_at": i,
                }
                for i in range(3)
            ],
        )
        connection.execute(
            insert(t.devices),
            [
                {
                    "device_id": f"D{i}",
                    "address": f"u{i}#a.example",
                    "name": "n",
                    "revoked": i == 1,
                    "created_at": i,
                }
                for i in range(3)
            ],
        )
        yield connection


def rows(result: Any) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in result]


async def test_planned_statements_match_sqlalchemy(conn: Connection) -> None:
    fast = BlockingConn(conn, PlanCache())
    events = [
        {"device_id": "D0", "kind": "envelope", "payload": f'{{"n":{i}}}', "created_at": i}
        for i in range(5)
    ]
    for _ in range(3):  # planned from the second sighting on: both paths are exercised
        await fast.execute(repos_queue._EVENT_ADD, events)
    cases: list[tuple[Any, dict[str, Any]]] = [
        (repos_queue._EVENT_AFTER, {"b_device_id": "D0", "b_since": 2, "b_limit": 4}),
        (repos._ACCOUNT_GET_MANY, {"b_addresses": ["u0#a.example", "u2#a.example"]}),
        (repos._DEVICE_GET_MANY, {"b_device_ids": ["D0", "D1", "D2"]}),  # Boolean column
        (repos._ACCOUNT_GET_MANY, {"b_addresses": []}),  # empty IN: SQLAlchemy renders it
        (repos_contacts._BLOCKERS, {"b_owners": ["u0#a.example"], "b_peer": "u1#a.example"}),
    ]
    for stmt, params in cases:
        expected = rows(conn.execute(stmt, params))
        for _ in range(3):
            assert rows(await fast.execute(stmt, params)) == expected
    revoked = [r.revoked for r in await fast.execute(*cases[2])]
    assert revoked == [False, True, False]  # the result processor ran: bools, not ints
    after = list(await fast.execute(*cases[0]))
    assert [r.pos for r in after] == [3, 4, 5, 6]  # attribute access like SQLAlchemy rows
    assert len(rows(conn.execute(select(t.events)))) == 15


async def test_rowcount_first_and_scalar(conn: Connection) -> None:
    fast = BlockingConn(conn, PlanCache())
    add = repos_queue._TXN_ADD["sqlite"]
    values = {"device_id": "D0", "txn_id": "x", "body_hash": "h", "response": "{}", "created_at": 1}
    counts = [(await fast.execute(add, values)).rowcount for _ in range(3)]
    assert counts == [1, 0, 0]  # ON CONFLICT DO NOTHING, through both paths
    got = await fast.execute(repos_queue._TXN_GET, {"b_device_id": "D0", "b_txn_id": "x"})
    got = await fast.execute(repos_queue._TXN_GET, {"b_device_id": "D0", "b_txn_id": "x"})
    assert got.first().body_hash == "h"
    none = await fast.execute(repos_queue._TXN_GET, {"b_device_id": "D0", "b_txn_id": "y"})
    assert none.first() is None
    gone = await fast.execute(repos_queue._EVENT_ACK, {"b_device_id": "D0", "b_upto": 10})
    gone = await fast.execute(repos_queue._EVENT_ACK, {"b_device_id": "D0", "b_upto": 10})
    assert gone.rowcount == 0


async def test_statements_built_per_call_stay_on_sqlalchemy(conn: Connection) -> None:
    plans = PlanCache()
    fast = BlockingConn(conn, plans)
    for i in range(5):
        stmt = select(t.accounts.c.address).where(t.accounts.c.created_at == i)
        assert rows(await fast.execute(stmt)) == ([(f"u{i}#a.example",)] if i < 3 else [])
    assert not plans._plans  # never seen twice: never compiled into a plan
