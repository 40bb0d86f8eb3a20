"""Sinks sharing one PostgreSQL store, as replicas behind one webhook address: the same batches go to both (a
batch retried to another replica), one replica is killed with SIGKILL mid-stream and started again, and
PostgreSQL itself is restarted under load. Every event a sink acknowledged is stored exactly once; while the
database is down the sinks answer 503 with Retry-After, and they recover by themselves.
"""

from __future__ import annotations

import shutil
import signal
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import orjson
import psycopg
import pytest
from pgserver import PostgresServer, postgres_bin
from sink_support import Sink, event, event_list

RUN = "replicas"
BATCHES = 120
BATCH_SIZE = 100


@pytest.fixture
def server():
    """A PostgreSQL server of this test's own: it is restarted."""
    folder = Path(tempfile.mkdtemp(prefix="auditcov-postgres-"))
    server = PostgresServer(folder, postgres_bin())
    server.init()
    server.start()
    yield server
    server.stop()
    shutil.rmtree(folder, ignore_errors=True)


def _bodies() -> tuple[list[bytes], set[str], int]:
    """The batches, every auditID in them, and how many distinct items in them are not events."""
    bodies, ids = [], set()
    for number in range(BATCHES):
        items = []
        for index in range(BATCH_SIZE):
            audit_id = str(uuid.uuid4())
            ids.add(audit_id)
            items.append(
                event(
                    audit_id,
                    requestReceivedTimestamp=f"2026-12-01T10:{number // 60:02d}:{number % 60:02d}.{index:06d}Z",
                )
            )
        if number % 10 == 0:
            items.append({"kind": "Event", "auditID": f"bad-{number}", "stage": 7})  # quarantined once
        bodies.append(event_list(items))
    return bodies, ids, BATCHES // 10


class Sender(threading.Thread):
    """Sends every batch, in order, to one replica (whatever its URL is now), until it is acknowledged."""

    def __init__(self, urls: list[str], replica: int, bodies: list[bytes]):
        super().__init__(daemon=True)
        self.urls, self.replica, self.bodies = urls, replica, bodies
        self.acknowledged = 0
        self.unavailable: list[tuple[int, str | None]] = []  # (status, Retry-After) of each 503
        self.failures = 0  # refused connections, resets: a replica being killed

    def run(self) -> None:
        deadline = time.monotonic() + 240
        for body in self.bodies:
            while time.monotonic() < deadline:
                request = urllib.request.Request(
                    f"{self.urls[self.replica]}/v1/audit/{RUN}", body, {"Content-Type": "application/json"}
                )
                try:
                    with urllib.request.urlopen(request, timeout=30) as answer:
                        orjson.loads(answer.read())
                    self.acknowledged += 1
                    break
                except urllib.error.HTTPError as exc:
                    if exc.code == 503:
                        self.unavailable.append((exc.code, exc.headers.get("Retry-After")))
                    else:
                        raise AssertionError(f"replica {self.replica}: {exc.code} {exc.read()[:300]!r}") from None
                except (urllib.error.URLError, ConnectionError, TimeoutError):
                    self.failures += 1
                time.sleep(0.05)


def _wait_for(condition, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _status(url: str) -> tuple[int, str | None]:
    try:
        with urllib.request.urlopen(url, timeout=30) as answer:
            return answer.status, None
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Retry-After")


@pytest.mark.slow
def test_two_sinks_a_sigkill_and_a_database_restart_store_every_acknowledged_event_once(server, tmp_path):
    url = server.new_database()
    bodies, ids, bad = _bodies()
    logs = [open(tmp_path / f"sink-{n}.log", "w") for n in range(3)]  # noqa: SIM115 - the sinks write them
    sinks = [Sink(url, stderr=logs[n], cwd=tmp_path) for n in range(2)]
    urls = [sink.url for sink in sinks]
    senders = [Sender(urls, replica, bodies) for replica in range(2)]
    try:
        for sender in senders:
            sender.start()

        # One replica killed mid-stream, and started again (the other goes on alone meanwhile).
        _wait_for(lambda: senders[1].acknowledged >= BATCHES // 4)
        sinks[1].process.send_signal(signal.SIGKILL)
        assert sinks[1].process.wait(30) == -signal.SIGKILL
        time.sleep(0.3)
        sinks[1] = Sink(url, stderr=logs[2], cwd=tmp_path)
        urls[1] = sinks[1].url

        # PostgreSQL stopped under load: the sinks say 503 with Retry-After, and are not ready.
        _wait_for(lambda: min(sender.acknowledged for sender in senders) >= BATCHES // 2)
        server.stop()
        status = [_status(f"{sink_url}/readyz") for sink_url in urls]
        assert [code for code, _ in status] == [503, 503], status
        time.sleep(1.0)
        server.start()
        for sender in senders:
            sender.join(300)
            assert not sender.is_alive() and sender.acknowledged == BATCHES, (sender.replica, sender.acknowledged)
        unavailable = senders[0].unavailable + senders[1].unavailable
        assert unavailable and all(retry_after for _, retry_after in unavailable), unavailable
        # Recovered by themselves: ready again (a sink whose store failed says so for Retry-After seconds), with
        # no restart.
        _wait_for(lambda: [_status(f"{sink_url}/readyz")[0] for sink_url in urls] == [200, 200], timeout=30)
    finally:
        for sink in sinks:
            if sink.process.poll() is None:
                sink.stop()
        for log in logs:
            log.close()

    with psycopg.connect(url) as conn:
        stored = [row[0] for row in conn.execute("SELECT audit_id FROM events WHERE run = %s", (RUN,))]
        quarantined = conn.execute("SELECT count(*) FROM quarantine WHERE run = %s", (RUN,)).fetchone()[0]
        (duplicates,) = conn.execute("SELECT duplicates FROM runs WHERE name = %s", (RUN,)).fetchone()
    assert len(stored) == len(set(stored)) == len(ids)  # each once
    assert set(stored) == ids  # all acknowledged, so all stored
    assert quarantined == bad
    assert duplicates >= len(ids)  # every batch went to both replicas: one stored it, the other skipped it
