"""The sender's lease on a destination (instances sharing one database must not send
to the same peer at once). A sending task keeps the lease in memory and writes it
only to renew it, once half of it has run out, so the lease in the database always
covers the time the task believes it holds it."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from tests.integration.federation.fed_kit import homes

from emsg.server.clock import FakeClock
from emsg.server.federation.outbox import LEASE_MS
from emsg.server.federation.ports import fed


def lease_until(tmp: Path, destination: str) -> int:
    conn = sqlite3.connect(tmp / "alpha.test" / "emsg.sqlite3")
    try:
        (until,) = conn.execute(
            "SELECT lease_until FROM fed_destinations WHERE destination = ?", (destination,)
        ).fetchone()
        return int(until)
    finally:
        conn.close()


async def test_the_lease_is_renewed_before_it_lapses_and_excludes_others(tmp_path: Path) -> None:
    clock = FakeClock(time.time_ns() // 1_000_000)
    async with homes(tmp_path, "alpha.test", "beta.test", clock=clock) as (_, (alpha, beta)):
        alice = await alpha.register("alice")
        bob = await beta.register("bob")

        async def deliver(txn: str) -> None:
            assert (await alice.send(txn, bob)).status_code == 200
            await alpha.drain()

        await deliver("t1")
        taken = lease_until(tmp_path, "beta.test")
        assert taken == clock.now_ms() + LEASE_MS

        # More transactions while most of the lease is left: no lease write.
        clock.advance(LEASE_MS / 1000 / 2 - 1)
        await deliver("t2")
        assert lease_until(tmp_path, "beta.test") == taken

        # Past half of it: renewed, while it is still held.
        clock.advance(2)
        await deliver("t3")
        assert lease_until(tmp_path, "beta.test") == clock.now_ms() + LEASE_MS

        # Another instance sharing the database cannot take it meanwhile.
        now = clock.now_ms()
        async with alpha.services.uow.write() as tx:
            assert not await fed(tx).outbox.lease("beta.test", "another", now, now + LEASE_MS)

        got = [e for e in (await bob.sync())["events"] if e["kind"] == "envelope"]
        assert len(got) == 3
