"""WAL checkpoints of a SQLite database, in a worker thread.

SQLite's automatic checkpoint runs inside the COMMIT that crosses its threshold
(1,000 pages), on the caller's thread: with `synchronous=NORMAL` it fsyncs the WAL
and the database, so every few hundred commits one of them stalled the event loop
for milliseconds. The homeserver's database and every client profile store keep
that threshold only as a far larger backstop on their own connection; this copies
the WAL into the database from a thread of its own, on its own connection, at
most once a second and only once some commits have accumulated (a checkpoint
costs its two fsyncs however little it copies). A PASSIVE checkpoint never blocks
writers, this process's or another one's on the same file.

Shared by `emsg.server` and `emsg.client`, so it imports neither.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)


class WalCheckpointer:
    """Call `committed()` after each commit; `close()` before the database closes.
    A checkpoint at most every `every_commits` commits and `interval_s` seconds."""

    # A checkpoint costs two fsyncs whatever it copies, and pages written by many
    # commits are copied once: so at most one a second, once a few commits are in.
    def __init__(self, path: Path, every_commits: int = 200, interval_s: float = 1.0) -> None:
        self._path = path
        self._every = every_commits
        self._interval = interval_s
        self._commits = 0
        self._last = float("-inf")
        self._worker: threading.Thread | None = None
        self._conn: sqlite3.Connection | None = None
        # (busy, WAL frames, frames copied) of the last checkpoint, as SQLite reports it.
        self.last_result: tuple[int, int, int] | None = None

    def committed(self) -> None:
        self._commits += 1
        if self._commits < self._every:
            return
        if self._worker is not None and self._worker.is_alive():
            return
        now = time.monotonic()
        if now - self._last < self._interval:
            return
        self._commits = 0
        self._last = now
        self._worker = threading.Thread(target=self._checkpoint, name="emsg-wal-checkpoint")
        self._worker.start()

    def _checkpoint(self) -> None:
        try:
            if self._conn is None:
                # Used by one worker at a time: a new one starts only after the last ended.
                self._conn = sqlite3.connect(
                    self._path, isolation_level=None, check_same_thread=False
                )
                self._conn.execute("PRAGMA busy_timeout=10000")
            row = self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            self.last_result = (int(row[0]), int(row[1]), int(row[2]))
        except sqlite3.Error:
            log.exception("WAL checkpoint of %s failed; the backstop will do it", self._path)

    def wait(self) -> None:
        """Until the checkpoint under way, if any, has finished."""
        if self._worker is not None:
            self._worker.join()

    def close(self) -> None:
        self.wait()
        if self._conn is not None:
            self._conn.close()
            self._conn = None
