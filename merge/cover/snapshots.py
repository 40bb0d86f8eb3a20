"""Store I/O for coverage snapshots and per-test Python lines (tables `cover_layouts`, `cover_meta`,
`cover_snapshots`, `py_lines` in merge/store.py).

A snapshot is the cumulative counters of one process at one moment. A kube-apiserver build has 10^5-10^6
blocks and a run takes hundreds of snapshots, so blocks are not stored per snapshot: each distinct layout (the
sorted blocks with their statement counts) is stored once, keyed by its hash, and a snapshot is one packed
array of counters aligned to its layout. Snapshots of one binary share one layout, so a delta between them is
a subtraction of two aligned arrays (`encoding.changed_counts` finds the blocks it touches). The bytes of
layouts and counters are merge/cover/encoding.py's; this module stores and reads them.

Snapshots from a live source (the sink's boundaries) come in three shapes: raw (the bytes an agent or a profile
file gave, decoded later off the ingest path: `write_raw_snapshot`, `decode_pending`), missing (the source did
not answer: `write_missing_snapshot`, with the reason) and, for a Python agent, a bare boundary (its dynamic
context switched; its lines arrive as per-test Python lines). Decoding is idempotent: a decoded row gets its
layout, mode and counters and its `raw` is cleared (the counters hold everything raw did, minus the agent's own
file); readers that find a row still raw (a sink killed before decoding it, or a read-only store) decode it in
memory with `snapshot_counters`, so a report never depends on the sink's decoder having caught up.

The agent's own source file (`auditcov_coverage_agent.go`, added to the program by `auditcov cover build`) is
measurement machinery, not code under test: decoding leaves its blocks out, as
`goagent.decode_agent_coverage` does. That function builds a whole `Profile`; stored snapshots are decoded here
instead, against a layout made once per program (a kube-apiserver's meta-data takes half a second to parse,
its counters a few tens of milliseconds), with the same result.

Functions named `write_*` run inside the caller's open transaction (the sink's writer jobs); `save_*` and
`decode_pending` open their own.

Callers pass and get `Profile`s, `Snapshot`s, `Layout`s, `Counters` and counter lists; the blobs a `Decoded`
holds go to `write_decoded` unread.
"""

from __future__ import annotations

import sqlite3
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

import msgpack
import sqlite_utils

from auditcov.merge.cover import covdata, gotext
from auditcov.merge.cover.encoding import (
    Counters,
    Layout,
    decode_layout,
    encode_blocks,
    encode_layout,
    pack_counters,
    unpack_counters,
)
from auditcov.merge.cover.goagent import is_agent_file
from auditcov.merge.cover.model import Block, CoverageError, Profile, gc_paused
from auditcov.merge.cover.pycoverage import ContextLines
from auditcov.merge.store import ensure_run, transaction

_META_HASH_AT, _COUNTERS_META_HASH_AT = 24, 8  # offsets of the 16-byte hashes in covmeta / covcounters headers


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One stored snapshot, without its counters (`load_counters` reads those).

    `mode` and `layout` are None while the snapshot is raw (`pending`), when it is `missing` (then the reason),
    and for a Python agent's boundary. `kind` is the kind of the agent of its process (`go`, `python`,
    `profile`), None for imports.
    """

    id: int
    run: str
    process: str
    at_us: int
    mode: str | None
    layout: str | None
    source: str
    missing: str | None = None
    kind: str | None = None
    pending: bool = False

    @property
    def has_counters(self) -> bool:
        """Counters stored or still raw: not missing, and not a Python agent's bare boundary."""
        return self.missing is None and (self.layout is not None or self.pending)


def save_snapshot(
    db: sqlite_utils.Database, *, run: str, process: str, at_us: int, profile: Profile, source: str, now_us: int
) -> int:
    """Store `profile` as the snapshot of `process` at `at_us`; a second import of that moment replaces it."""
    if not profile.statements:
        raise CoverageError(f"{source}: the snapshot has no blocks")
    blocks, layout_hash, layout_blob = encode_layout(profile)
    counters = pack_counters(list(map(profile.counts.__getitem__, blocks)))
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
    """The snapshots of `run` (missing and raw ones too), by process and time."""
    # typeof(), not IS NULL: SQLite reads only a blob's type for it, not the blob (IS NULL read 200 snapshots'
    # counters, 10 ms, to list them).
    rows = db.conn.execute(
        "SELECT s.id, s.run, s.process, s.at_us, s.mode, s.layout, s.source, s.missing, a.kind, "
        "typeof(s.raw) <> 'null' AND typeof(s.counters) = 'null' AND s.missing IS NULL "
        "FROM cover_snapshots AS s LEFT JOIN cover_agents AS a ON a.run = s.run AND a.process = s.process "
        "WHERE s.run = ? ORDER BY s.process, s.at_us",
        (run,),
    )
    return [Snapshot(*row[:9], pending=bool(row[9])) for row in rows]


def _counters_blob(db: sqlite_utils.Database, snapshot: Snapshot) -> bytes:
    row = db.conn.execute("SELECT counters FROM cover_snapshots WHERE id = ?", (snapshot.id,)).fetchone()
    if row is None:
        raise CoverageError(f"snapshot {snapshot.id} of process {snapshot.process!r} is no longer in the store")
    if row[0] is None:
        raise CoverageError(f"snapshot {snapshot.id} of process {snapshot.process!r} has no decoded counters")
    return row[0]


def load_counters(db: sqlite_utils.Database, snapshot: Snapshot) -> list[int]:
    """The counters of a decoded `snapshot`, aligned to its layout's blocks (`snapshot_counters` takes any)."""
    return unpack_counters(_counters_blob(db, snapshot), mode=snapshot.mode, layout=snapshot.layout).counts


def snapshot_counters(db: sqlite_utils.Database, snapshot: Snapshot) -> Counters:
    """The counters of `snapshot`, decoding them in memory if it is still raw (nothing is written)."""
    if not snapshot.has_counters:
        raise CoverageError(f"snapshot {snapshot.id} of process {snapshot.process!r} has no counters")
    if snapshot.pending:
        decoded = decode_snapshot(db, snapshot.id)
        if decoded is not None:
            return unpack_counters(decoded.counters, mode=decoded.mode, layout=decoded.layout_hash)
        # Decoded meanwhile by someone else: read the stored result.
        (snapshot,) = (s for s in list_snapshots(db, snapshot.run) if s.id == snapshot.id)
    return unpack_counters(_counters_blob(db, snapshot), mode=snapshot.mode, layout=snapshot.layout)


#: Layouts decoded in memory and not (yet) in the store, by hash: `load_layout` finds them there.
_MEMORY_LAYOUTS: OrderedDict[str, bytes] = OrderedDict()
_MEMORY_LAYOUTS_KEPT = 4


def _remember_layout(layout_hash: str, blob: bytes) -> None:
    _MEMORY_LAYOUTS[layout_hash] = blob
    _MEMORY_LAYOUTS.move_to_end(layout_hash)
    while len(_MEMORY_LAYOUTS) > _MEMORY_LAYOUTS_KEPT:
        _MEMORY_LAYOUTS.popitem(last=False)


#: The last layout read, by hash: layouts are content-addressed, so one read serves every store and call (a
#: kube-apiserver's takes tens of milliseconds to unpack, more than the rest of a test's delta).
_LAST_LAYOUT: dict[str, Layout] = {}


def load_layout(db: sqlite_utils.Database, layout_hash: str) -> Layout:
    """The blocks of the layout `layout_hash` (also one only decoded in memory by `snapshot_counters`)."""
    known = _LAST_LAYOUT.get(layout_hash)
    if known is not None:
        return known
    row = db.conn.execute("SELECT blocks FROM cover_layouts WHERE hash = ?", (layout_hash,)).fetchone()
    blob = row[0] if row is not None else _MEMORY_LAYOUTS.get(layout_hash)
    if blob is None:
        raise CoverageError(f"layout {layout_hash[:12]} is missing from the store")
    with gc_paused():
        layout = decode_layout(blob)
    _LAST_LAYOUT.clear()
    _LAST_LAYOUT[layout_hash] = layout
    return layout


# --- Live snapshots: raw, missing, bare boundaries, and their decoding -------------------------------------------


def counters_meta_hash(raw: bytes, *, where: str) -> str:
    """The hash of the meta-data a Go counter file (`WriteCounters` output) was written for, hex."""
    if len(raw) < _COUNTERS_META_HASH_AT + 16 or raw[:4] != covdata.COUNTER_MAGIC:
        raise CoverageError(f"{where}: not a Go coverage counter file (no \\0cwm magic)")
    return raw[_COUNTERS_META_HASH_AT : _COUNTERS_META_HASH_AT + 16].hex()


def meta_hash(data: bytes, *, where: str) -> str:
    """The hash a Go meta-data file (`WriteMeta` output) names itself by, hex."""
    if len(data) < _META_HASH_AT + 16 or data[:4] != covdata.META_MAGIC:
        raise CoverageError(f"{where}: not a Go coverage meta-data file (no \\0cvm magic)")
    return data[_META_HASH_AT : _META_HASH_AT + 16].hex()


def write_meta(conn: sqlite3.Connection, data: bytes, *, where: str) -> str:
    """Store a program's meta-data once (by its hash); returns the hash. Inside the caller's transaction."""
    known = meta_hash(data, where=where)
    conn.execute("INSERT OR IGNORE INTO cover_meta (hash, data) VALUES (?, ?)", (known, data))
    return known


def write_raw_snapshot(
    conn: sqlite3.Connection, *, run: str, process: str, at_us: int, taken_us: int, raw: bytes, source: str
) -> int:
    """Store undecoded counters: a Go counter file (its meta-data named by its header) or a Go text profile.

    A snapshot already stored for that moment is replaced (the later one is the truer). Inside the caller's
    transaction; `decode_pending` or a reader decodes it later.
    """
    meta = counters_meta_hash(raw, where=source) if raw[:4] == covdata.COUNTER_MAGIC else None
    if meta is None and not raw.startswith(b"mode:"):
        raise CoverageError(f"{source}: neither a Go counter file nor a Go text profile")
    ensure_run(conn, run, taken_us)
    cursor = conn.execute(
        "INSERT OR REPLACE INTO cover_snapshots (run, process, at_us, taken_us, raw, meta, source) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (run, process, at_us, taken_us, raw, meta, source),
    )
    return cursor.lastrowid


def write_missing_snapshot(
    conn: sqlite3.Connection, *, run: str, process: str, at_us: int, taken_us: int, reason: str, source: str
) -> None:
    """Record that `process` gave no counters at `at_us`, and why; a snapshot stored for that moment stays."""
    ensure_run(conn, run, taken_us)
    conn.execute(
        "INSERT OR IGNORE INTO cover_snapshots (run, process, at_us, taken_us, missing, source) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (run, process, at_us, taken_us, reason, source),
    )


def write_boundary(conn: sqlite3.Connection, *, run: str, process: str, at_us: int, taken_us: int, source: str) -> None:
    """Record a Python agent's boundary: its dynamic context switched at `at_us` (no counters: its lines come
    as per-test Python lines); a missing one for that moment is replaced."""
    ensure_run(conn, run, taken_us)
    conn.execute(
        "INSERT OR REPLACE INTO cover_snapshots (run, process, at_us, taken_us, source) VALUES (?, ?, ?, ?, ?)",
        (run, process, at_us, taken_us, source),
    )


def pending_snapshots(db: sqlite_utils.Database, run: str | None = None) -> list[int]:
    """Ids of the raw snapshots not decoded yet (of `run`, or of every run), oldest first."""
    where = "raw IS NOT NULL AND counters IS NULL AND missing IS NULL"
    if run is None:
        rows = db.conn.execute(f"SELECT id FROM cover_snapshots WHERE {where} ORDER BY id")
    else:
        rows = db.conn.execute(f"SELECT id FROM cover_snapshots WHERE {where} AND run = ? ORDER BY id", (run,))
    return [row[0] for row in rows]


@dataclass(frozen=True, slots=True)
class Decoded:
    """What decoding one raw snapshot gives, ready for `write_decoded`."""

    snapshot_id: int
    mode: str
    layout_hash: str
    layout_blob: bytes
    block_count: int
    counters: bytes  # the stored blob (`encoding.pack_counters`), aligned to the layout


@dataclass(frozen=True, slots=True)
class _MetaLayout:
    """A program's meta-data turned into a layout: which layout position each meta-data block goes to."""

    meta: covdata.MetaFile
    layout_hash: str
    layout_blob: bytes
    block_count: int
    #: layout index of each meta-data block, in meta-data order; -1 for the agent's own blocks.
    position: list[int]
    #: the meta-data block at each layout index, when no block is listed twice (then decoding runs in C).
    order: list[int] | None


class MetaPending(CoverageError):
    """A raw Go snapshot whose meta-data has not reached the store (yet): it stays pending."""


_META_LAYOUTS: OrderedDict[str, _MetaLayout] = OrderedDict()
_META_LAYOUTS_KEPT = 2  # a parsed kube-apiserver meta-data is tens of MB in memory


def _meta_layout(db: sqlite_utils.Database, meta: str, *, where: str) -> _MetaLayout:
    """The layout of the program whose meta-data hash is `meta` (parsed once per process, then cached)."""
    # Cached by content, but only for a store that has the meta-data: what it decodes, it could decode alone.
    if not db.conn.execute("SELECT 1 FROM cover_meta WHERE hash = ?", (meta,)).fetchone():
        raise MetaPending(f"{where}: its meta-data {meta[:12]} is not in the store (yet)")
    cached = _META_LAYOUTS.get(meta)
    if cached is not None:
        _META_LAYOUTS.move_to_end(meta)
        return cached
    (data,) = db.conn.execute("SELECT data FROM cover_meta WHERE hash = ?", (meta,)).fetchone()
    parsed = covdata.parse_meta(data, where=f"meta-data {meta[:12]}")
    units = parsed.units
    blocks = list(map(Block, parsed.block_files, units[0::5], units[1::5], units[2::5], units[3::5]))
    statements = units[4::5]
    kept = [i for i, file in enumerate(parsed.block_files) if not is_agent_file(file)]
    # A block listed twice (two functions at one position) is one block of the layout, as in a Profile.
    order: dict[Block, int] = {}
    for i in sorted(kept, key=blocks.__getitem__):
        order.setdefault(blocks[i], i)
    sorted_blocks = list(order)
    index = {block: number for number, block in enumerate(sorted_blocks)}
    position = [-1] * len(blocks)
    for i in kept:
        position[i] = index[blocks[i]]
    layout_hash, blob = encode_blocks(sorted_blocks, [statements[i] for i in order.values()])
    unique = list(order.values()) if len(order) == len(kept) else None
    layout = _MetaLayout(parsed, layout_hash, blob, len(sorted_blocks), position, unique)
    _META_LAYOUTS[meta] = layout
    while len(_META_LAYOUTS) > _META_LAYOUTS_KEPT:
        _META_LAYOUTS.popitem(last=False)
    return layout


def decode_snapshot(db: sqlite_utils.Database, snapshot_id: int) -> Decoded | None:
    """Decode one raw snapshot (reads only; `write_decoded` stores the result). None when it is not raw (any
    more); `MetaPending` when its meta-data is not in the store yet, `CoverageError` when its bytes are bad."""
    row = db.conn.execute(
        "SELECT raw, meta, source FROM cover_snapshots WHERE id = ? AND raw IS NOT NULL AND counters IS NULL",
        (snapshot_id,),
    ).fetchone()
    if row is None:
        return None
    raw, meta, source = row
    with gc_paused():
        decoded = _decode_text(raw, source) if meta is None else _decode_counters(db, raw, meta, source)
    mode, layout_hash, layout_blob, block_count, counters = decoded
    _remember_layout(layout_hash, layout_blob)
    return Decoded(snapshot_id, mode, layout_hash, layout_blob, block_count, pack_counters(counters))


def _decode_counters(db: sqlite_utils.Database, raw: bytes, meta: str, source: str) -> tuple:
    layout = _meta_layout(db, meta, where=source)
    parsed = covdata.parse_counters(raw, layout.meta, where=source)
    if layout.order is not None:
        # Counts in meta-data order by slices, then picked in layout order: all in C.
        by_meta = [0] * len(layout.position)
        for (package, function), ran in parsed.items():
            first = layout.meta.packages[package].functions[function].first_block
            by_meta[first : first + len(ran)] = ran
        counts = list(map(by_meta.__getitem__, layout.order))
        return layout.meta.mode, layout.layout_hash, layout.layout_blob, layout.block_count, counts
    counts = [0] * layout.block_count
    position, packages = layout.position, layout.meta.packages
    counting = layout.meta.mode != "set"
    for (package, function), ran in parsed.items():
        first = packages[package].functions[function].first_block
        for at, count in zip(position[first : first + len(ran)], ran, strict=True):
            if count and at >= 0:
                counts[at] = counts[at] + count if counting else 1
    return layout.meta.mode, layout.layout_hash, layout.layout_blob, layout.block_count, counts


def _decode_text(raw: bytes, source: str) -> tuple:
    try:
        text = raw.decode()
    except UnicodeDecodeError as exc:
        raise CoverageError(f"{source}: not UTF-8 text (byte {exc.start}): not a Go text profile") from None
    profile = gotext.parse_text(text, where=source)
    for block in [block for block in profile.statements if is_agent_file(block.file)]:
        del profile.statements[block], profile.counts[block]
    if not profile.statements:
        raise CoverageError(f"{source}: the profile has no blocks")
    blocks, layout_hash, blob = encode_layout(profile)
    return profile.mode, layout_hash, blob, len(blocks), list(map(profile.counts.__getitem__, blocks))


def write_decoded(conn: sqlite3.Connection, decoded: Decoded) -> bool:
    """Store a decoded snapshot and clear its raw bytes; False if it was decoded meanwhile. Inside the caller's
    transaction."""
    conn.execute(
        "INSERT OR IGNORE INTO cover_layouts (hash, block_count, blocks) VALUES (?, ?, ?)",
        (decoded.layout_hash, decoded.block_count, decoded.layout_blob),
    )
    cursor = conn.execute(
        "UPDATE cover_snapshots SET mode = ?, layout = ?, counters = ?, raw = NULL "
        "WHERE id = ? AND raw IS NOT NULL AND counters IS NULL",
        (decoded.mode, decoded.layout_hash, decoded.counters, decoded.snapshot_id),
    )
    return cursor.rowcount == 1


def write_undecodable(conn: sqlite3.Connection, snapshot_id: int, reason: str) -> None:
    """Mark a raw snapshot whose bytes cannot be decoded as missing, with the reason; its raw bytes stay."""
    conn.execute(
        "UPDATE cover_snapshots SET missing = ? WHERE id = ? AND counters IS NULL",
        (f"undecodable: {reason}", snapshot_id),
    )


def decode_pending(db: sqlite_utils.Database, run: str | None = None) -> int:
    """Decode every raw snapshot (of `run`, or all), one transaction each; returns how many were decoded.

    Idempotent. A snapshot whose meta-data has not arrived stays pending; one whose bytes are bad becomes
    missing with the reason.
    """
    done = 0
    for snapshot_id in pending_snapshots(db, run):
        try:
            decoded = decode_snapshot(db, snapshot_id)
        except MetaPending:
            continue
        except CoverageError as exc:
            with transaction(db.conn):
                write_undecodable(db.conn, snapshot_id, str(exc))
            continue
        if decoded is not None:
            with transaction(db.conn):
                done += write_decoded(db.conn, decoded)
    return done


def save_python_lines(db: sqlite_utils.Database, *, run: str, contexts: Iterable[ContextLines], now_us: int) -> int:
    """Store each context's executed lines; a re-import of a context replaces its lines. Returns rows written."""
    with transaction(db.conn):
        return write_python_lines(db.conn, run=run, contexts=contexts, now_us=now_us)


def write_python_lines(conn: sqlite3.Connection, *, run: str, contexts: Iterable[ContextLines], now_us: int) -> int:
    """`save_python_lines` inside the caller's open transaction."""
    rows = [
        (run, item.context, item.test, file, msgpack.packb(lines))
        for item in contexts
        for file, lines in item.lines.items()
    ]
    ensure_run(conn, run, now_us)
    conn.executemany("INSERT OR REPLACE INTO py_lines (run, context, test, file, lines) VALUES (?, ?, ?, ?, ?)", rows)
    return len(rows)


def load_python_lines(db: sqlite_utils.Database, run: str) -> dict[str, dict[str, set[int]]]:
    """Executed Python lines per test and file: the union over the test's contexts."""
    tests: dict[str, dict[str, set[int]]] = {}
    for test, file, blob in db.conn.execute("SELECT test, file, lines FROM py_lines WHERE run = ?", (run,)):
        tests.setdefault(test, {}).setdefault(file, set()).update(msgpack.unpackb(blob))
    return tests
