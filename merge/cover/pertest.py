"""Per-test code coverage: each test's window, and the difference of the snapshots at its edges.

Windows. A test's window comes from its runner's markers (`start` and `end` in `markers`) when it has both;
otherwise from its own events: the first `requestReceivedTimestamp` to the last `stageTimestamp`.

Deltas. Snapshots hold cumulative counters per process. For each process, a test's delta is the snapshot
taken at or after its end minus the snapshot taken at or before its start (the latest before, the earliest
after); a snapshot exactly at a boundary closes one window and opens the next. The test's Go coverage is the
sum of its per-process deltas. Counts in `count`/`atomic` mode are hits in the window. In `set` mode a counter
is only 0 or 1, so a delta can only mean "first hit in this window": code that ran earlier in the process and
again in the window does not show; such results carry `first_hit_only`.

A test whose window overlaps another's (sharing more than a boundary instant) shares its coverage: whatever
ran in the overlap is in both deltas, and `shared_with` names the others. A delta that cannot be computed (no
snapshot before or after, counters that went down because the process restarted or cleared them, a binary
whose layout changed) is left out with a problem saying why; the test's other processes still count. Such a
test is `incomplete`.

Live snapshots (the sink's boundaries). A boundary snapshot that could not be taken (the agent timed out,
refused, died) is stored as missing with the reason: a test whose edge falls on it is incomplete for that
process, with the reason; its delta is never widened to the snapshots beyond. A Python agent's boundaries
carry no counters (its lines come per context), but a missing one makes the tests it bounds incomplete just
the same. Snapshots of a `profile` source (a text profile its process rewrites every few seconds,
KUBE_COVERAGE_FILE) lag the boundary by up to that interval: their deltas are `coarse`. Snapshots the sink has
not decoded yet are decoded here, in memory.

Python lines come from coverage.py contexts (already per test) and are added to the test's lines.

The model. A test whose code is one process's delta alone (the common case: one instrumented kube-apiserver)
keeps it as `LayoutCounts`, the layout indexes of the blocks that ran and their counts (numpy arrays: 400 tests
of a kube-apiserver run change 2 * 10^6 blocks in all), and reports read their lines and statements from those
(`coderanges.result_ranges`, `statements_run`); its `Profile` is built only when asked for. A test with Python
lines or a second delta has its blocks merged into a `Profile` as they are added (Go's rules: counts summed, a
statement count that disagrees is a problem), and everything reads that.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import pairwise

import numpy as np
import sqlite_utils

from auditcov.merge.cover.encoding import Counters, Layout, changed_counts
from auditcov.merge.cover.model import CoverageError, Profile
from auditcov.merge.cover.pycoverage import add_python_lines
from auditcov.merge.cover.snapshots import Snapshot, list_snapshots, load_layout, load_python_lines, snapshot_counters


@dataclass(frozen=True, slots=True)
class Window:
    """When a test ran, in microseconds since the epoch, and what said so (`markers` or `events`)."""

    test: str
    start_us: int
    end_us: int
    source: str

    def overlaps(self, other: Window) -> bool:
        return self.start_us < other.end_us and other.start_us < self.end_us


@dataclass(frozen=True, slots=True)
class LayoutCounts:
    """Blocks of one layout that ran in a window: their indexes in the layout, ascending, and how often each ran
    (every count above 0), as numpy arrays."""

    layout: Layout
    indexes: np.ndarray
    counts: np.ndarray

    def add_to(self, profile: Profile) -> None:
        """Merge these blocks into `profile` one by one, by `Profile.add`'s rules (CoverageError when a statement
        count disagrees: the blocks before it are in)."""
        statements = self.layout.column_array(5)[self.indexes].tolist()
        blocks = self.layout.blocks(self.indexes.tolist())
        for block, num_stmt, count in zip(blocks, statements, self.counts.tolist(), strict=True):
            profile.add(block, num_stmt, count)

    def statements_run(self) -> int:
        return int(self.layout.column_array(5)[self.indexes].sum(dtype=np.uint64))


@dataclass(slots=True)
class PerTestCoverage:
    """What one test covered: the summary every coverage report reads (the model: see the module docstring)."""

    test: str
    window: Window | None
    #: The Go blocks that ran, while they are one process's delta alone; None once the test's code is `profile`'s.
    blocks: LayoutCounts | None = None
    first_hit_only: bool = False
    shared_with: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    #: Some process's delta is left out (a missing or absent snapshot at an edge, ...): `problems` says why.
    incomplete: bool = False
    #: Some delta comes from a profile source that lags the boundaries (KUBE_COVERAGE_FILE).
    coarse: bool = False
    _profile: Profile | None = None

    @property
    def profile(self) -> Profile:
        """Go block deltas and Python one-line blocks, in the shared model; only blocks that ran are in it (built
        from `blocks` on first use, when the test has them)."""
        if self._profile is None:
            self._profile = Profile("count")
            if self.blocks is not None:
                self.blocks.add_to(self._profile)
        return self._profile

    def add_blocks(self, delta: LayoutCounts) -> None:
        """Add one process's delta: kept as it is when it is the test's only code, else merged into `profile`
        (CoverageError when a statement count disagrees, as `Profile.add`)."""
        if self.blocks is None and self._profile is None:
            self.blocks = delta
            return
        profile = self.profile
        self.blocks = None
        delta.add_to(profile)

    def add_python(self, lines: dict[str, set[int]]) -> None:
        """Add the test's Python lines (one-line blocks that ran once)."""
        if lines:
            add_python_lines(self.profile, lines)
            self.blocks = None

    def problem(self, message: str) -> None:
        """Record why a process's delta is left out: the test is incomplete."""
        self.problems.append(message)
        self.incomplete = True

    def lines(self) -> dict[str, set[int]]:
        """Covered lines per file (the model's rule: a line is covered when any block on it ran)."""
        return self.profile.lines()

    def statements_run(self) -> int:
        """Statements in the blocks that ran in the window (a Python line is one statement)."""
        if self.blocks is not None:
            return self.blocks.statements_run()
        return sum(self.profile.statements[block] for block, count in self.profile.counts.items() if count)


def windows_of_tests(
    db: sqlite_utils.Database, run: str, *, event_spans: dict[str, tuple[int, int]] | None = None
) -> dict[str, Window]:
    """Each test's window by the rule in the module docstring. `event_spans` is each test's first request time and
    last stage time over its own events when the caller has them (`EndpointCoverage.test_spans`: the endpoint
    model reads the same events), else they are read here."""
    if event_spans is None:
        event_spans = {
            test: (start_us, end_us)
            for test, start_us, end_us in db.conn.execute(
                "SELECT test, MIN(COALESCE(received_us, stage_us)), MAX(COALESCE(stage_us, received_us)) FROM events "
                "WHERE run = ? AND test IS NOT NULL AND COALESCE(received_us, stage_us) IS NOT NULL GROUP BY test",
                (run,),
            )
        }
    windows = {test: Window(test, *event_spans[test], "events") for test in sorted(event_spans)}
    for test, start_us, end_us in db.conn.execute(
        "SELECT test, MAX(CASE event WHEN 'start' THEN at_us END), MAX(CASE event WHEN 'end' THEN at_us END) "
        "FROM markers WHERE run = ? GROUP BY test",
        (run,),
    ):
        if start_us is not None and end_us is not None:
            windows[test] = Window(test, start_us, end_us, "markers")
    return windows


def _overlaps(windows: list[Window]) -> dict[str, list[str]]:
    ordered = sorted(windows, key=lambda window: (window.start_us, window.end_us))
    shared: dict[str, list[str]] = {}
    for position, window in enumerate(ordered):
        for later in ordered[position + 1 :]:
            if later.start_us >= window.end_us:
                break
            if window.overlaps(later):
                shared.setdefault(window.test, []).append(later.test)
                shared.setdefault(later.test, []).append(window.test)
    return shared


#: Decoded snapshots kept: neighbouring windows share edge snapshots, and a few cover a run in window order.
_DECODED_KEPT = 8
#: Snapshots decoded ahead, each on a thread of its own: decoding one takes longer than taking a delta.
DECODE_AHEAD = 2


class _Deltas:
    """Per-process snapshot deltas, reading each snapshot's counters once for neighbouring windows, and the next
    ones' on `decoder`'s threads meanwhile."""

    def __init__(self, db: sqlite_utils.Database, snapshots: list[Snapshot], decoder: ThreadPoolExecutor):
        self._db = db
        self._decoder = decoder
        self._by_process: dict[str, list[Snapshot]] = {}
        for snapshot in snapshots:
            self._by_process.setdefault(snapshot.process, []).append(snapshot)
        self._times = {process: [s.at_us for s in items] for process, items in self._by_process.items()}
        self._next = {a.id: b for items in self._by_process.values() for a, b in pairwise(items)}
        self._decoded: OrderedDict[int, Future] = OrderedDict()
        self._layout = lru_cache(maxsize=2)(lambda layout_hash: load_layout(db, layout_hash))

    def _counters(self, snapshot: Snapshot) -> Counters:
        """A snapshot's counters; the next snapshots of its process (the next windows' ends, in window order) are
        decoded on other threads meanwhile (SQLite and zlib let go of the GIL: decoding was a third of a per-run
        model)."""
        ahead = [snapshot]
        while len(ahead) <= DECODE_AHEAD and ahead[-1].id in self._next:
            ahead.append(self._next[ahead[-1].id])
        for wanted in ahead:
            if not wanted.has_counters:
                continue
            if wanted.id in self._decoded:
                self._decoded.move_to_end(wanted.id)
            else:
                self._decoded[wanted.id] = self._decoder.submit(snapshot_counters, self._db, wanted)
        while len(self._decoded) > _DECODED_KEPT:
            self._decoded.popitem(last=False)
        return self._decoded[snapshot.id].result()

    def add_window(self, result: PerTestCoverage) -> None:
        window = result.window
        for process, snapshots in self._by_process.items():
            times = self._times[process]
            before_index = bisect_right(times, window.start_us) - 1
            after_index = bisect_left(times, window.end_us)
            if before_index < 0:
                result.problem(f"process {process!r}: no snapshot at or before the test's start")
                continue
            if after_index == len(snapshots):
                result.problem(f"process {process!r}: no snapshot at or after the test's end")
                continue
            before, after = snapshots[before_index], snapshots[after_index]
            missing = [(edge, s) for edge, s in (("start", before), ("end", after)) if s.missing is not None]
            if missing:
                for edge, snapshot in missing:
                    result.problem(
                        f"process {process!r}: the snapshot at the test's {edge} is missing: {snapshot.missing}"
                    )
                continue
            if not (before.has_counters and after.has_counters):
                continue  # a Python agent's boundaries: its lines come from its contexts
            try:
                self._add_delta(result, process, before, after)
            except CoverageError as exc:
                result.problem(f"process {process!r}: {exc}")

    def _add_delta(self, result: PerTestCoverage, process: str, before: Snapshot, after: Snapshot) -> None:
        old, new = self._counters(before), self._counters(after)
        if old.layout != new.layout or old.mode != new.mode:
            result.problem(
                f"process {process!r}: snapshots {before.source} and {after.source} are of different builds "
                f"(block layout or mode differs), so they cannot be subtracted"
            )
            return
        changed, before_counts, after_counts = changed_counts(old, new)
        if (after_counts < before_counts).any():
            result.problem(
                f"process {process!r}: counters went down between {before.source} and {after.source} "
                f"(the process restarted or cleared its counters)"
            )
            return
        if new.mode == "set":
            result.first_hit_only = True
        if "profile" in (before.kind, after.kind):
            result.coarse = True
        result.add_blocks(LayoutCounts(self._layout(new.layout), changed, after_counts - before_counts))


def per_test_coverage(
    db: sqlite_utils.Database,
    run: str,
    *,
    test: str | None = None,
    event_spans: dict[str, tuple[int, int]] | None = None,
) -> list[PerTestCoverage]:
    """Every test of `run` (or just `test`) with its Go deltas and Python lines, ordered by window, then name
    (`event_spans`: as `windows_of_tests` takes them)."""
    windows = windows_of_tests(db, run, event_spans=event_spans)
    shared = _overlaps(list(windows.values()))
    python = load_python_lines(db, run)
    names = sorted(set(windows) | set(python), key=lambda name: (name not in windows, _start(windows, name), name))
    if test is not None:
        names = [name for name in names if name == test]
    results = []
    with ThreadPoolExecutor(DECODE_AHEAD, thread_name_prefix="auditcov-snapshots") as decoder:
        deltas = _Deltas(db, list_snapshots(db, run), decoder)
        for name in names:
            result = PerTestCoverage(name, windows.get(name), shared_with=shared.get(name, []))
            result.add_python(python.get(name, {}))
            if result.window is not None:
                deltas.add_window(result)
            results.append(result)
    return results


def _start(windows: dict[str, Window], name: str) -> int:
    window = windows.get(name)
    return window.start_us if window else 0
