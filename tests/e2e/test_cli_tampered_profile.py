"""A profile folder changed by someone without the passphrase: the CLI says so and
stops, instead of trusting a swapped identity key (real CLI processes, a real
homeserver process)."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

from test_cli_story import ALICE, BOB, one_error_line, run, run_json

from emsg.client.store import DB_NAME
from emsg.testing import ServerProcess


def test_a_swapped_identity_key_stops_the_cli_instead_of_being_trusted(
    tmp_path: Path, server: ServerProcess
) -> None:
    alice, bob = tmp_path / "alice", tmp_path / "bob"
    run(alice, "account", "register", ALICE, "--server", server.url)
    run(bob, "account", "register", BOB, "--server", server.url)
    run(alice, "contact", "add", BOB)
    run(bob, "contact", "accept", ALICE)
    run(alice, "send", BOB, "before")
    assert [c["address"] for c in run_json(alice, "contact", "list")] == [BOB]

    with contextlib.closing(sqlite3.connect(alice / DB_NAME)) as db:
        db.execute("UPDATE contacts SET identity_key = 'MALLORY' WHERE address = ?", (BOB,))
        db.commit()
    for command in (("contact", "list"), ("send", BOB, "after")):
        done = run(alice, *command, ok=False)
        assert done.returncode == 1
        one_error_line(done, "profile_tampered")
        assert f"contacts entry for {BOB} was changed outside EMSG" in done.stderr
    assert [m["body"] for m in run_json(bob, "messages")] == ["before"]
