"""The store: one SQLite database (WAL), or a PostgreSQL database, whose schema is defined here and nowhere else.

Everything reads and writes through `open_store` and the tables below. The sink writes events from one
writer thread; reports and offline tools read with their own connections (WAL lets readers run beside it).
`--db` takes a file path (SQLite) or a `postgresql://` URL: `merge.pgstore` runs the same schema and the same
queries there, and holds every difference between the two; the few writes that differ in more than their words
(`insert_or_ignore`, `ensure_run`, `drop_run`, `refresh_event_groups`) and what a failure means
(`unavailable_reason`) are decided here.

Schema history (SCHEMA_VERSION); `open_store` brings an older store up to date:
    1: the first schema: runs, events, tests, namespaces, markers, quarantine, the attributed_events view,
       endpoints, cover_layouts, cover_snapshots, py_lines.
    2: an event is identified by (run, received_us, audit_id, stage), in the index `events_identity`, instead
       of by (run, audit_id, stage); events_by_time is gone (the identity index starts with the same columns).
    3: live coverage: cover_agents and cover_meta; a cover_snapshots row may hold an agent's raw counter bytes
       (decoded later into layout and counters) or say why the snapshot is missing, and records when it was
       taken (its counters a packed array; msgpack lists are still read); quarantine.raw_encoding, so an item
       that is not valid UTF-8 is kept byte for byte.
    4: event_groups, the events of each run counted as the endpoint model reads them.
    5: on PostgreSQL, a trigger counts the events each statement inserts (`merge.pgstore`); nothing changes in
       SQLite.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from itertools import chain
from pathlib import Path

import sqlite_utils

from auditcov.merge.errors import StoreError
from auditcov.merge.useragent import E2E_CLIENT

SCHEMA_VERSION = 5

SCHEMA = """
-- Key/value facts about the store itself: schema_version.
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- A run is one session of tests against one cluster (`POST /v1/audit/{run}`, `--run`).
CREATE TABLE IF NOT EXISTS runs (
    name TEXT PRIMARY KEY,
    created_us INTEGER NOT NULL,       -- when the store first saw it
    duplicates INTEGER NOT NULL DEFAULT 0  -- events received again (retried batches) and not stored twice
);

-- One row per audit event, identified by (run, requestReceivedTimestamp, auditID, stage): see events_identity.
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    run TEXT NOT NULL,
    audit_id TEXT NOT NULL,
    stage TEXT NOT NULL,               -- RequestReceived, ResponseStarted, ResponseComplete, Panic
    verb TEXT NOT NULL,                -- the audit verb (get, list, watch, create, ..., or a lowercased method)
    request_uri TEXT NOT NULL,         -- path and raw query, as sent
    user_agent TEXT NOT NULL,
    username TEXT NOT NULL,
    source_ips TEXT,                   -- JSON list
    namespace TEXT,                    -- objectRef fields
    resource TEXT,
    subresource TEXT,
    name TEXT,
    api_group TEXT,
    api_version TEXT,
    code INTEGER,                      -- responseStatus.code
    received_us INTEGER,               -- requestReceivedTimestamp, microseconds since the epoch
    stage_us INTEGER,                  -- stageTimestamp
    client TEXT NOT NULL,              -- the agent's product (e2e.test, kubectl, kube-controller-manager, ...)
    test TEXT,                         -- the test named in the user agent: a direct hit; NULL for other clients
    operation_id TEXT,                 -- the OpenAPI operation it maps to; NULL when unmatched or not yet mapped
    unmatched_reason TEXT,             -- why it maps to no operation; NULL when matched or not yet mapped
    annotations TEXT,                  -- JSON object
    request_object TEXT,               -- JSON, kept only with keep_bodies
    response_object TEXT
);
-- The identity: a retried batch, or a file imported twice, stores nothing twice. The apiserver sends the same
-- event the same way each time, receive time included, and the receive time leads the key because auditIDs are
-- random: led by them, every event would go to a random page of the index, and each commit would write about a
-- page per event (6 KB an event in all, against 1.6 KB led by time; bench/ingest.py). It also tells apart two
-- requests that share an auditID, which clients can set (the Audit-ID header). Times and
-- ranges of times by run (test windows, a run's first event) read this index too.
CREATE UNIQUE INDEX IF NOT EXISTS events_identity ON events (run, received_us, audit_id, stage);
-- NULLs are distinct in a unique index: events with no time at all are identified by (run, auditID, stage).
CREATE UNIQUE INDEX IF NOT EXISTS events_identity_untimed ON events (run, audit_id, stage) WHERE received_us IS NULL;
-- No index by namespace, test or operation: every query by them reads most of a run's events anyway (as fast
-- without them, bench/ingest.py's 200,000 events: reports 2.7-3.3 s either way), while each index costs the sink
-- on every insert (by test: a quarter of the bytes each commit writes).

-- Each run's events counted by what the endpoint model groups them by (merge/reports/endpointcov.py), so that a
-- report reads tens of thousands of rows instead of a run's million events. Whatever stores events adds a row per
-- group of the ones it stored (`insert_or_ignore` on SQLite, a trigger on the inserting statement on PostgreSQL;
-- never updating a row: an update of a row that many batches add to would write a random page of the table for
-- each, and make sinks on one PostgreSQL database wait on each other), so a group's figures are the sum over its
-- rows; `refresh_event_groups` counts a run anew, one row per group, when its events are re-mapped.
CREATE TABLE IF NOT EXISTS event_groups (
    run TEXT NOT NULL,
    test TEXT,                         -- events.test
    namespace TEXT,                    -- events.namespace when no test is named (what namespace ownership reads)
    operation_id TEXT,
    unmatched_reason TEXT,
    e2e INTEGER NOT NULL,              -- 1 when an e2e.test client sent them
    e2e_version TEXT,                  -- that client's version, as its user agent gives it (e2e.test/<version>)
    code INTEGER,                      -- responseStatus.code
    hits INTEGER NOT NULL,             -- how many events
    first_us INTEGER,                  -- the first and last request time (requestReceivedTimestamp, else
    last_us INTEGER,                   --   stageTimestamp) of those events
    done_us INTEGER                    -- their last stage time (stageTimestamp, else requestReceivedTimestamp)
);
CREATE INDEX IF NOT EXISTS event_groups_by_run ON event_groups (run);

-- Each test seen in a run, with what its name says about it.
CREATE TABLE IF NOT EXISTS tests (
    run TEXT NOT NULL,
    name TEXT NOT NULL,
    tags TEXT NOT NULL,                -- JSON list of the [bracketed] tags in the name
    conformance INTEGER NOT NULL,      -- 1 when tagged [Conformance]
    PRIMARY KEY (run, name)
);

-- Namespace ownership: a namespace created by a test's client belongs to that test, so events from other
-- clients inside it are the test's indirect hits.
CREATE TABLE IF NOT EXISTS namespaces (
    run TEXT NOT NULL,
    namespace TEXT NOT NULL,
    test TEXT NOT NULL,
    created_us INTEGER,
    PRIMARY KEY (run, namespace)
);

-- Test boundaries announced by a test runner (`POST /v1/runs/{run}/markers`).
CREATE TABLE IF NOT EXISTS markers (
    run TEXT NOT NULL,
    test TEXT NOT NULL,
    event TEXT NOT NULL CHECK (event IN ('start', 'end')),
    at_us INTEGER NOT NULL,
    PRIMARY KEY (run, test, event)
);
CREATE INDEX IF NOT EXISTS markers_by_time ON markers (run, event, at_us);

-- Items that could not be stored as events, kept raw with the reason so nothing is lost.
CREATE TABLE IF NOT EXISTS quarantine (
    id INTEGER PRIMARY KEY,
    run TEXT NOT NULL,
    received_us INTEGER NOT NULL,      -- when the sink received it
    reason TEXT NOT NULL,
    raw TEXT NOT NULL,                 -- the item as received, in raw_encoding
    digest TEXT NOT NULL,              -- SHA-256 of the item's bytes: a retried batch quarantines its bad items once
    raw_encoding TEXT NOT NULL DEFAULT 'text' CHECK (raw_encoding IN ('text', 'base64')),
                                       -- 'text': raw is the item itself; 'base64': the item's bytes were not valid
                                       --   UTF-8 (or held no text at all), so raw is their base64
    UNIQUE (run, digest)
);

-- Every event with the test it is attributed to, resolved at read time so that late markers and late
-- namespace creations apply to events already stored. Reports read this view; its name and the two columns
-- it adds are stable:
--   attributed_test  the test the event counts for, or NULL when nothing attributes it;
--   attribution      how: 'direct' (the test named in the event's own user agent), 'namespace' (another
--                    client acting inside a namespace that a test created), 'window' (no test and no owned
--                    namespace, but the event's requestReceivedTimestamp lies within a test's start..end
--                    markers; an open window, with no end yet, runs on; overlapping windows go to the test
--                    that started last), or NULL.
-- It also shows the candidates, to explain an attribution: namespace_test (the owner of the event's
-- namespace) and window_test (the test whose marker window holds the event).
CREATE VIEW IF NOT EXISTS attributed_events AS
WITH resolved AS (
    SELECT ev.*, n.test AS namespace_test,
        -- The latest start at or before the event whose end (if any) is not before it; markers_by_time lets
        -- SQLite walk the starts backwards from the event instead of scanning every window for every event.
        (SELECT s.test FROM markers AS s
         WHERE s.run = ev.run AND s.event = 'start' AND s.at_us <= COALESCE(ev.received_us, ev.stage_us)
           AND COALESCE((SELECT e.at_us FROM markers AS e WHERE e.run = s.run AND e.test = s.test AND e.event = 'end'),
                        9223372036854775807) >= COALESCE(ev.received_us, ev.stage_us)
         ORDER BY s.at_us DESC LIMIT 1) AS window_test
    FROM events AS ev
    LEFT JOIN namespaces AS n ON n.run = ev.run AND n.namespace = ev.namespace
)
SELECT resolved.*,
    COALESCE(test, namespace_test, window_test) AS attributed_test,
    CASE
        WHEN test IS NOT NULL THEN 'direct'
        WHEN namespace_test IS NOT NULL THEN 'namespace'
        WHEN window_test IS NOT NULL THEN 'window'
    END AS attribution
FROM resolved;

-- The endpoint catalogue events are matched against (`auditcov remap`, `serve --openapi`), one row per OpenAPI
-- operation, so that reports can list what nothing tested. A store holds one catalogue: a new one replaces it
-- (meta 'catalogue_source' says where it came from). merge/openapi/stored.py reads and writes it.
CREATE TABLE IF NOT EXISTS endpoints (
    operation_id TEXT PRIMARY KEY,
    method TEXT NOT NULL,              -- upper-case HTTP method
    path TEXT NOT NULL,                -- the spec's path template, e.g. /api/v1/namespaces/{namespace}/pods
    api_group TEXT,                    -- x-kubernetes-group-version-kind group ("" = core); NULL when it has none
    api_version TEXT,                  -- its version; NULL likewise
    kind TEXT,                         -- its kind; NULL likewise
    action TEXT,                       -- x-kubernetes-action (get, list, ..., connect); NULL when absent
    level TEXT NOT NULL,               -- stable, beta or alpha, from the served group version
    category TEXT NOT NULL,            -- the first tag up to its first '_' (APISnoop's category)
    deprecated INTEGER NOT NULL,       -- 1 for /watch/ operations and those the spec calls deprecated
    eligible INTEGER NOT NULL,         -- 1 when eligible for conformance: stable, not deprecated, not ineligible
    ineligible_reason TEXT,            -- the ineligible list's reason; NULL when not listed
    pending INTEGER NOT NULL,          -- 1 when in the pending-eligible list
    description TEXT NOT NULL
);

-- Code-coverage block layouts, each stored once and shared by every snapshot of the same binary
-- (merge/cover/encoding.py owns the encoding).
CREATE TABLE IF NOT EXISTS cover_layouts (
    hash TEXT PRIMARY KEY,             -- sha256 (hex) of the layout as msgpack [files, [six lists of integers]]
    block_count INTEGER NOT NULL,      -- how many blocks the layout lists
    blocks BLOB NOT NULL               -- msgpack [files, [six columns, one entry per block: file index, start
                                       --   line, start col, end line, end col, statements], "zlib"], blocks
                                       --   sorted; each column a little-endian uint32 array as bytes,
                                       --   zlib-compressed (or, as first written, [files, columns] with each column
                                       --   a list of integers, or an uncompressed array)
);

-- Coverage agents: the processes under test whose counters the sink collects at test boundaries (an agent
-- registers itself with `POST /v1/runs/{run}/agents`, or sink.toml lists it). Kept when gone, with its snapshots.
CREATE TABLE IF NOT EXISTS cover_agents (
    run TEXT NOT NULL,
    process TEXT NOT NULL,             -- its name (AUDITCOV_PROCESS; default the binary's name)
    kind TEXT NOT NULL CHECK (kind IN ('go', 'python', 'profile')),
                                       -- go: the Go agent (runtime/coverage); python: the coverage.py agent;
                                       --   profile: no agent, a Go text profile the process rewrites
                                       --   (KUBE_COVERAGE_FILE), read by the sink at each boundary
    address TEXT NOT NULL,             -- where it answers: http://HOST:PORT or unix:/path; for profile, the file
    pid INTEGER,                       -- its process id, as it said
    registered_us INTEGER NOT NULL,    -- when it (last) registered
    gone_us INTEGER,                   -- when the sink marked it gone; NULL while it is live
    gone_reason TEXT,                  -- why (it stopped answering, or said goodbye); NULL while live
    PRIMARY KEY (run, process)
);

-- Go coverage meta-data (`runtime/coverage.WriteMeta`: a covmeta file) as agents sent it, once per program;
-- their counter files name it by this hash.
CREATE TABLE IF NOT EXISTS cover_meta (
    hash TEXT PRIMARY KEY,             -- the meta file's own hash, hex (its header's 16 bytes)
    data BLOB NOT NULL                 -- the covmeta file's bytes
);

-- Coverage snapshots: the cumulative counters of one process at one moment. A snapshot from an agent first holds
-- the counter file's bytes as the agent sent them (raw, with meta), and gets layout and counters when decoded
-- off the ingest path; an imported one is decoded at once. A snapshot that could not be taken (the agent timed
-- out, refused, was gone) is a row too, with no counters and the reason in `missing`: the tests it bounds are
-- incomplete, never silently widened to the next snapshot. A Python agent's boundary (its coverage.py context
-- switched) is a row with no counters, no raw and no `missing`: its lines arrive in py_lines.
CREATE TABLE IF NOT EXISTS cover_snapshots (
    id INTEGER PRIMARY KEY,
    run TEXT NOT NULL,
    process TEXT NOT NULL,             -- which process the counters belong to (`--process`, default the source)
    at_us INTEGER NOT NULL,            -- the moment the counters stand for: the boundary (a marker's time, or the
                                       --   receive time of the event that opened a test), or for an import when
                                       --   they were taken; microseconds since the epoch
    taken_us INTEGER,                  -- when the sink actually had them; NULL for imports
    mode TEXT,                         -- set, count or atomic (Go's cover modes); NULL until decoded or when missing
    layout TEXT REFERENCES cover_layouts (hash),  -- NULL until decoded or when missing
    meta TEXT REFERENCES cover_meta (hash),  -- the meta-data raw's counters belong to; NULL for imports
    missing TEXT,                      -- why there are no counters; NULL when there are (or will be, once decoded)
    source TEXT NOT NULL,              -- the file, directory or agent it came from, for messages
    -- The two blobs come last: SQLite reaches a column stored after a large blob only by reading the blob's
    -- overflow pages, so listing snapshots would read every counter array.
    counters BLOB,                     -- counts, one per block of the layout, in its order: the array typecode
                                       --   ('I' uint32, or 'Q' uint64 when a count needs it) as one byte, then the
                                       --   little-endian array, zlib-compressed (or, as first written, a msgpack
                                       --   list of integers); NULL until decoded or when missing
    raw BLOB,                          -- the counter file (`runtime/coverage.WriteCounters`) as sent, or for a
                                       --   profile source the text profile as read; NULL for imports, and once
                                       --   decoded (kept when undecodable, with `missing` saying why)
    UNIQUE (run, process, at_us)
);

-- Per-test Python lines from a coverage.py data file with contexts: one row per context and measured file.
CREATE TABLE IF NOT EXISTS py_lines (
    run TEXT NOT NULL,
    context TEXT NOT NULL,             -- the coverage.py context as recorded (pytest-cov: `<node id>|run`)
    test TEXT NOT NULL,                -- the test it belongs to (the context without pytest-cov's phase suffix)
    file TEXT NOT NULL,                -- the measured file, as coverage.py recorded its path
    lines BLOB NOT NULL,               -- msgpack list of executed line numbers, ascending
    PRIMARY KEY (run, context, file)
);
"""


@dataclass(frozen=True)
class Table:
    """A table of SCHEMA, as read from its text."""

    columns: tuple[str, ...]
    types: tuple[str, ...]  # each column's: TEXT, INTEGER or BLOB
    key: tuple[str, ...]  # what identifies a row besides an `id`: the columns an upsert conflicts on
    has_id: bool  # rows have an `id INTEGER PRIMARY KEY` (their number in this store, never copied)


_TABLE = re.compile(r"CREATE TABLE IF NOT EXISTS (\w+) \((.*?)\n\);", re.S)
_COLUMN = re.compile(r"^\s*(\w+) (TEXT|INTEGER|BLOB)\b", re.M)


@cache
def schema_tables() -> dict[str, Table]:
    """Every table of SCHEMA, in the order it creates them: columns, key, and whether rows have an `id`."""
    tables = {}
    for name, body in _TABLE.findall(SCHEMA):
        body = re.sub(r"--[^\n]*", "", body)
        columns, types = zip(*_COLUMN.findall(body), strict=True)
        composite = re.search(r"(?:PRIMARY KEY|UNIQUE) \(([^)]*)\)", body)
        if composite:
            key = tuple(part.strip() for part in composite.group(1).split(","))
        else:
            single = re.search(r"^\s*(\w+) TEXT PRIMARY KEY", body, re.M)
            key = (single.group(1),) if single else ()
        if name == "events":  # identified by its unique index, events_identity
            key = ("run", "received_us", "audit_id", "stage")
        tables[name] = Table(columns, types, key, "id" in columns)
    return tables


#: Tables the store keeps from others (event_groups, from events): never copied between stores, and not counted as
#: what a run holds.
DERIVED_TABLES = ("event_groups",)
_GROUP_COLUMNS = "run, test, namespace, operation_id, unmatched_reason, e2e, e2e_version, code"
#: What an event is counted under: its columns (its namespace only when no test is named), and for an e2e.test
#: client the version its agent gives (the first word's part after '/': `e2e.test/v1.36.0 (linux/amd64) ...`).
_GROUP_OF_EVENT = f"""run, test, CASE WHEN test IS NULL THEN namespace END, operation_id, unmatched_reason,
    CASE WHEN client = '{E2E_CLIENT}' THEN 1 ELSE 0 END,
    CASE WHEN client = '{E2E_CLIENT}' AND instr(user_agent, '/') BETWEEN 1 AND instr(user_agent || ' ', ' ') - 1
        THEN substr(user_agent, instr(user_agent, '/') + 1, instr(user_agent || ' ', ' ') - instr(user_agent, '/') - 1)
    END,
    code"""


@cache
def count_events(source: str, where: str) -> str:
    """The statement that adds a row per group of the events of `source` that match `where` to event_groups: the
    one rule of what an event is counted under, for both stores and every way events are stored."""
    return f"""INSERT INTO event_groups ({_GROUP_COLUMNS}, hits, first_us, last_us, done_us)
SELECT {_GROUP_OF_EVENT}, COUNT(*), MIN(COALESCE(received_us, stage_us)), MAX(COALESCE(received_us, stage_us)),
    MAX(COALESCE(stage_us, received_us))
FROM {source} WHERE {where} GROUP BY 1, 2, 3, 4, 5, 6, 7, 8"""


def refresh_event_groups(conn: sqlite3.Connection, run: str) -> None:
    """Count `run`'s events in event_groups anew (after their operations changed), in the caller's transaction."""
    if not isinstance(conn, sqlite3.Connection):
        # Sinks adding to the run's groups wait until this transaction ends: otherwise one that commits between
        # the DELETE and the INSERT below would have its events counted twice.
        conn.execute("LOCK TABLE event_groups IN SHARE ROW EXCLUSIVE MODE")
    conn.execute("DELETE FROM event_groups WHERE run = ?", (run,))
    conn.execute(count_events("events", "run = :run"), {"run": run})


def is_postgres_url(target: object) -> bool:
    """Whether a `--db` value names a PostgreSQL database rather than a SQLite file."""
    return isinstance(target, str) and target.startswith(("postgresql://", "postgres://"))


def store_name(target: str | Path) -> str:
    """A store as messages and banners name it: a file's path, or a URL without its password."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", str(target))


def open_store(path: str | Path, *, synchronous: str = "NORMAL") -> sqlite_utils.Database:
    """Open (creating if needed) the store at `path`, in WAL mode, with the schema in place; a `postgresql://`
    URL opens that database instead (`synchronous` is SQLite's: PostgreSQL's commits are durable)."""
    if synchronous.upper() not in ("NORMAL", "FULL"):
        raise StoreError(f"synchronous must be NORMAL or FULL, not {synchronous!r}")
    if is_postgres_url(path):
        from auditcov.merge.pgstore import open_pg_store

        return open_pg_store(path)
    try:
        conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        db = sqlite_utils.Database(conn)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={synchronous.upper()}")
        conn.execute("PRAGMA busy_timeout=10000")
        version = _schema_version(conn)
        if version is not None and version != SCHEMA_VERSION:
            _upgrade(conn, path, version)
        conn.executescript(SCHEMA)
        conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{path}: cannot open the store: {exc}") from exc
    return db


def open_store_readonly(path: str | Path) -> sqlite_utils.Database:
    """Open an existing store for reading only (reports, stats): never creates or changes it."""
    if is_postgres_url(path):
        from auditcov.merge.pgstore import open_pg_store_readonly

        return open_pg_store_readonly(path)
    if not Path(path).is_file():
        raise StoreError(f"{path}: no store there")
    try:
        conn = sqlite3.connect(Path(path).absolute().as_uri() + "?mode=ro", uri=True, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout=10000")
        version = _schema_version(conn)
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{path}: cannot open the store: {exc}") from exc
    if version != SCHEMA_VERSION:
        conn.close()
        upgrade = " (`auditcov serve`, `import` or `remap` upgrades it)" if version in _UPGRADES else ""
        raise StoreError(f"{path}: store has schema version {version}; this auditcov reads {SCHEMA_VERSION}{upgrade}")
    return sqlite_utils.Database(conn)


def choose_run(db: sqlite_utils.Database, run: str | None) -> str:
    """`run` if the store has it; with None, the store's only run. Raise `StoreError` saying what to pass."""
    names = [row[0] for row in db.conn.execute("SELECT name FROM runs ORDER BY name")]
    if run is not None:
        if run not in names:
            raise StoreError(f"no run {run!r} in the store (it has: {', '.join(names) or 'none'})")
        return run
    if len(names) != 1:
        raise StoreError(f"the store has {len(names)} runs ({', '.join(names) or 'none'}): pick one with --run")
    return names[0]


#: How a store of schema version N becomes version N + 1: SQL run before SCHEMA and SQL run after it. An older
#: store takes every step from its version on, all in one transaction.
_UPGRADES = {
    # The identity moved from the table's own UNIQUE constraint to an index; only a new table drops the old one.
    1: (
        "DROP VIEW attributed_events; DROP INDEX events_by_time; ALTER TABLE events RENAME TO events_v1;",
        "INSERT INTO events SELECT * FROM events_v1; DROP TABLE events_v1;",
    ),
    # Snapshot columns lost NOT NULL (raw and missing snapshots): only a new table does that.
    2: (
        "ALTER TABLE quarantine ADD COLUMN raw_encoding TEXT NOT NULL DEFAULT 'text' "
        "CHECK (raw_encoding IN ('text', 'base64')); ALTER TABLE cover_snapshots RENAME TO cover_snapshots_v2;",
        "INSERT INTO cover_snapshots (id, run, process, at_us, mode, layout, counters, source) "
        "SELECT id, run, process, at_us, mode, layout, counters, source FROM cover_snapshots_v2; "
        "DROP TABLE cover_snapshots_v2;",
    ),
    # Every run's events counted as the endpoint model reads them (see refresh_event_groups).
    3: ("", count_events("events", "TRUE") + ";"),
    4: ("", ""),  # PostgreSQL's trigger only
}


def _upgrade(conn: sqlite3.Connection, path: str | Path, version: int) -> None:
    if version not in _UPGRADES:
        raise StoreError(f"{path}: store has schema version {version}; this auditcov reads {SCHEMA_VERSION}")
    # SCHEMA creates only what is missing, so running it at each step adds that step's new tables and leaves the
    # tables a later step rebuilds as they are.
    steps = " ".join(f"{_UPGRADES[step][0]} {SCHEMA} {_UPGRADES[step][1]}" for step in range(version, SCHEMA_VERSION))
    try:
        conn.executescript(
            f"BEGIN IMMEDIATE; {steps} UPDATE meta SET value = '{SCHEMA_VERSION}' WHERE key = 'schema_version'; COMMIT;"
        )
    except sqlite3.DatabaseError as exc:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise StoreError(f"{path}: cannot upgrade the store from schema version {version}: {exc}") from exc


def schema_version(path: str | Path) -> int | None:
    """The schema version of the SQLite store at `path` (None when it is not one)."""
    try:
        conn = sqlite3.connect(Path(path).absolute().as_uri() + "?mode=ro", uri=True)
        try:
            return _schema_version(conn)
        finally:
            conn.close()
    except sqlite3.DatabaseError:
        return None


def _schema_version(conn: sqlite3.Connection) -> int | None:
    has_meta = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone()
    if not has_meta:
        return None
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return int(row[0]) if row else None


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """A write transaction (`BEGIN IMMEDIATE`) on an autocommit connection: committed when the block ends,
    rolled back when it raises."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def ensure_run(conn: sqlite3.Connection, run: str, at_us: int) -> None:
    """Record `run` (first seen at `at_us`) if the store does not know it yet (on PostgreSQL, with its own
    partition of `events`)."""
    if not isinstance(conn, sqlite3.Connection):
        conn.ensure_run(run, at_us)
        return
    conn.execute("INSERT OR IGNORE INTO runs (name, created_us) VALUES (?, ?)", (run, at_us))


def drop_run(conn: sqlite3.Connection, run: str) -> dict[str, int]:
    """Remove `run` and everything of it from the store, in one transaction; return the rows removed per table
    (events: the run's count before). Layouts and meta-data no snapshot uses any more go too. On PostgreSQL the
    run's events are a partition of their own, dropped whole: as fast for a million events as for ten."""
    if conn.execute("SELECT 1 FROM runs WHERE name = ?", (run,)).fetchone() is None:
        raise StoreError(f"no run {run!r} in the store")
    removed = {}
    with transaction(conn):
        removed["events"] = conn.execute("SELECT count(*) FROM events WHERE run = ?", (run,)).fetchone()[0]
        if isinstance(conn, sqlite3.Connection):
            conn.execute("DELETE FROM events WHERE run = ?", (run,))
        else:
            conn.drop_run_events(run)
        for table, spec in schema_tables().items():
            if "run" in spec.columns and table != "events":
                deleted = conn.execute(f"DELETE FROM {table} WHERE run = ?", (run,)).rowcount
                if table not in DERIVED_TABLES:
                    removed[table] = deleted
        conn.execute("DELETE FROM runs WHERE name = ?", (run,))
        for table, column in (("cover_layouts", "layout"), ("cover_meta", "meta")):
            removed[table] = conn.execute(
                f"DELETE FROM {table} WHERE hash NOT IN "
                f"(SELECT {column} FROM cover_snapshots WHERE {column} IS NOT NULL)"
            ).rowcount
    return removed


#: Rows per INSERT statement on SQLite. sqlite3 holds the GIL to bind a statement's parameters and releases it
#: while SQLite runs the statement, so many rows per statement let the writer thread insert a whole chunk beside
#: the event loop's parsing instead of waiting for the GIL once per row. 400 is the apiserver's largest batch.
_ROWS_PER_INSERT = 400


def insert_or_ignore(conn: sqlite3.Connection, table: str, columns: tuple[str, ...], rows: list[tuple]) -> int:
    """Insert `rows` into `table`, skipping those whose key is stored already; return how many were inserted.

    On SQLite, `_ROWS_PER_INSERT` rows per statement (the rest in halving chunks, so that only a few distinct
    statements exist and sqlite3's statement cache keeps them compiled); on PostgreSQL, by COPY. Events
    inserted are counted in event_groups in the same transaction (`count_events`).
    """
    if not isinstance(conn, sqlite3.Connection):
        return conn.insert_or_ignore(table, columns, rows)
    before = conn.total_changes
    size = min(_ROWS_PER_INSERT, conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // len(columns))
    start = 0
    while start < len(rows):
        while size > len(rows) - start:
            size //= 2
        cursor = conn.execute(_insert_sql(table, columns, size), tuple(chain.from_iterable(rows[start : start + size])))
        start += size
    inserted = conn.total_changes - before
    if table == "events" and inserted:
        # The rows inserted took the ids after the largest, one by one (an INTEGER PRIMARY KEY without
        # AUTOINCREMENT), so they are the last `inserted` ids up to the last one inserted.
        conn.execute(count_events("events", "id > :after"), {"after": cursor.lastrowid - inserted})
    return inserted


@cache
def _insert_sql(table: str, columns: tuple[str, ...], rows: int) -> str:
    row = f"({', '.join('?' * len(columns))})"
    return f"INSERT OR IGNORE INTO {table} ({', '.join(columns)}) VALUES {', '.join([row] * rows)}"


def unavailable_reason(exc: BaseException) -> str | None:
    """Why the store cannot take writes now but may again, when `exc` says so (the disk is full, the file is
    locked by another process or read-only, an I/O error; the server is down or restarting): the sink answers
    503 with Retry-After. None for any other error."""
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        if code is None or code & 0xFF not in _TRANSIENT_CODES:
            return None
        return f"the store cannot take writes now ({getattr(exc, 'sqlite_errorname', code)}: {exc})"
    if is_database_error(exc):
        from auditcov.merge.pgstore import unavailable_reason as pg_unavailable_reason

        return pg_unavailable_reason(exc)
    return None


#: SQLite's primary result codes for a store that cannot take writes now but may again.
_TRANSIENT_CODES = frozenset(
    {sqlite3.SQLITE_FULL, sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_READONLY}
)


def is_database_error(exc: BaseException) -> bool:
    """Whether `exc` comes from the store's database (SQLite's or PostgreSQL's driver), not from the caller."""
    return isinstance(exc, sqlite3.Error) or type(exc).__module__.startswith("psycopg")


def is_retryable(exc: BaseException) -> bool:
    """Whether a transaction failed only because of another beside it (PostgreSQL's deadlocks and
    serialization failures): running it again succeeds."""
    if isinstance(exc, sqlite3.Error) or not is_database_error(exc):
        return False
    from auditcov.merge.pgstore import is_retryable as pg_is_retryable

    return pg_is_retryable(exc)
