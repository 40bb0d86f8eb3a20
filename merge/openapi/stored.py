"""The catalogue in the store (the `endpoints` table), and re-mapping stored events against a catalogue.

`save_catalogue` replaces the store's catalogue with a new one and its eligibility; `stored_catalogue` reads it
back, and `stored_matcher` gives a matcher over it (or None) for whatever ingests without a spec of its own.
`remap` sets `events.operation_id` / `unmatched_reason` again for every stored event (of one run, or all), for
when the spec arrived after the events or changed (and counts the runs it changed in event_groups anew).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass

import sqlite_utils

from auditcov.merge.errors import StoreError
from auditcov.merge.openapi.catalogue import Catalogue, Endpoint
from auditcov.merge.openapi.eligibility import Eligibility
from auditcov.merge.openapi.matcher import Matcher
from auditcov.merge.store import refresh_event_groups, transaction

CATALOGUE_SOURCE_KEY = "catalogue_source"

#: Events re-mapped per UPDATE batch.
_CHUNK = 20_000


@dataclass(slots=True)
class RemapResult:
    events: int = 0
    matched: int = 0
    unmatched: int = 0
    changed: int = 0  # events whose operation or reason is not what it was


def save_catalogue(db: sqlite_utils.Database, catalogue: Catalogue, eligibility: Eligibility) -> None:
    """Make `catalogue` the store's catalogue, in one transaction."""
    with transaction(db.conn) as conn:
        write_catalogue(conn, catalogue, eligibility)


def write_catalogue(conn: sqlite3.Connection, catalogue: Catalogue, eligibility: Eligibility) -> None:
    """Replace the store's catalogue inside the caller's transaction."""
    rows = [
        (
            e.operation_id,
            e.method,
            e.path,
            e.group,
            e.version,
            e.kind,
            e.action,
            e.level,
            e.category,
            int(e.deprecated),
            int(eligibility.is_eligible(e)),
            eligibility.ineligible.get(e.operation_id),
            int(eligibility.is_pending(e)),
            e.description,
        )
        for e in catalogue.endpoints.values()
    ]
    conn.execute("DELETE FROM endpoints")
    conn.executemany(f"INSERT INTO endpoints VALUES ({', '.join('?' * 14)})", rows)
    conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (CATALOGUE_SOURCE_KEY, catalogue.source))


def stored_catalogue(db: sqlite_utils.Database) -> Catalogue:
    """The store's catalogue; `StoreError` when it has none yet."""
    source = db.conn.execute("SELECT value FROM meta WHERE key = ?", (CATALOGUE_SOURCE_KEY,)).fetchone()
    rows = db.conn.execute(
        "SELECT operation_id, method, path, api_group, api_version, kind, action, level, category, deprecated,"
        " description FROM endpoints"
    ).fetchall()
    if source is None or not rows:
        raise StoreError("the store holds no endpoint catalogue yet: run `auditcov remap --openapi SOURCE` first")
    endpoints = {row[0]: Endpoint(*row[:9], deprecated=bool(row[9]), description=row[10]) for row in rows}
    return Catalogue(source=source[0], endpoints=endpoints)


def stored_matcher(db: sqlite_utils.Database) -> Matcher | None:
    """A matcher over the store's catalogue, or None when it has none: events ingested after a spec was given
    once (`serve --openapi`, `remap --openapi`) keep being mapped without naming it again."""
    try:
        return Matcher(stored_catalogue(db))
    except StoreError:
        return None


def remap(
    db: sqlite_utils.Database,
    matcher: Matcher,
    run: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> RemapResult:
    """Match every stored event (of `run`, or all) again; `progress(done, total)` after each batch."""
    run_filter, params = ("AND run = ?", (run,)) if run is not None else ("", ())
    with transaction(db.conn) as conn:
        return _remap(conn, matcher, run_filter, params, progress)


def map_unmapped(conn: sqlite3.Connection, matcher: Matcher) -> RemapResult:
    """Match the events stored before there was a matcher, inside the caller's transaction."""
    return _remap(conn, matcher, "AND operation_id IS NULL AND unmatched_reason IS NULL", (), None)


def _remap(
    conn: sqlite3.Connection,
    matcher: Matcher,
    where: str,
    params: tuple,
    progress: Callable[[int, int], None] | None,
) -> RemapResult:
    total = conn.execute(f"SELECT COUNT(*) FROM events WHERE TRUE {where}", params).fetchone()[0]
    result = RemapResult()
    match = matcher.match
    last_id = 0
    changed_runs: set[str] = set()
    # In id order, a batch at a time, so no SELECT is open while its table is updated.
    while rows := conn.execute(
        "SELECT id, verb, request_uri, operation_id, unmatched_reason, run FROM events"
        f" WHERE id > ? {where} ORDER BY id LIMIT {_CHUNK}",
        (last_id, *params),
    ).fetchall():
        updates = []
        for event_id, verb, request_uri, old_operation, old_reason, run in rows:
            operation_id, reason = match(verb, request_uri)
            if operation_id is None:
                result.unmatched += 1
            else:
                result.matched += 1
            if (operation_id, reason) != (old_operation, old_reason):
                updates.append((operation_id, reason, event_id))
                changed_runs.add(run)
        conn.executemany("UPDATE events SET operation_id = ?, unmatched_reason = ? WHERE id = ?", updates)
        result.changed += len(updates)
        result.events += len(rows)
        last_id = rows[-1][0]
        if progress is not None:
            progress(result.events, total)
    for run in sorted(changed_runs):
        refresh_event_groups(conn, run)
    return result
