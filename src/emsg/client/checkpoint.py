"""WAL checkpoints for the profile store, in a worker thread.

SQLite's automatic checkpoint runs inside the COMMIT that crosses its threshold
(1,000 pages), on the caller's thread: with `synchronous=NORMAL` it fsyncs the WAL
and the database, so every few hundred messages one commit stalled the client's
event loop for milliseconds (the latency benchmark's p99 doubled). The store's
connection only keeps a far larger threshold as a backstop; this copies the WAL
into the database from a thread of its own, on its own connection, at most once
a second and only once some commits have accumulated (a checkpoint costs its two
fsyncs however little it copies). A PASSIVE checkpoint never blocks writers, this
process's or another one's on the same profile. The server does the same for its
database (`emsg/server/storage/sql/uow.py`).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from pathlib import Path
from typing import Final

log = logging.getLogger(__name__)

# The store connection's own threshold (16 MiB of WAL): reached only when the worker
# falls far behind, or when many short-lived processes (one `emsg send` each) write
# to a profile and none of them commits often enough to start the worker.
WAL_BACKSTOP_PAGES: Final = 4_096


class WalCheckpointer:
    """Call `committed()` after each commit; `close()` before the store closes."""

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
            log.exception("WAL checkpoint failed; the store's backstop will do it")

    def wait(self) -> None:
        """Until the checkpoint under way, if any, has finished."""
        if self._worker is not None:
            self._worker.join()

    def close(self) -> None:
        self.wait()
        if self._conn is not None:
            self._conn.close()
            self._conn = None
