"""Counts that say what a store holds: events, duplicates received, quarantined items, runs, tests."""

from __future__ import annotations

import sqlite_utils

from auditcov.merge.errors import NotFoundError

#: name -> (aggregate, table, condition). Duplicates are summed per run as they arrive: `events` holds one
#: row per identity, not one per copy received.
_COUNTS = {
    "events": ("count(*)", "events", ""),
    "duplicates": ("sum(duplicates)", "runs", ""),
    "quarantined": ("count(*)", "quarantine", ""),
    "runs": ("count(*)", "runs", ""),
    "tests": ("count(*)", "tests", ""),
    "conformance_tests": ("count(*)", "tests", "conformance = 1"),
    "namespaces": ("count(*)", "namespaces", ""),
    "markers": ("count(*)", "markers", ""),
}


def store_stats(db: sqlite_utils.Database, run: str | None = None) -> dict[str, int | str]:
    """The counts for one run, or for the whole store when `run` is None."""
    conn = db.conn
    if run is not None and conn.execute("SELECT 1 FROM runs WHERE name = ?", (run,)).fetchone() is None:
        raise NotFoundError(f"no run named {run!r} in the store")
    stats: dict[str, int | str] = {"run": run} if run is not None else {}
    for name, (aggregate, table, condition) in _COUNTS.items():
        conditions = [condition] if condition else []
        if run is not None:
            conditions.append("name = ?" if table == "runs" else "run = ?")  # runs are keyed by name
        where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        args = (run,) if run is not None else ()
        stats[name] = conn.execute(f"SELECT {aggregate} FROM {table}{where}", args).fetchone()[0] or 0
    return stats
