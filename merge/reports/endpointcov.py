"""Endpoint coverage of one run, read from the store: the summary model every endpoint report renders.

`endpoint_coverage(db, run)` joins the store's catalogue (`endpoints`) with the run's mapped events:
- direct hits: events whose own user agent names a test (`events.test`), with the client that sent them;
  APISnoop counts only those from `e2e.test` clients, and so does the apisnoop format;
- indirect hits: events the `attributed_events` view gives to a test by namespace ownership or by a marker
  window (`attribution` 'namespace' or 'window');
- the events that matched no operation, counted by reason;
- hits: how many events hit each endpoint, for each test and way (`hits_by_test`, `hits_by_endpoint`) and in all
  (`endpoint_hits`, every client, attributed or not), with the first and last time and the counts by status
  class (`STATUS_CLASSES`). A hit is an event: a request recorded at two stages (RequestReceived, then
  ResponseComplete) counts twice, the first with no status (class `none`).
A hit answered 4xx or 5xx is still a hit (APISnoop's rule). With `successful_only`, the sets that say what was
tested (`direct`, `direct_other`, `indirect`, hence `by_test`, `hit`, `conformance_tested`) count only hits whose
status is successful (`SUCCESSFUL`: 1xx, as a connect's 101, 2xx or 3xx); the hit counts always hold every
hit, so a report can say why an endpoint hit only by failures is untested.
An e2e.test client whose agent carries no test text is no test: its events are neither direct nor indirect hits.
Everything comes from the run's events as the store counts them as they arrive (`event_groups`, a few tens of
thousands of rows for a million events: see `_GROUPS_SQL`), and for marker windows from one pass over
`attributed_events`. The same rows give each test's span (`test_spans`: its own events' first request time and
last stage time), from which per-test code coverage draws the windows of tests without markers
(`pertest.windows_of_tests`), so that a report reads no event of a run without markers.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import sqlite_utils

from auditcov.merge.errors import StoreError
from auditcov.merge.events import format_time
from auditcov.merge.openapi.catalogue import Endpoint
from auditcov.merge.openapi.stored import stored_catalogue

#: Status classes of a hit, by the first digit of its response code; `none` when the event has no code (a
#: RequestReceived event, or a code outside 100..599).
STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx", "none")
#: The classes `successful_only` counts as tested.
SUCCESSFUL = frozenset({"1xx", "2xx", "3xx"})
#: How a test hit an endpoint: its own client (`direct`), another client in its namespace, or in its marker window.
HOWS = ("direct", "namespace", "window")


@dataclass(slots=True)
class Hits:
    """Events that hit an endpoint (for one test and way, or in all): how many, first and last request time (us,
    `requestReceivedTimestamp`, else `stageTimestamp`), and how many of each status class."""

    count: int = 0
    first_us: int | None = None
    last_us: int | None = None
    by_status: dict[str, int] = field(default_factory=dict)

    def add(self, count: int, first_us: int | None, last_us: int | None, status: str) -> None:
        self.count += count
        self.by_status[status] = self.by_status.get(status, 0) + count
        if first_us is not None and (self.first_us is None or first_us < self.first_us):
            self.first_us = first_us
        if last_us is not None and (self.last_us is None or last_us > self.last_us):
            self.last_us = last_us

    def merge(self, other: Hits) -> None:
        for status, count in other.by_status.items():
            self.add(count, other.first_us, other.last_us, status)

    @property
    def successful(self) -> int:
        return sum(count for status, count in self.by_status.items() if status in SUCCESSFUL)

    def to_json(self) -> dict:
        """`{"hits", "successful", "first", "last", "status": {class: hits}}` (times in RFC 3339)."""
        return {
            "hits": self.count,
            "successful": self.successful,
            "first": None if self.first_us is None else format_time(self.first_us),
            "last": None if self.last_us is None else format_time(self.last_us),
            "status": {status: self.by_status[status] for status in STATUS_CLASSES if status in self.by_status},
        }


def merged_hits(hits: Iterable[Hits]) -> Hits:
    """One `Hits` adding up several (a test's ways of hitting one endpoint, say)."""
    total = Hits()
    for item in hits:
        total.merge(item)
    return total


@dataclass(slots=True)
class EndpointState:
    """An endpoint with its eligibility, as stored with the catalogue."""

    endpoint: Endpoint
    eligible: bool
    pending: bool
    ineligible_reason: str | None


@dataclass(slots=True)
class EndpointCoverage:
    run: str
    catalogue_source: str
    endpoints: list[EndpointState]
    tests: dict[str, bool]  # every test seen in the run -> conformance
    e2e_test_names: set[str] = field(default_factory=set)  # the tests named by e2e.test agents
    direct: dict[str, set[str]] = field(default_factory=dict)  # operationId -> tests named by e2e.test agents
    direct_other: dict[str, set[str]] = field(default_factory=dict)  # ... by other clients' agents
    indirect: dict[str, dict[str, set[str]]] = field(default_factory=dict)  # operationId -> test -> {how}
    unmatched: Counter = field(default_factory=Counter)  # reason -> events
    unmapped: int = 0  # events stored before there was a catalogue and not re-mapped since
    e2e_versions: Counter = field(default_factory=Counter)  # e2e.test/<version> -> events
    first_us: int | None = None
    successful_only: bool = False  # membership (direct, direct_other, indirect) counts only successful hits
    hits_by_test: dict[str, dict[str, dict[str, Hits]]] = field(default_factory=dict)  # test -> op -> how -> hits
    hits_by_endpoint: dict[str, dict[str, dict[str, Hits]]] = field(default_factory=dict)  # op -> test -> how -> ..
    endpoint_hits: dict[str, Hits] = field(default_factory=dict)  # op -> every event that hit it, any client
    # For APISnoop's lists (merge/reports/apisnoop.py): endpoints hit by e2e.test clients whose agent names no test,
    # and by clients other than e2e.test (any attribution); how many e2e.test events name no test, matched or not.
    e2e_untitled: set[str] = field(default_factory=set)
    other_clients: set[str] = field(default_factory=set)
    e2e_untitled_events: int = 0
    #: test -> (first, last): the first request time (`requestReceivedTimestamp`, else `stageTimestamp`) and the
    #: last stage time (`stageTimestamp`, else `requestReceivedTimestamp`) of the events naming it (`events.test`).
    test_spans: dict[str, tuple[int, int]] = field(default_factory=dict)

    def e2e_tests(self, operation_id: str) -> set[str]:
        return self.direct.get(operation_id, set())

    def conformance_tested(self, operation_id: str) -> bool:
        return any(self.tests.get(test, False) for test in self.e2e_tests(operation_id))

    def hit_directly(self, operation_id: str) -> bool:
        """Hit by an event whose own agent names a test, from any client."""
        return operation_id in self.direct or operation_id in self.direct_other

    def hit(self, operation_id: str) -> bool:
        """Hit by a test directly or indirectly (namespace ownership, marker window)."""
        return self.hit_directly(operation_id) or operation_id in self.indirect

    def by_test(self) -> dict[str, dict[str, set[str]]]:
        """test -> operationId -> how it was hit ('direct', 'namespace', 'window'), any client."""
        result: dict[str, dict[str, set[str]]] = {name: {} for name in self.tests}
        for direct in (self.direct, self.direct_other):
            for operation_id, tests in direct.items():
                for test in tests:
                    result.setdefault(test, {}).setdefault(operation_id, set()).add("direct")
        for operation_id, tests in self.indirect.items():
            for test, how in tests.items():
                result.setdefault(test, {}).setdefault(operation_id, set()).update(how)
        return result

    def test_hits(self, test: str) -> dict[str, dict[str, Hits]]:
        """operationId -> how -> hits, for every endpoint `test` hit (failures included)."""
        return self.hits_by_test.get(test, {})

    def endpoint_test_hits(self, operation_id: str) -> dict[str, dict[str, Hits]]:
        """test -> how -> hits, for every test that hit `operation_id` (failures included)."""
        return self.hits_by_endpoint.get(operation_id, {})

    def add_hits(
        self,
        test: str,
        operation_id: str,
        how: str,
        e2e: bool,
        count: int,
        first_us: int | None,
        last_us: int | None,
        status: str,
    ) -> None:
        """Count `count` events of one status class by which `test` hit `operation_id` (how: `HOWS`; e2e: the
        test's own e2e.test client sent them), and add the test to the tested sets (unless `successful_only`
        leaves them out)."""
        per_test = self.hits_by_test.setdefault(test, {}).setdefault(operation_id, {})
        hits = per_test.get(how)
        if hits is None:
            hits = per_test[how] = Hits()
            self.hits_by_endpoint.setdefault(operation_id, {}).setdefault(test, {})[how] = hits
        hits.add(count, first_us, last_us, status)
        if self.successful_only and status not in SUCCESSFUL:
            return
        if how == "direct":
            (self.direct if e2e else self.direct_other).setdefault(operation_id, set()).add(test)
        else:
            self.indirect.setdefault(operation_id, {}).setdefault(test, set()).add(how)

    def hits_of(self, operation_id: str) -> Hits:
        """Every event of the run that hit `operation_id`, from any client, attributed to a test or not."""
        return self.endpoint_hits.get(operation_id) or Hits()


#: The run's events as the store counts them (`merge.store.count_events`): rows of groups, which the loop below adds
#: up, in the order of their first request time. Attribution follows `attributed_events`: the event's own test,
#: else the owner of its namespace (`namespaces`), else its marker window; windows are read from the view itself,
#: and only for a run with markers. tests/test_endpointcov.py checks both agree.
_GROUPS_SQL = """
SELECT test, namespace, operation_id, unmatched_reason, e2e, e2e_version, code, hits, first_us, last_us, done_us
FROM event_groups WHERE run = ?
ORDER BY COALESCE(first_us, 0), test, namespace, operation_id, unmatched_reason, e2e, e2e_version, code
"""
_WINDOW_SQL = """
SELECT window_test, operation_id, code, COUNT(*), MIN(COALESCE(received_us, stage_us)),
    MAX(COALESCE(received_us, stage_us))
FROM attributed_events WHERE run = ? AND attribution = 'window' AND operation_id IS NOT NULL
GROUP BY 1, 2, 3
"""


def status_class(code: int | None) -> str:
    """The `STATUS_CLASSES` entry of a response code."""
    return f"{code // 100}xx" if code is not None and 100 <= code <= 599 else "none"


def endpoint_coverage(db: sqlite_utils.Database, run: str, *, successful_only: bool = False) -> EndpointCoverage:
    """The run's endpoint coverage against the store's catalogue (see the module docstring)."""
    conn = db.conn
    catalogue = stored_catalogue(db)
    states = {
        row[0]: (bool(row[1]), bool(row[2]), row[3])
        for row in conn.execute("SELECT operation_id, eligible, pending, ineligible_reason FROM endpoints")
    }
    coverage = EndpointCoverage(
        run=run,
        catalogue_source=catalogue.source,
        endpoints=[EndpointState(e, *states[op]) for op, e in sorted(catalogue.endpoints.items())],
        tests={name: bool(conformance) for name, conformance in conn.execute(
            "SELECT name, conformance FROM tests WHERE run = ?", (run,))},
    )  # fmt: skip
    coverage.successful_only = successful_only
    owners = dict(conn.execute("SELECT namespace, test FROM namespaces WHERE run = ?", (run,)))
    events = matched = 0
    spans = coverage.test_spans
    for test, namespace, operation_id, reason, e2e, version, code, count, first_us, last_us, done_us in conn.execute(
        _GROUPS_SQL, (run,)
    ):
        events += count
        if test is not None and first_us is not None:
            span = spans.get(test)
            spans[test] = (first_us, done_us) if span is None else (min(span[0], first_us), max(span[1], done_us))
        if version:
            coverage.e2e_versions[version] += count
        if e2e and test is not None:
            coverage.e2e_test_names.add(test)
        elif e2e:
            coverage.e2e_untitled_events += count
        if operation_id is None:
            if reason is not None:
                coverage.unmatched[reason] += count
            continue
        matched += count
        status = status_class(code)
        hits = coverage.endpoint_hits.get(operation_id)
        if hits is None:
            hits = coverage.endpoint_hits[operation_id] = Hits()
        hits.add(count, first_us, last_us, status)
        if not (successful_only and status not in SUCCESSFUL):
            if not e2e:
                coverage.other_clients.add(operation_id)
            elif test is None:
                coverage.e2e_untitled.add(operation_id)
        if test is not None:
            coverage.add_hits(test, operation_id, "direct", bool(e2e), count, first_us, last_us, status)
        elif namespace in owners:
            coverage.add_hits(owners[namespace], operation_id, "namespace", False, count, first_us, last_us, status)
    if conn.execute("SELECT 1 FROM markers WHERE run = ? AND event = 'start' LIMIT 1", (run,)).fetchone():
        for test, operation_id, code, count, first_us, last_us in conn.execute(_WINDOW_SQL, (run,)):
            coverage.add_hits(test, operation_id, "window", False, count, first_us, last_us, status_class(code))
    unmatched = sum(coverage.unmatched.values())
    if events and not (matched or unmatched):
        raise StoreError(f"run {run!r}: no event is mapped to an endpoint yet: run `auditcov remap` first")
    coverage.unmapped = events - matched - unmatched
    coverage.first_us = conn.execute("SELECT MIN(received_us) FROM events WHERE run = ?", (run,)).fetchone()[0]
    return coverage
