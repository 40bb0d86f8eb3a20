"""Store I/O for coverage snapshots and per-test Python lines (tables `cover_layouts`, `cover_snapshots`,
`py_lines` in merge/store.py).

A snapshot is the cumulative counters of one process at one moment. A kube-apiserver build has 10^5-10^6
blocks and a run takes hundreds of snapshots, so blocks are not stored per snapshot: each distinct layout (the
sorted blocks with their statement counts) is stored once, keyed by its hash, and a snapshot is one msgpack
list of counters aligned to its layout. Snapshots of one binary share one layout, so a delta between them is
a subtraction of two aligned lists.

The encodings are private to this module: callers pass and get `Profile`s, `Snapshot`s and counter lists.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from operator import itemgetter

import msgpack
import sqlite_utils

from auditcov.merge.cover.model import Block, CoverageError, Profile
from auditcov.merge.cover.pycoverage import ContextLines
from auditcov.merge.store import ensure_run, transaction


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One stored snapshot, without its counters (`load_counters` reads those)."""

    id: int
    run: str
    process: str
    at_us: int
    mode: str
    layout: str
    source: str


@dataclass(frozen=True, slots=True)
class Layout:
    """The blocks of a layout in stored order; `block(i)` builds one on demand (layouts can hold 10^6)."""

    files: list[str]
    #: Six columns, one entry per block: file index, start line, start col, end line, end col, statements.
    columns: list[list[int]]

    def block(self, index: int) -> Block:
        file, start_line, start_col, end_line, end_col, _ = (column[index] for column in self.columns)
        return Block(self.files[file], start_line, start_col, end_line, end_col)

    def statements(self, index: int) -> int:
        return self.columns[5][index]


def _encode_layout(profile: Profile) -> tuple[list[Block], bytes]:
    blocks = sorted(profile.statements)
    file_of = itemgetter(0)
    files = sorted(set(map(file_of, blocks)))
    index = {file: number for number, file in enumerate(files)}
    # Column by column, with map/itemgetter running in C: several times faster than a list per block.
    columns = [
        list(map(index.__getitem__, map(file_of, blocks))),
        *(list(map(itemgetter(field), blocks)) for field in range(1, 5)),
        list(map(profile.statements.__getitem__, blocks)),
    ]
    return blocks, msgpack.packb([files, columns])


def save_snapshot(
    db: sqlite_utils.Database, *, run: str, process: str, at_us: int, profile: Profile, source: str, now_us: int
) -> int:
    """Store `profile` as the snapshot of `process` at `at_us`; a second import of that moment replaces it."""
    if not profile.statements:
        raise CoverageError(f"{source}: the snapshot has no blocks")
    blocks, layout_blob = _encode_layout(profile)
    layout_hash = hashlib.sha256(layout_blob).hexdigest()
    counters = msgpack.packb(list(map(profile.counts.__getitem__, blocks)))
    with transaction(db.conn):
        ensure_run(db.conn, run, now_us)
        db.conn.execute(
            "INSERT OR IGNORE INTO cover_layouts (hash, block_count, blocks) VALUES (?, ?, ?)",
            (layout_hash, len(blocks), layout_blob),
        )
        cursor = db.conn.execute(
            "INSERT OR REPLACE INTO cover_snapshots (run, process, at_us, mode, layout, counters, source) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (run, process, at_us, profile.mode, layout_hash, counters, source),
        )
    return cursor.lastrowid


def list_snapshots(db: sqlite_utils.Database, run: str) -> list[Snapshot]:
    """The snapshots of `run`, by process and time."""
    rows = db.conn.execute(
        "SELECT id, run, process, at_us, mode, layout, source FROM cover_snapshots WHERE run = ? "
        "ORDER BY process, at_us",
        (run,),
    )
    return [Snapshot(*row) for row in rows]


def load_counters(db: sqlite_utils.Database, snapshot: Snapshot) -> list[int]:
    """The counters of `snapshot`, aligned to its layout's blocks."""
    row = db.conn.execute("SELECT counters FROM cover_snapshots WHERE id = ?", (snapshot.id,)).fetchone()
    if row is None:
        raise CoverageError(f"snapshot {snapshot.id} of process {snapshot.process!r} is no longer in the store")
    return msgpack.unpackb(row[0])


def load_layout(db: sqlite_utils.Database, layout_hash: str) -> Layout:
    """The blocks of the layout `layout_hash`."""
    row = db.conn.execute("SELECT blocks FROM cover_layouts WHERE hash = ?", (layout_hash,)).fetchone()
    if row is None:
        raise CoverageError(f"layout {layout_hash[:12]} is missing from the store")
    files, columns = msgpack.unpackb(row[0])
    return Layout(files, columns)


def save_python_lines(db: sqlite_utils.Database, *, run: str, contexts: Iterable[ContextLines], now_us: int) -> int:
    """Store each context's executed lines; a re-import of a context replaces its lines. Returns rows written."""
    rows = [
        (run, item.context, item.test, file, msgpack.packb(lines))
        for item in contexts
        for file, lines in item.lines.items()
    ]
    with transaction(db.conn):
        ensure_run(db.conn, run, now_us)
        db.conn.executemany(
            "INSERT OR REPLACE INTO py_lines (run, context, test, file, lines) VALUES (?, ?, ?, ?, ?)", rows
        )
    return len(rows)


def load_python_lines(db: sqlite_utils.Database, run: str) -> dict[str, dict[str, set[int]]]:
    """Executed Python lines per test and file: the union over the test's contexts."""
    tests: dict[str, dict[str, set[int]]] = {}
    for test, file, blob in db.conn.execute("SELECT test, file, lines FROM py_lines WHERE run = ?", (run,)):
        tests.setdefault(test, {}).setdefault(file, set()).update(msgpack.unpackb(blob))
    return tests
