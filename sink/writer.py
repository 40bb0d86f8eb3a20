"""A store writer: a thread that owns a write connection and commits queued jobs in groups (the sink runs one;
on PostgreSQL a second takes event batches too, sink/app.py).

Handlers `await writer.submit(job)`; `job()` runs on the writer thread inside a write transaction
(`BEGIN IMMEDIATE`). Jobs queued while a transaction is being committed are taken together into the next one
(group commit), so the cost of a commit is shared by concurrent batches. Each job of a group runs in its own
SAVEPOINT: a job that fails is rolled back alone and its caller gets the exception; the others still commit (a job
alone in its transaction needs no SAVEPOINT: the transaction is rolled back instead). A job's result
is delivered only after COMMIT returns, which is what lets the sink answer 2xx only for durable data.

Nothing here runs on the event loop: a commit (an fsync with synchronous=FULL) never blocks it.

A transaction that fails because the store cannot take writes now (the disk is full, another process holds the
write lock past the busy timeout, an I/O error, PostgreSQL is down) fails its jobs with `StoreUnavailableError`,
which the sink answers 503 with Retry-After; the transaction is rolled back, so nothing of it is half written.
One that loses to another sink's transaction (a deadlock on PostgreSQL) runs again, up to `RETRIES` times.
`unavailable` says why until a transaction commits again. Any other failure, even one that would end the
thread, fails the jobs of its group with that error and the thread goes on with the next group.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import sqlite_utils

from auditcov.merge.store import is_database_error, is_retryable, unavailable_reason

T = TypeVar("T")
_STOP = object()
log = logging.getLogger(__name__)
#: How many times a transaction that lost only to another one beside it (a deadlock between sinks) runs again.
RETRIES = 5


class StoreUnavailableError(Exception):
    """The store cannot take writes now (`merge.store.unavailable_reason`); the message says why. Retry later."""


def unavailable_error(exc: BaseException) -> StoreUnavailableError | None:
    """The error to give callers when `exc` means the store cannot take writes now; None for other errors."""
    reason = unavailable_reason(exc)
    return None if reason is None else StoreUnavailableError(reason)


class Writer:
    """Runs write jobs on one thread, in group-committed transactions (see the module docstring)."""

    def __init__(self, db: sqlite_utils.Database, *, max_group: int = 64):
        self.db = db
        self.max_group = max_group
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="auditcov-writer", daemon=True)
        self._closed = False
        self.transactions = 0  # committed so far: with group commit, fewer than the jobs
        self.unavailable: StoreUnavailableError | None = None  # why the last transaction failed, until one commits
        self.unavailable_since = 0.0  # time.monotonic() of that failure

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def queued(self) -> int:
        """Jobs waiting for a transaction (roughly: the queue is read by the writer thread meanwhile)."""
        return self._queue.qsize()

    def start(self) -> None:
        self._thread.start()

    async def submit(self, job: Callable[[], T]) -> T:
        """Run `job` in the next transaction; return its result once that transaction is committed."""
        if self._closed:
            raise RuntimeError("the store writer is closed")
        if not self._thread.is_alive() and self._thread.ident is not None:
            raise StoreUnavailableError("the store writer thread has stopped")
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
            try:
                self._commit(group)
            except BaseException as exc:  # the thread must outlive any job; its callers get the error
                log.error("store writer: a transaction failed unexpectedly: %s: %s", type(exc).__name__, exc)
                if self.db.conn.in_transaction:
                    self.db.conn.execute("ROLLBACK")
                self._fail(group, exc if isinstance(exc, Exception) else RuntimeError(f"{type(exc).__name__}: {exc}"))

    def _commit(self, group: list[tuple[Callable[[], object], concurrent.futures.Future]]) -> None:
        for attempt in range(RETRIES + 1):
            if self._try_commit(group, last_attempt=attempt == RETRIES):
                return
            log.info("store transaction lost to another beside it (attempt %d); running it again", attempt + 1)

    def _try_commit(self, group: list[tuple[Callable[[], object], concurrent.futures.Future]], last_attempt: bool):
        """One attempt at committing `group`; False when it should be tried again (nothing of it is committed)."""
        conn = self.db.conn
        done: list[tuple[concurrent.futures.Future, object]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            # Each statement hands the GIL over and waits to get it back while the event loop parses, so a lone
            # job goes without the SAVEPOINT and RELEASE that only set it apart from others.
            isolate = len(group) > 1
            for job, future in group:
                # A caller that gave up (cancelled) gets nothing written on its behalf.
                if not (future.running() or future.set_running_or_notify_cancel()):
                    continue
                if isolate:
                    conn.execute("SAVEPOINT job")
                try:
                    result = job()
                except Exception as exc:
                    if is_database_error(exc) and (unavailable_error(exc) is not None or is_retryable(exc)):
                        raise  # the whole transaction is lost (SQLite may have rolled it back already)
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
        except Exception as exc:
            if not is_database_error(exc):
                raise
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if is_retryable(exc) and not last_attempt:
                return False
            unavailable = unavailable_error(exc)
            if unavailable is None:
                log.error("store transaction failed: %s: %s", type(exc).__name__, exc)
            else:
                if self.unavailable is None:
                    log.warning("%s; batches are answered 503 until it can", unavailable)
                self.unavailable, self.unavailable_since = unavailable, time.monotonic()
            self._fail(group, unavailable or exc)
            return True
        if self.unavailable is not None:
            log.warning("the store takes writes again")
            self.unavailable = None
        for future, result in done:
            future.set_result(result)
        return True

    @staticmethod
    def _fail(group: list[tuple[Callable[[], object], concurrent.futures.Future]], exc: Exception) -> None:
        """Give `exc` to every job of `group` that has no outcome yet (none of them is committed)."""
        for _, future in group:
            if future.done():
                continue
            if future.running() or future.set_running_or_notify_cancel():
                future.set_exception(exc)
