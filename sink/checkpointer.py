"""Copying the store's WAL back into the database file beside the writer, so that commits do not wait for it.

In WAL mode each commit appends the pages it changed to the WAL; a checkpoint copies them into the database file
and syncs it. Left to SQLite's automatic checkpoint, that copy and sync run inside the writer's COMMIT every few
thousand events and hold up every batch behind it (bench/ingest.py: a quarter of the writer's time in stalls of
100 ms and more). `Checkpointer` runs PASSIVE checkpoints on a connection and thread of its own instead; they never
block the writer. The writer keeps a higher automatic checkpoint as a backstop: it wraps the WAL round (which a
checkpoint beside a busy writer cannot), and finds little left to copy when it comes.

Durability is unchanged: a batch is answered once its commit is in the WAL, as before.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

from auditcov.merge.store import open_store

#: Seconds between checkpoints while the writer is busy.
INTERVAL_S = 0.25
log = logging.getLogger(__name__)


class Checkpointer:
    """A thread that checkpoints the store at `path` every `interval` seconds until `close()`."""

    def __init__(self, path: str | Path, *, synchronous: str, interval: float = INTERVAL_S):
        # The checkpoint syncs with this connection's synchronous setting: the writer's.
        self.conn = open_store(path, synchronous=synchronous).conn
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="auditcov-checkpointer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """Stop after the checkpoint in progress (if any) and close the connection."""
        self._stop.set()
        self._thread.join()
        self.conn.close()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            except sqlite3.Error:
                # The writer's own automatic checkpoint still bounds the WAL; say why this one failed.
                log.exception("background checkpoint failed")
