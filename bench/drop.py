"""What dropping a run costs: `auditcov drop` of a run of N events on PostgreSQL (its partition dropped whole) and
on SQLite (its rows deleted), beside a DELETE of the same rows on PostgreSQL.

Each store gets two runs of N realistic events (bench/ingest.py's, through the ingest path), so the dropped run
sits beside another that stays. Prints the seconds each drop takes, and, as the baseline measured in the same
run, the seconds to count the run's events (one pass over its rows), with the load average.

    .venv/bin/python bench/drop.py [--events 1000000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest import make_bodies, postgres_server

from auditcov.merge.decode import decode_event_list
from auditcov.merge.store import drop_run, open_store, transaction
from auditcov.sink.ingest import Ingestor

BATCH = 400


def fill(db, runs: tuple[str, ...], bodies: list[bytes]) -> None:
    """Each run gets every body's events (the same events, in another run, are other events)."""
    ingestor = Ingestor(db)
    for run in runs:
        for body in bodies:
            ingestor.commit(ingestor.prepare(run, decode_event_list(body)))


def timed(action) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def measure(name: str, target: str, bodies: list[bytes], events: int) -> dict[str, float]:
    """Seconds to count a run's events, to drop it and (PostgreSQL) to DELETE a third run's rows instead."""
    db = open_store(target)
    conn = db.conn
    runs = ("kept", "dropped", "deleted") if name == "PostgreSQL" else ("kept", "dropped")
    started = time.perf_counter()
    fill(db, runs, bodies)
    print(f"{name}: filled in {time.perf_counter() - started:.1f} s")
    figures = {"count": timed(lambda: conn.execute("SELECT count(*) FROM events WHERE run = 'dropped'").fetchone())}
    figures["drop"] = timed(lambda: drop_run(conn, "dropped"))
    if "deleted" in runs:

        def delete() -> None:
            with transaction(conn):
                conn.execute("DELETE FROM events WHERE run = 'deleted'")

        figures["delete"] = timed(delete)
    kept = conn.execute("SELECT count(*) FROM events WHERE run = 'kept'").fetchone()[0]
    assert kept == events, (name, kept)
    conn.close()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000, help="events per run (default 1,000,000)")
    args = parser.parse_args()
    bodies = make_bodies(max(1, args.events // BATCH), BATCH)
    events = len(bodies) * BATCH
    print(f"two runs of {events:,} events each, in SQLite and in PostgreSQL; load average {os.getloadavg()[0]:.2f}")

    folder = Path(tempfile.mkdtemp(prefix="auditcov-bench-drop-"))
    server = postgres_server(Path(tempfile.mkdtemp(prefix="auditcov-bench-postgres-")))
    try:
        figures = {
            "SQLite": measure("SQLite", str(folder / "drop.db"), bodies, events),
            "PostgreSQL": measure("PostgreSQL", server.new_database(), bodies, events),
        }
    finally:
        server.stop()
        shutil.rmtree(server.folder, ignore_errors=True)
        shutil.rmtree(folder, ignore_errors=True)

    for name, measured in figures.items():
        print(
            f"{name}: auditcov drop of {events:,} events {measured['drop']:.3f} s; baseline, counting them "
            f"{measured['count']:.3f} s (ratio {measured['drop'] / measured['count']:.2f})"
        )
    print(f"PostgreSQL: DELETE of the same number of rows instead {figures['PostgreSQL']['delete']:.3f} s")
    print(f"load average (1 min) after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
