"""The APISnoop format: the shape of APISnoop's `resources/coverage/<release>.json`, with APISnoop's semantics.

Semantics (APISnoop's snoopdb, `endpoint_coverage` and `audit_event_test`):
- an endpoint is `tested` when an event from an `e2e.test` client naming a test hit it (direct hits only: work
  that controllers or the kubelet do for a test does not count), and `conf_tested` when one of those tests is
  a [Conformance] test; any response status counts;
- `tests` lists those test names, sorted. Where APISnoop writes `[null]` for an untested endpoint and adds null
  for hits by other clients, and `""` for e2e.test clients whose agent carries no test text, auditcov writes
  only test names (an untested endpoint has `[]`): an e2e.test client without a test is no test;
- deprecated endpoints are left out, and endpoints are ordered by level (stable, beta, alpha), then operationId;
- `tests[]` has every test an e2e.test agent named in the run, with its conformance.yaml entry (testname,
  file, promotion_release) when it has one; `conformance_test` is the [Conformance] tag;
- the totals count endpoints; "eligible" is auditcov's rule (merge.openapi.eligibility). The two "new ..."
  totals count eligible endpoints whose operationId the previous release's catalogue lacks; they need that
  catalogue (`previous`, the operationIds of its endpoints) and are null without it.
The release is the version the e2e.test agents report (`e2e.test/v1.36.0` -> 1.36.0), or the caller's.
"""

from __future__ import annotations

from datetime import UTC, datetime

from auditcov.merge.openapi.eligibility import ConformanceTest
from auditcov.merge.reports.endpointcov import EndpointCoverage

_LEVEL_ORDER = {"stable": 0, "beta": 1, "alpha": 2}


def apisnoop_report(
    coverage: EndpointCoverage,
    conformance: dict[str, ConformanceTest],
    release: str | None = None,
    previous: set[str] | None = None,
) -> dict:
    """The report as a JSON-ready dict (keys in APISnoop's order)."""
    release = release or _release_of(coverage)
    current = sorted(
        (state for state in coverage.endpoints if not state.endpoint.deprecated),
        key=lambda state: (_LEVEL_ORDER.get(state.endpoint.level, 3), state.endpoint.operation_id),
    )
    endpoints = []
    for state in current:
        endpoint = state.endpoint
        tests = sorted(coverage.e2e_tests(endpoint.operation_id))
        endpoints.append(
            {
                "kind": endpoint.kind,
                "path": endpoint.path,
                "group": endpoint.group,
                "level": endpoint.level,
                "tests": tests,
                "action": endpoint.action,
                "tested": bool(tests),
                "release": release,
                "version": endpoint.version,
                "category": endpoint.category,
                "endpoint": endpoint.operation_id,
                "conf_tested": coverage.conformance_tested(endpoint.operation_id),
                "description": endpoint.description or None,
            }
        )
    eligible = [row for row, state in zip(endpoints, current, strict=True) if state.eligible]
    new = None if previous is None else [row for row in eligible if row["endpoint"] not in previous]
    return {
        "spec": coverage.catalogue_source,
        "tests": [
            _test_row(name, coverage.tests.get(name, False), conformance, release)
            for name in sorted(coverage.e2e_test_names)
        ],
        "release": release,
        "sources": [f"auditcov run {coverage.run}"],
        "endpoints": endpoints,
        "release_date": _date(coverage.first_us),
        "total endpoints": len(endpoints),
        "tested endpoints": sum(row["tested"] for row in endpoints),
        "new conformance eligible endpoints": None if new is None else len(new),
        "total conformance eligible endpoints": len(eligible),
        "tested conformance eligible endpoints": sum(row["conf_tested"] for row in eligible),
        "new tested conformance eligible endpoints": None if new is None else sum(row["conf_tested"] for row in new),
    }


def _test_row(name: str, conformance_tagged: bool, conformance: dict[str, ConformanceTest], release: str) -> dict:
    known = conformance.get(name)
    return {
        "file": known.file if known else None,
        "test": name,
        "release": release,
        "testname": known.testname if known else None,
        "conformance_test": conformance_tagged,
        "promotion_release": known.release if known else None,
    }


def _release_of(coverage: EndpointCoverage) -> str | None:
    if not coverage.e2e_versions:
        return None
    version = coverage.e2e_versions.most_common(1)[0][0]
    return version.removeprefix("v")


def _date(micros: int | None) -> str | None:
    if micros is None:
        return None
    return datetime.fromtimestamp(micros / 1_000_000, UTC).strftime("%Y-%m-%dT%H:%M:%S")
