"""One script of calls to the federation repositories, returning what each call
observed, so that execution paths can be compared call for call: SQLite's fast
path against SQLAlchemy's, SQLite against PostgreSQL.

Each round uses fresh ids and its own clock, so a round run again is not a replay
of the last one, but the earlier rounds' rows are still there to be found, counted
against and pruned.
"""

from __future__ import annotations

from typing import Any

from emsg.proto.federation import Backoff, FedEvent, FedKind, Transaction
from emsg.proto.wire import Ciphertext, Envelope
from emsg.server.federation.ports import FedTx, OutboxItem, OutboxRow, RemoteKey
from emsg.server.storage.records import StoredTxn

ORIGIN = "alpha.test"


def envelope_transaction(
    k: int = 1, sender: str = "alice#alpha.test", recipient: str = "bob#beta.test"
) -> Transaction:
    """A transaction from alpha.test to beta.test of one envelope, `e{k}` sent at `k`."""
    envelope = Envelope(
        id=f"e{k}", sender=sender, sender_device="DA", recipient=recipient, device_id="DB",
        ciphertext=Ciphertext(type=1, body="x", sender_key="A" * 43), sent_at=k,
    )  # fmt: skip
    event = FedEvent(id=f"e{k}", kind=FedKind.ENVELOPE, envelope=envelope)
    return Transaction(origin=ORIGIN, destination="beta.test", events=[event])


def _items(r: int) -> list[OutboxItem]:
    destinations = ["beta.test", "gamma.test", "beta.test"]
    return [
        OutboxItem(d, "envelope", f"ev{r}-{i}", "alice#alpha.test", "DA" if i else None,
                   {"n": i, "round": r})
        for i, d in enumerate(destinations)
    ]  # fmt: skip


async def exercise(f: FedTx, r: int) -> list[Any]:
    """Round `r` of the script over one transaction's repositories."""
    now = 1000 * (r + 1)
    inbox, outbox, keys = f.fed_inbox, f.outbox, f.server_keys
    seen: list[Any] = []
    look = seen.append

    # Nonces: the first use counts, any later one is a replay.
    look(await inbox.use_nonce(f"{ORIGIN}/n{r}", now))
    look(await inbox.use_nonce(f"{ORIGIN}/n0", now))

    # The transaction ledger, by (origin, id).
    look(await inbox.get_txn(ORIGIN, f"t{r}"))
    await inbox.put_txn(ORIGIN, f"t{r}", f"h{r}", {"txn_id": f"t{r}", "results": [{"id": "e"}]},
                        now)  # fmt: skip
    look(await inbox.get_txn(ORIGIN, f"t{r}"))
    look(await inbox.get_txn("gamma.test", f"t{r}"))

    # Received events: overlapping the previous round's, marked again without error.
    ids = [f"e{r}", f"e{r + 1}", f"e{r + 2}"]
    look(sorted(await inbox.seen(ORIGIN, ids)))
    await inbox.mark_seen(ORIGIN, ids, now)
    look(sorted(await inbox.seen(ORIGIN, [*ids, "nope"])))
    look(sorted(await inbox.seen("gamma.test", ids)))
    look(await inbox.seen(ORIGIN, []))

    # The outbound queue: in order per destination, a bounded batch, deletes by id.
    await outbox.enqueue(_items(r), now)
    look(sorted(await outbox.pending_destinations()))
    first = await outbox.batch("beta.test", 2)
    look(first)
    await outbox.delete([first[0].id])
    await outbox.delete([])
    look(await outbox.batch("beta.test", 100))
    look(await outbox.older_than("gamma.test", now))
    look(await outbox.older_than("gamma.test", now + 1))

    # A destination of this round: its lease and its backoff.
    dest = f"d{r}.test"
    look(await outbox.backoff(dest))
    look(await outbox.lease(dest, "A", now, now + 500))
    look(await outbox.lease(dest, "B", now, now + 500))  # A holds it
    look(await outbox.lease(dest, "A", now + 100, now + 1500))  # A renews
    look(await outbox.lease(dest, "B", now + 1500, now + 2000))  # not yet expired
    look(await outbox.lease(dest, "B", now + 1501, now + 2000))  # expired: B takes it
    await outbox.set_backoff(dest, Backoff(r + 1, now + 7))
    look(await outbox.backoff(dest))
    await outbox.set_backoff(dest, Backoff())
    look(await outbox.backoff(dest))

    # Pruning: nonces older than this round, ledger rows older than the last one.
    await inbox.prune(now, now - 1000)
    look(await inbox.use_nonce(f"{ORIGIN}/n{r}", now))  # this round's is kept
    look(await inbox.get_txn(ORIGIN, "t0"))
    look(sorted(await inbox.seen(ORIGIN, ["e0", "e1", "e2", "e3"])))

    # Remote server keys: replaced per (domain, key id).
    await keys.put(
        [
            RemoteKey(ORIGIN, f"k{r}", "K", now + 10, None),
            RemoteKey(ORIGIN, "k0", f"K{r}", now, now),
        ],
        now,
    )
    look(sorted((await keys.get(ORIGIN)).items()))
    look(await keys.get("gamma.test"))
    return seen


def expected_round_zero() -> list[Any]:
    """What round 0 observes on a fresh database (ids start at 1)."""
    items = _items(0)
    rows = [OutboxRow(i + 1, item, 1000) for i, item in enumerate(items)]
    return [
        True, False,
        None, StoredTxn("h0", {"txn_id": "t0", "results": [{"id": "e"}]}), None,
        [], ["e0", "e1", "e2"], [], set(),
        ["beta.test", "gamma.test"], [rows[0], rows[2]], [rows[2]], [], [rows[1]],
        Backoff(), True, False, True, False, True, Backoff(1, 1007), Backoff(),
        False, StoredTxn("h0", {"txn_id": "t0", "results": [{"id": "e"}]}), ["e0", "e1", "e2"],
        [("k0", RemoteKey(ORIGIN, "k0", "K0", 1000, 1000))],
        {},
    ]  # fmt: skip
