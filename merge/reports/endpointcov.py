"""Endpoint coverage of one run, read from the store: the summary model every endpoint report renders.

`endpoint_coverage(db, run)` joins the store's catalogue (`endpoints`) with the run's mapped events:
- direct hits: events whose own user agent names a test (`events.test`), with the client that sent them;
  APISnoop counts only those from `e2e.test` clients, and so does the apisnoop format;
- indirect hits: events the `attributed_events` view gives to a test by namespace ownership or by a marker
  window (`attribution` 'namespace' or 'window');
- the events that matched no operation, counted by reason.
An e2e.test client whose agent carries no test text is no test: its events are neither direct nor indirect hits.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import sqlite_utils

from auditcov.merge.errors import StoreError
from auditcov.merge.openapi.catalogue import Endpoint
from auditcov.merge.openapi.stored import stored_catalogue

#: The client product of the Kubernetes e2e test binary (DESIGN.md §3).
E2E_CLIENT = "e2e.test"


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


def endpoint_coverage(db: sqlite_utils.Database, run: str) -> EndpointCoverage:
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
    mapped = conn.execute(
        "SELECT COUNT(*), COUNT(operation_id), COUNT(unmatched_reason) FROM events WHERE run = ?", (run,)
    ).fetchone()
    if mapped[0] and not (mapped[1] or mapped[2]):
        raise StoreError(f"run {run!r}: no event is mapped to an endpoint yet: run `auditcov remap` first")
    coverage.unmapped = mapped[0] - mapped[1] - mapped[2]
    for operation_id, test, client in conn.execute(
        "SELECT operation_id, test, client FROM events WHERE run = ? AND test IS NOT NULL"
        " AND operation_id IS NOT NULL GROUP BY operation_id, test, client",
        (run,),
    ):
        target = coverage.direct if client == E2E_CLIENT else coverage.direct_other
        target.setdefault(operation_id, set()).add(test)
    for operation_id, test, attribution in conn.execute(
        "SELECT operation_id, attributed_test, attribution FROM attributed_events WHERE run = ?"
        " AND attribution IN ('namespace', 'window') AND operation_id IS NOT NULL"
        " GROUP BY operation_id, attributed_test, attribution",
        (run,),
    ):
        coverage.indirect.setdefault(operation_id, {}).setdefault(test, set()).add(attribution)
    coverage.unmatched.update(
        dict(
            conn.execute(
                "SELECT unmatched_reason, COUNT(*) FROM events WHERE run = ? AND unmatched_reason IS NOT NULL"
                " GROUP BY unmatched_reason",
                (run,),
            ).fetchall()
        )
    )
    for user_agent, count in conn.execute(
        "SELECT user_agent, COUNT(*) FROM events WHERE run = ? AND client = ? GROUP BY user_agent",
        (run, E2E_CLIENT),
    ):
        version = user_agent.split(" ", 1)[0].partition("/")[2]  # e2e.test/v1.36.0 (linux/amd64) ...
        if version:
            coverage.e2e_versions[version] += count
    coverage.e2e_test_names = {
        row[0]
        for row in conn.execute(
            "SELECT DISTINCT test FROM events WHERE run = ? AND client = ? AND test IS NOT NULL", (run, E2E_CLIENT)
        )
    }
    coverage.first_us = conn.execute("SELECT MIN(received_us) FROM events WHERE run = ?", (run,)).fetchone()[0]
    return coverage
