"""The federation repositories give the same answers on PostgreSQL as on SQLite.

Their statements are built once with named parameters (expanding IN lists, a bound
LIMIT, ON CONFLICT per dialect): one script of calls, run round by round on both
backends, must observe the same thing call for call.

Uses the PostgreSQL service on 127.0.0.1:5432 with a fresh database per run. When
`CI` is set a missing service is a failure, never a skip.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from tests.unit.server.fed_store_kit import exercise, expected_round_zero

from emsg.server.federation.ports import fed
from emsg.server.storage.ports import UnitOfWork
from emsg.server.storage.sql.uow import AsyncUnitOfWork, SqliteUnitOfWork

pytestmark = pytest.mark.postgres


async def _round(uow: UnitOfWork, r: int) -> list[Any]:
    async with uow.write() as tx:
        return await exercise(fed(tx), r)


async def test_fed_repositories_agree_on_both_backends(database: str, tmp_path: Path) -> None:
    pg = await AsyncUnitOfWork.open(database)
    lite = SqliteUnitOfWork.open(f"sqlite:///{tmp_path / 'fed.sqlite3'}")
    try:
        for r in range(3):
            on_sqlite = await _round(lite, r)
            assert await _round(pg, r) == on_sqlite
            if r == 0:
                assert on_sqlite == expected_round_zero()
    finally:
        await pg.close()
        await lite.close()
