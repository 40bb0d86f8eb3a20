"""The store's one writer: a thread that owns the write connection and commits queued jobs in groups.

Handlers `await writer.submit(job)`; `job()` runs on the writer thread inside a write transaction
(`BEGIN IMMEDIATE`). Jobs queued while a transaction is being committed are taken together into the next one
(group commit), so the cost of a commit is shared by concurrent batches. Each job of a group runs in its own
SAVEPOINT: a job that fails is rolled back alone and its caller gets the exception; the others still commit (a job
alone in its transaction needs no SAVEPOINT: the transaction is rolled back instead). A job's result
is delivered only after COMMIT returns, which is what lets the sink answer 2xx only for durable data.

Nothing here runs on the event loop: a commit (an fsync with synchronous=FULL) never blocks it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from typing import TypeVar

import sqlite_utils

T = TypeVar("T")
_STOP = object()
log = logging.getLogger(__name__)


class Writer:
    """Runs write jobs on one thread, in group-committed transactions (see the module docstring)."""

    def __init__(self, db: sqlite_utils.Database, *, max_group: int = 64):
        self.db = db
        self.max_group = max_group
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="auditcov-writer", daemon=True)
        self._closed = False
        self.transactions = 0  # committed so far: with group commit, fewer than the jobs

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def start(self) -> None:
        self._thread.start()

    async def submit(self, job: Callable[[], T]) -> T:
        """Run `job` in the next transaction; return its result once that transaction is committed."""
        if self._closed:
            raise RuntimeError("the store writer is closed")
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._queue.put((job, future))
        return await asyncio.wrap_future(future)

    async def close(self) -> None:
        """Commit every job already queued, then stop the thread and close the connection."""
        self._closed = True
        self._queue.put(_STOP)
        await asyncio.get_running_loop().run_in_executor(None, self._thread.join)
        self.db.conn.close()

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is _STOP:
                break
            group = [first]
            while len(group) < self.max_group:
                try:
                    queued = self._queue.get_nowait()
                except queue.Empty:
                    break
                if queued is _STOP:
                    stopping = True
                    break
                group.append(queued)
            self._commit(group)

    def _commit(self, group: list[tuple[Callable[[], object], concurrent.futures.Future]]) -> None:
        conn = self.db.conn
        done: list[tuple[concurrent.futures.Future, object]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            # Each statement hands the GIL over and waits to get it back while the event loop parses, so a lone
            # job goes without the SAVEPOINT and RELEASE that only set it apart from others.
            isolate = len(group) > 1
            for job, future in group:
                # A caller that gave up (cancelled) gets nothing written on its behalf.
                if not future.set_running_or_notify_cancel():
                    continue
                if isolate:
                    conn.execute("SAVEPOINT job")
                try:
                    result = job()
                except Exception as exc:
                    if isolate:
                        conn.execute("ROLLBACK TO job")
                        conn.execute("RELEASE job")
                    else:
                        conn.execute("ROLLBACK")
                    future.set_exception(exc)
                    continue
                if isolate:
                    conn.execute("RELEASE job")
                done.append((future, result))
            if conn.in_transaction:
                conn.execute("COMMIT")
                self.transactions += 1
        except sqlite3.Error as exc:
            log.exception("store transaction failed")
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            for _, future in group:
                if not future.done():
                    future.set_exception(exc)
            return
        for future, result in done:
            future.set_result(result)
