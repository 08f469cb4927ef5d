"""Federation tables on PostgreSQL: alpha keeps its data (outbound queue, leases,
inbound ledger, nonces, remote keys) in PostgreSQL, beta in SQLite; both real
processes over TLS. Friends and messages both ways, then alpha is SIGKILLed with
a queue for beta that is down, and the queue drains in order after restarts.

Uses the PostgreSQL service on 127.0.0.1:5432 with a fresh database per run. When
`CI` is set a missing service is a failure, never a skip.
"""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest
from tests.integration.federation.client_kit import (
    assert_no_plaintext,
    befriend,
    received,
    register,
    running,
)

from emsg.testing.tls import federation

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(300)]


async def _rows(database: str, table: str) -> int:
    conn = await asyncpg.connect(database.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        return int(await conn.fetchval(f"SELECT count(*) FROM {table}"))
    finally:
        await conn.close()


async def test_federation_with_one_server_on_postgres(
    database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    alpha, beta = federation(
        tmp_path / "fed", ["alpha.test", "beta.test"], retry_cap="200ms",
        databases={"alpha.test": database},
    )  # fmt: skip
    monkeypatch.setenv("SSL_CERT_FILE", str(alpha.pki.ca_file))
    homes = tmp_path / "clients"
    with running(alpha, beta):
        alice = await register(alpha, homes, "alice")
        bob = await register(beta, homes, "bob")
        try:
            await befriend(alice, bob)
            await alice.send_text(str(bob.address), "from postgres to sqlite")
            assert await received(bob, 1) == ["from postgres to sqlite"]
            await bob.send_text(str(alice.address), "and back to postgres")
            assert await received(alice, 1) == ["and back to postgres"]
            # alpha's side of federation really is in PostgreSQL.
            assert await _rows(database, "fed_server_keys") == 1  # beta's key, cached
            assert await _rows(database, "fed_txns") >= 1  # beta's transactions, recorded
            assert await _rows(database, "fed_destinations") == 1  # its queue to beta

            # beta goes down; alpha queues durably in PostgreSQL, is SIGKILLed, and
            # after both restart everything arrives once, in order.
            beta.stop()
            sent = [f"queued in postgres #{i}" for i in range(20)]
            for text in sent:
                await alice.send_text(str(bob.address), text)
            assert await _rows(database, "fed_outbox") == len(sent)
            alpha.kill()
            beta.start()
            alpha.start()
            assert await received(bob, len(sent)) == sent
            assert await _rows(database, "fed_outbox") == 0
        finally:
            await alice.aclose()
            await bob.aclose()
    assert_no_plaintext([alpha, beta], ["from postgres to sqlite", "and back", *sent])
