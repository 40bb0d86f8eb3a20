"""The background checkpointer: it copies committed pages from the WAL into the database file while the writer
goes on writing, and stops cleanly."""

from __future__ import annotations

import time

from auditcov.merge.store import open_store
from auditcov.sink.checkpointer import Checkpointer


def test_committed_pages_reach_the_database_file_without_the_writer_checkpointing(tmp_path):
    path = tmp_path / "store.db"
    writer = open_store(path).conn
    writer.execute("PRAGMA wal_autocheckpoint = 0")  # the writer never checkpoints here: only the checkpointer
    writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    empty_size = path.stat().st_size
    writer.execute("BEGIN IMMEDIATE")
    writer.executemany("INSERT INTO runs (name, created_us) VALUES (?, ?)", [(f"run-{n}", n) for n in range(5000)])
    writer.execute("COMMIT")
    assert path.stat().st_size == empty_size  # committed, but only in the WAL so far

    checkpointer = Checkpointer(path, synchronous="NORMAL", interval=0.02)
    checkpointer.start()
    deadline = time.monotonic() + 10
    while path.stat().st_size == empty_size and time.monotonic() < deadline:
        time.sleep(0.02)
    # The writer goes on while the checkpointer runs.
    writer.execute("INSERT INTO runs (name, created_us) VALUES ('after', 0)")
    checkpointer.close()
    assert path.stat().st_size > empty_size
    assert not checkpointer._thread.is_alive()
    writer.close()

    # A reader of the database file alone (the WAL gone with the last connection) sees every row.
    assert not (tmp_path / "store.db-wal").exists()
    reader = open_store(path).conn
    assert reader.execute("SELECT count(*) FROM runs").fetchone() == (5001,)
    reader.close()
