"""The answers of the sink's query API (and of the HTML page): JSON-ready dicts read from one run's `RunData`.

`RunData` joins the two per-test models of a run: endpoint coverage (`endpointcov.EndpointCoverage`) and code
coverage (`pertest.per_test_coverage`), with a reverse index from a file to the tests that ran it (made on first
use: the reports and the diff never ask, and it is a million entries at 400 tests). Building it
reads the whole run (seconds at a million events); `RunCache` keeps one per run and rebuilds it only when the
run's data changed (`run_fingerprint`). Every query function takes a `RunData` (or the store, for the list of
runs) and raises `NotFoundError` naming what does not exist: the sink answers 404 with its message.

Names in answers: `tested` means hit by a test directly or indirectly; `conformance_tested` by a [Conformance]
test's own e2e.test client (APISnoop's rule); `hits` are `endpointcov.Hits.to_json()` dicts.
"""

from __future__ import annotations

import gc
import itertools
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TypeVar

import orjson
import sqlite_utils

from auditcov.merge.cover.model import gc_paused
from auditcov.merge.cover.pertest import PerTestCoverage, per_test_coverage
from auditcov.merge.errors import NotFoundError
from auditcov.merge.events import format_time
from auditcov.merge.openapi.catalogue import LEVELS, group_label
from auditcov.merge.reports.coderanges import Ranges, RunRanges, contains, line_count, pairs, run_ranges, union_size
from auditcov.merge.reports.coverjson import lines_of_test_json
from auditcov.merge.reports.endpointcov import EndpointCoverage, EndpointState, endpoint_coverage, merged_hits


@dataclass(slots=True)
class RunData:
    """One run's endpoint and code coverage, indexed for the queries."""

    run: str
    coverage: EndpointCoverage
    code: dict[str, PerTestCoverage]  # test -> its code coverage
    tags: dict[str, list[str]]  # test -> its [bracketed] tags
    by_test: dict[str, dict[str, set[str]]] = field(default_factory=dict)  # test -> op -> how (EndpointCoverage)
    #: Each test's covered lines per file, as `coderanges` ranges interned (made once per build: every answer about
    #: lines, the page and the diff read them).
    ranges: RunRanges = field(default_factory=lambda: RunRanges([], {}))
    states: dict[str, EndpointState] = field(default_factory=dict)  # operationId -> endpoint
    #: Which build this is: answers computed from it are remembered under it (`remember`).
    generation: int = field(default_factory=lambda: next(_GENERATIONS))
    _answers: dict[tuple, object] = field(default_factory=dict)
    _by_file: dict[str, dict[str, Ranges]] | None = None

    @property
    def by_file(self) -> dict[str, dict[str, Ranges]]:
        """file -> test -> its lines there (`ranges` the other way round), made on first use."""
        if self._by_file is None:
            by_file: dict[str, dict[str, Ranges]] = {}
            with gc_paused():
                segments = self.ranges.segments
                for test, numbers in self.ranges.tests.items():
                    for file, spans in map(segments.__getitem__, numbers.tolist()):
                        by_file.setdefault(file, {})[test] = spans
            self._by_file = by_file
        return self._by_file

    def test_names(self) -> set[str]:
        return set(self.coverage.tests) | set(self.by_test) | set(self.code)

    def remember(self, key: tuple, compute: Callable[[], T]) -> T:
        """What `compute()` gives (an answer, or its JSON), computed once per key for this build (a few thousand
        kept)."""
        answer = self._answers.get(key)
        if answer is None:
            if len(self._answers) >= _ANSWERS_KEPT:
                self._answers.clear()
            answer = self._answers[key] = compute()
        return answer


_GENERATIONS = itertools.count(1)
T = TypeVar("T")
_ANSWERS_KEPT = 4096


def load_run_data(db: sqlite_utils.Database, run: str, *, successful_only: bool = False) -> RunData:
    """Read `run` whole: its endpoint coverage, every test's code coverage, and the indexes over them."""
    with gc_paused():  # millions of small objects and no cycles: see gc_paused
        return _load_run_data(db, run, successful_only)


def _load_run_data(db: sqlite_utils.Database, run: str, successful_only: bool) -> RunData:
    check_run(db, run)
    coverage = endpoint_coverage(db, run, successful_only=successful_only)
    tags = {name: orjson.loads(text) for name, text in db.conn.execute("SELECT name, tags FROM tests WHERE run = ?",
                                                                       (run,))}  # fmt: skip
    code = per_test_coverage(db, run, event_spans=coverage.test_spans)
    data = RunData(run, coverage, {result.test: result for result in code}, tags)
    data.by_test = coverage.by_test()
    data.states = {state.endpoint.operation_id: state for state in coverage.endpoints}
    data.ranges = run_ranges(data.code.values())
    return data


def check_run(db: sqlite_utils.Database, run: str) -> None:
    """Raise `NotFoundError` unless the store has `run`."""
    if db.conn.execute("SELECT 1 FROM runs WHERE name = ?", (run,)).fetchone() is None:
        raise NotFoundError(f"no run {run!r} in the store")


#: What a run's answers depend on, each cheap to read (indexes or small tables): a change to any of them (events
#: arriving, a catalogue saved or replaced, markers, namespaces, snapshots taken or decoded, Python lines) means
#: the cached `RunData` is stale. Not seen: `auditcov remap` against a catalogue of the same source and size
#: (mapping every event again would cost a scan of the run per check); the next change of any of these is.
_FINGERPRINT_SQL = """
SELECT
    (SELECT COUNT(*) FROM events WHERE run = :run),
    (SELECT MAX(received_us) FROM events WHERE run = :run),
    (SELECT COUNT(*) FROM markers WHERE run = :run),
    (SELECT MAX(at_us) FROM markers WHERE run = :run),
    (SELECT COUNT(*) FROM namespaces WHERE run = :run),
    (SELECT COUNT(*) FROM tests WHERE run = :run),
    (SELECT COUNT(*) FROM cover_snapshots WHERE run = :run),
    (SELECT COUNT(counters) FROM cover_snapshots WHERE run = :run),
    (SELECT MAX(id) FROM cover_snapshots WHERE run = :run),
    (SELECT COUNT(*) FROM py_lines WHERE run = :run),
    (SELECT COUNT(*) FROM endpoints),
    (SELECT value FROM meta WHERE key = 'catalogue_source')
"""


def run_fingerprint(db: sqlite_utils.Database, run: str) -> tuple:
    """What `RunCache` compares to know whether a run changed (see `_FINGERPRINT_SQL`)."""
    return tuple(db.conn.execute(_FINGERPRINT_SQL, {"run": run}).fetchone())


class RunCache:
    """`RunData` per (run, successful_only), rebuilt when the store's `PRAGMA data_version` and then the run's
    fingerprint say something changed. `data_version` is read on the connection given, so callers keep one
    long-lived connection per cache; calls are serialized by a lock (a build is seconds; the others wait for it
    rather than build the same thing twice)."""

    def __init__(self, load: Callable[..., RunData] = load_run_data) -> None:
        self._load = load
        self._lock = threading.Lock()
        self._version: int | None = None
        self._entries: dict[tuple[str, bool], tuple[tuple, RunData]] = {}
        self._fingerprints: dict[str, tuple] = {}
        self._runs: tuple[int, dict] | None = None
        self.builds = 0  # how many times a run was read whole (for tests and the bench)

    def get(self, db: sqlite_utils.Database, run: str, *, successful_only: bool = False) -> RunData:
        with self._lock:
            version = db.conn.execute("PRAGMA data_version").fetchone()[0]
            if version != self._version:
                self._version = version
                self._fingerprints.clear()
            fingerprint = self._fingerprints.get(run)
            if fingerprint is None:
                check_run(db, run)
                fingerprint = self._fingerprints[run] = run_fingerprint(db, run)
            key = (run, successful_only)
            entry = self._entries.get(key)
            if entry is None or entry[0] != fingerprint:
                self._entries.pop(key, None)
                entry = self._entries[key] = (fingerprint, self._load(db, run, successful_only=successful_only))
                self.builds += 1
                # A kept model is millions of objects: left to the cyclic collector, every full collection walks
                # them all (seconds, in whichever request triggers it; p99 5.8 s in bench/report.py). Frozen,
                # they are never scanned; the model holds no cycles, so reference counting still frees it.
                gc.freeze()
            return entry[1]

    def runs(self, db: sqlite_utils.Database) -> dict:
        """`runs(db)`, computed again only when something was committed (it counts every run's events)."""
        with self._lock:
            version = db.conn.execute("PRAGMA data_version").fetchone()[0]
            if self._runs is None or self._runs[0] != version:
                self._runs = (version, runs(db))
            return self._runs[1]


def runs(db: sqlite_utils.Database) -> dict:
    """Every run with its counts (events, tests, conformance tests, snapshots) and time span."""
    rows = db.conn.execute(
        "SELECT r.name, r.created_us, r.duplicates,"
        " (SELECT COUNT(*) FROM events WHERE run = r.name),"
        " (SELECT MIN(received_us) FROM events WHERE run = r.name),"
        " (SELECT MAX(received_us) FROM events WHERE run = r.name),"
        " (SELECT COUNT(*) FROM tests WHERE run = r.name),"
        " (SELECT COUNT(*) FROM tests WHERE run = r.name AND conformance = 1),"
        " (SELECT COUNT(*) FROM cover_snapshots WHERE run = r.name)"
        " FROM runs AS r ORDER BY r.name"
    )
    return {
        "runs": [
            {
                "run": name,
                "created": format_time(created_us),
                "events": events,
                "duplicates": duplicates,
                "first": _time(first_us),
                "last": _time(last_us),
                "tests": tests,
                "conformance_tests": conformance,
                "snapshots": snapshots,
            }
            for name, created_us, duplicates, events, first_us, last_us, tests, conformance, snapshots in rows
        ]
    }


def tests(data: RunData, *, conformance: bool | None = None, sig: str | None = None, q: str | None = None) -> dict:
    """The run's tests, each with its endpoint, hit and line counts; filtered by conformance, by SIG (`apps`,
    `sig-apps` or `[sig-apps]`: the test's [sig-...] tag) and by text `q` in the name (any case)."""
    wanted_sig = None if sig is None else "[sig-" + sig.lower().strip("[]").removeprefix("sig-") + "]"
    needle = None if q is None else q.lower()
    rows = []
    for test in sorted(data.test_names()):
        is_conformance = data.coverage.tests.get(test, False)
        sigs = [tag for tag in data.tags.get(test, []) if tag.lower().startswith("[sig-")]
        if conformance is not None and is_conformance != conformance:
            continue
        if wanted_sig is not None and wanted_sig not in (tag.lower() for tag in sigs):
            continue
        if needle is not None and needle not in test.lower():
            continue
        rows.append(
            {
                "test": test,
                "conformance": is_conformance,
                "sigs": sigs,
                "endpoints": len(data.by_test.get(test, ())),
                "hits": sum(hits.count for ways in data.coverage.test_hits(test).values() for hits in ways.values()),
                "files": len(data.ranges.tests.get(test, ())),
                "lines": data.ranges.lines_of(test),
                "code": test in data.code,
            }
        )
    return {"run": data.run, "count": len(rows), "tests": rows}


def test_detail(data: RunData, test: str) -> dict:
    """One test: each endpoint it hit (how, counted or not, hits overall and per way) and its code lines."""
    if test not in data.test_names():
        raise NotFoundError(f"no test {test!r} in run {data.run!r}")
    counted = data.by_test.get(test, {})
    endpoints = []
    for operation_id, ways in sorted(data.coverage.test_hits(test).items()):
        state = data.states.get(operation_id)
        endpoints.append(
            {
                "endpoint": operation_id,
                "method": state.endpoint.method if state else None,
                "path": state.endpoint.path if state else None,
                "how": sorted(counted.get(operation_id, ())),
                # False when successful_only leaves it out: every hit of it failed.
                "counted": operation_id in counted,
                "hits": merged_hits(ways.values()).to_json(),
                "by_how": {how: hits.to_json() for how, hits in sorted(ways.items())},
            }
        )
    result = data.code.get(test)
    return {
        "run": data.run,
        "test": test,
        "conformance": data.coverage.tests.get(test, False),
        "tags": data.tags.get(test, []),
        "successful_only": data.coverage.successful_only,
        "endpoints": endpoints,
        "code": None if result is None else lines_of_test_json(result, data.ranges.of_test(test)),
    }


def endpoint_detail(data: RunData, operation_id: str) -> dict:
    """One endpoint: what the catalogue says of it, its hits, and the tests that hit it, directly and indirectly."""
    state = data.states.get(operation_id)
    if state is None:
        raise NotFoundError(f"no endpoint {operation_id!r} in the store's catalogue ({data.coverage.catalogue_source})")
    coverage = data.coverage
    rows = []
    for test, ways in sorted(coverage.endpoint_test_hits(operation_id).items()):
        how = sorted(data.by_test.get(test, {}).get(operation_id, ()))
        rows.append(
            {
                "test": test,
                "conformance": coverage.tests.get(test, False),
                "how": how,
                "counted": bool(how),
                "e2e": test in coverage.e2e_tests(operation_id),
                "hits": merged_hits(ways.values()).to_json(),
                "by_how": {way: hits.to_json() for way, hits in sorted(ways.items())},
            }
        )
    return {
        "run": data.run,
        **_endpoint_json(state),
        "tested": coverage.hit(operation_id),
        "tested_directly": coverage.hit_directly(operation_id),
        "conformance_tested": coverage.conformance_tested(operation_id),
        "successful_only": coverage.successful_only,
        "hits": coverage.hits_of(operation_id).to_json(),
        "tests": rows,
    }


def code(data: RunData, file: str, line: int | None = None) -> dict:
    """The tests that ran `file` (or its `line`). `file` is a path as the profiles name it, or its end (a path
    relative to a checkout: `pkg/x.go` finds `k8s.io/kubernetes/pkg/x.go`); every file it names is answered."""
    files = _files_named(data, file)
    if not files:
        raise NotFoundError(f"no test of run {data.run!r} ran a file named {file!r}")
    answers = []
    for name in files:
        per_test = data.by_file[name]
        rows = []
        for test in sorted(per_test):
            spans = per_test[test]
            if line is not None and not contains(spans, line):
                continue
            rows.append(
                {
                    "test": test,
                    "conformance": data.coverage.tests.get(test, False),
                    "lines": line_count(spans),
                    "ranges": pairs(spans),
                }
            )
        answers.append({"file": name, "tests": rows})
    return {"run": data.run, "file": file, "line": line, "files": answers}


def _files_named(data: RunData, file: str) -> list[str]:
    if file in data.by_file:
        return [file]
    tail = "/" + file.lstrip("/")
    return sorted(name for name in data.by_file if name.endswith(tail))


def _counts(data: RunData, states: Iterable[EndpointState]) -> dict[str, int]:
    coverage = data.coverage
    counts = dict.fromkeys(
        ("endpoints", "tested", "tested_directly", "conformance_tested", "eligible", "eligible_conformance_tested"), 0
    )
    for state in states:
        operation_id = state.endpoint.operation_id
        conformance = coverage.conformance_tested(operation_id)
        counts["endpoints"] += 1
        counts["tested"] += coverage.hit(operation_id)
        counts["tested_directly"] += coverage.hit_directly(operation_id)
        counts["conformance_tested"] += conformance
        counts["eligible"] += state.eligible
        counts["eligible_conformance_tested"] += state.eligible and conformance
    return counts


def summary(data: RunData) -> dict:
    """Endpoint coverage by level, group and category (deprecated endpoints left out), conformance-eligible
    coverage, hits by status class, and the run's code-coverage totals."""
    coverage = data.coverage
    current = [state for state in coverage.endpoints if not state.endpoint.deprecated]

    def by(key: Callable[[EndpointState], str], order: Iterable[str] = ()) -> dict[str, dict[str, int]]:
        buckets: dict[str, list[EndpointState]] = {name: [] for name in order}
        for state in current:
            buckets.setdefault(key(state), []).append(state)
        return {name: _counts(data, buckets[name]) for name in (*order, *sorted(set(buckets) - set(order)))}

    eligible = [state for state in current if state.eligible]
    files, lines = union_size(data.ranges.segments)  # every distinct segment of the run's tests
    tested_eligible = sum(coverage.conformance_tested(state.endpoint.operation_id) for state in eligible)
    return {
        "run": data.run,
        "catalogue": coverage.catalogue_source,
        "successful_only": coverage.successful_only,
        "totals": {
            **_counts(data, current),
            "deprecated": len(coverage.endpoints) - len(current),
            "tests": len(data.test_names()),
            "conformance_tests": sum(coverage.tests.values()),
            "unmatched_events": sum(coverage.unmatched.values()),
            "unmapped_events": coverage.unmapped,
        },
        "conformance_eligible": {
            "eligible": len(eligible),
            "tested": tested_eligible,
            "untested": len(eligible) - tested_eligible,
            "pending": sum(state.pending for state in eligible),
            "percent": round(100 * tested_eligible / len(eligible), 2) if eligible else None,
        },
        "by_level": by(lambda state: state.endpoint.level, LEVELS),
        "by_group": by(lambda state: group_label(state.endpoint.group)),
        "by_category": by(lambda state: state.endpoint.category),
        "hits": merged_hits(coverage.endpoint_hits.values()).to_json(),
        "code": {"tests": len(data.code), "files": files, "lines_covered": lines},
    }


def untested(data: RunData) -> dict:
    """The eligible endpoints no conformance test hit, each with what did hit it (other tests, failures)."""
    coverage = data.coverage
    rows = []
    for state in coverage.endpoints:
        operation_id = state.endpoint.operation_id
        if not state.eligible or coverage.conformance_tested(operation_id):
            continue
        rows.append(
            {
                **_endpoint_json(state),
                "tested": coverage.hit(operation_id),
                "tests": sorted(coverage.endpoint_test_hits(operation_id)),
                "hits": coverage.hits_of(operation_id).to_json(),
            }
        )
    return {"run": data.run, "successful_only": coverage.successful_only, "count": len(rows), "endpoints": rows}


def _endpoint_json(state: EndpointState) -> dict:
    return {
        "endpoint": state.endpoint.operation_id,
        **{key: value for key, value in state.endpoint.to_json().items() if key != "operation_id"},
        "eligible": state.eligible,
        "pending": state.pending,
        "ineligible_reason": state.ineligible_reason,
    }


def _time(micros: int | None) -> str | None:
    return None if micros is None else format_time(micros)
