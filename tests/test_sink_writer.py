"""The writer thread: results only after COMMIT, group commit, a failing job rolled back alone, drain on close."""

from __future__ import annotations

import asyncio
import threading

import pytest

from auditcov.merge.store import open_store
from auditcov.sink.writer import Writer


@pytest.fixture
async def writer(tmp_path):
    db = open_store(tmp_path / "w.db")
    db.conn.execute("CREATE TABLE t (n INTEGER PRIMARY KEY)")
    writer = Writer(db)
    writer.start()
    yield writer
    if writer.alive:
        await writer.close()


def insert(writer: Writer, n: int):
    return lambda: writer.db.conn.execute("INSERT INTO t (n) VALUES (?)", (n,)).rowcount


async def test_jobs_queued_during_a_transaction_share_the_next_one(writer, tmp_path):
    gate = threading.Event()
    first = asyncio.create_task(writer.submit(lambda: gate.wait(10)))
    await asyncio.sleep(0.05)  # the first job holds the writer; the next 20 queue up behind it
    rest = [asyncio.create_task(writer.submit(insert(writer, n))) for n in range(20)]
    await asyncio.sleep(0.05)
    gate.set()
    assert await first is True
    assert await asyncio.gather(*rest) == [1] * 20
    assert writer.transactions == 2
    # Committed: another connection sees every row.
    assert open_store(tmp_path / "w.db").conn.execute("SELECT count(*) FROM t").fetchone() == (20,)


async def test_a_failing_job_is_rolled_back_alone(writer):
    gate = threading.Event()
    blocker = asyncio.create_task(writer.submit(lambda: gate.wait(10)))
    await asyncio.sleep(0.05)

    def half_then_fail():
        writer.db.conn.execute("INSERT INTO t (n) VALUES (100)")
        raise ValueError("bad job")

    jobs = [writer.submit(insert(writer, 1)), writer.submit(half_then_fail), writer.submit(insert(writer, 2))]
    tasks = [asyncio.create_task(job) for job in jobs]
    await asyncio.sleep(0.05)
    gate.set()
    await blocker
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert results[0] == 1 and results[2] == 1
    assert isinstance(results[1], ValueError)
    assert writer.db.conn.execute("SELECT n FROM t ORDER BY n").fetchall() == [(1,), (2,)]


async def test_a_failing_job_alone_in_its_transaction_is_rolled_back(writer):
    def half_then_fail():
        writer.db.conn.execute("INSERT INTO t (n) VALUES (100)")
        raise ValueError("bad job")

    with pytest.raises(ValueError, match="bad job"):
        await writer.submit(half_then_fail)
    assert not writer.db.conn.in_transaction
    assert await writer.submit(insert(writer, 1)) == 1
    assert writer.db.conn.execute("SELECT n FROM t").fetchall() == [(1,)]
    assert writer.transactions == 1


async def test_close_commits_what_is_queued(writer, tmp_path):
    tasks = [asyncio.create_task(writer.submit(insert(writer, n))) for n in range(5)]
    await asyncio.sleep(0)
    await writer.close()
    assert await asyncio.gather(*tasks) == [1] * 5
    assert open_store(tmp_path / "w.db").conn.execute("SELECT count(*) FROM t").fetchone() == (5,)
    with pytest.raises(RuntimeError, match="closed"):
        await writer.submit(lambda: None)
