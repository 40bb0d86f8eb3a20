"""Counts that say what a store holds: events, duplicates received, quarantined items, runs, tests."""

from __future__ import annotations

import sqlite_utils

from merge.errors import AuditcovError


def store_stats(db: sqlite_utils.Database, run: str | None = None) -> dict[str, int | str]:
    """The counts for one run, or for the whole store when `run` is None."""
    conn = db.conn
    if run is not None and conn.execute("SELECT 1 FROM runs WHERE name = ?", (run,)).fetchone() is None:
        raise AuditcovError(f"no run named {run!r} in the store")
    where, args = ("WHERE run = ?", (run,)) if run is not None else ("", ())

    def count(sql: str) -> int:
        return conn.execute(sql.format(where=where), args).fetchone()[0] or 0

    stats: dict[str, int | str] = {"run": run} if run is not None else {}
    stats.update(
        events=count("SELECT count(*) FROM events {where}"),
        duplicates=count("SELECT sum(duplicates) FROM runs " + ("WHERE name = ?" if run is not None else "")),
        quarantined=count("SELECT count(*) FROM quarantine {where}"),
        runs=count("SELECT count(*) FROM runs " + ("WHERE name = ?" if run is not None else "")),
        tests=count("SELECT count(*) FROM tests {where}"),
        conformance_tests=count(
            "SELECT count(*) FROM tests {where}" + (" AND" if where else " WHERE") + " conformance"
        ),
        namespaces=count("SELECT count(*) FROM namespaces {where}"),
        markers=count("SELECT count(*) FROM markers {where}"),
    )
    return stats
