"""The APISnoop format: a drop-in for APISnoop's `resources/coverage/<release>.json`, by APISnoop's own rules
(snoopdb's `audit_event`, the `endpoint_coverage` and `audit_event_test` views, `generate_latest_coverage_json`),
where auditcov's other reports choose differently:
- an event's test is the agent's text after ` -- ` for an `e2e.test` client (`""` when there is none; APISnoop
  cuts at `--`, the same for test names without `--`), and no test (null) for any other client; an endpoint is
  `tested` when any e2e.test agent hit it, with a test name or without one, and `conf_tested` when an agent
  containing `[Conformance]` hit it; any response status counts (unless the caller asks for successful hits
  only, which APISnoop does not do);
- `tests` is the distinct tests of every event that hit the endpoint, null included (other clients), and `[null]`
  for an endpoint nothing hit; only direct hits count (what controllers do for a test is null);
- the level is APISnoop's, from the path (`alpha` or `beta` in it; two service-account issuer endpoints are beta
  by a rule of their own; stable otherwise), not from the group version as elsewhere in auditcov; an endpoint is
  deprecated when its description says so; deprecated endpoints are left out;
- endpoints are ordered by level (stable, beta, alpha), then operationId, and test names are sorted, as
  PostgreSQL sorts text in an en_US.UTF-8 database (`collation_key`), null last;
- `tests[]` has every test an e2e.test agent named (`""` too), `conformance_test` true when conformance.yaml lists
  it as a codename, with its testname, file and promotion release;
- the header totals come from APISnoop's own lists: `total endpoints` and `tested endpoints` count the endpoints
  above; the conformance totals (snoopdb's `conformance.coverage_per_release`) count the eligible endpoints
  (`conformance.eligible_endpoint`: stable, not deprecated, not in the ineligible list; pending ones left out, as
  the gate leaves them out: APISnoop's published totals have every counted endpoint tested), tested when an
  event of a conformance.yaml test hit it, and `new` those the previous release's catalogue lacks (`previous`,
  the operationIds of its endpoints; null without it).
The release is the version the e2e.test agents report (`e2e.test/v1.36.0` -> 1.36.0), or the caller's.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from auditcov.merge.openapi.catalogue import Endpoint
from auditcov.merge.openapi.eligibility import ConformanceTest
from auditcov.merge.reports.endpointcov import EndpointCoverage

_LEVEL_ORDER = {"stable": 0, "beta": 1, "alpha": 2}
#: Beta in APISnoop although their path says nothing (snoopdb's load_open_api).
_BETA_BY_NAME = frozenset({"getServiceAccountIssuerOpenIDConfiguration", "getServiceAccountIssuerOpenIDKeyset"})
_NOT_SORTED_FIRST = re.compile(r"[^0-9a-z]+")


def collation_key(text: str) -> tuple[str, str]:
    """Sort key for text as glibc's en_US.UTF-8 collation orders it (how APISnoop's PostgreSQL sorts names):
    letters and digits, case-insensitively, first; punctuation and spaces, then lower before upper case, only
    break ties."""
    return _NOT_SORTED_FIRST.sub("", text.lower()), text.swapcase()


def apisnoop_level(endpoint: Endpoint) -> str:
    """APISnoop's level of an endpoint (see the module docstring)."""
    if "alpha" in endpoint.path:
        return "alpha"
    if "beta" in endpoint.path or endpoint.operation_id in _BETA_BY_NAME:
        return "beta"
    return "stable"


def _tests_key(test: str | None) -> tuple[bool, tuple[str, str]]:
    return test is None, collation_key(test or "")


def apisnoop_report(
    coverage: EndpointCoverage,
    conformance: dict[str, ConformanceTest],
    release: str | None = None,
    previous: set[str] | None = None,
) -> dict:
    """The report as a JSON-ready dict (keys in APISnoop's order)."""
    release = release or _release_of(coverage)
    levels = {state.endpoint.operation_id: apisnoop_level(state.endpoint) for state in coverage.endpoints}
    current = sorted(
        (state for state in coverage.endpoints if "deprecated" not in state.endpoint.description.lower()),
        key=lambda state: (
            _LEVEL_ORDER[levels[state.endpoint.operation_id]],
            collation_key(state.endpoint.operation_id),
        ),
    )
    endpoints = []
    for state in current:
        endpoint = state.endpoint
        operation_id = endpoint.operation_id
        named = coverage.e2e_tests(operation_id)
        tests: set[str | None] = set(named)
        if operation_id in coverage.e2e_untitled:
            tests.add("")
        if operation_id in coverage.other_clients or not tests:
            tests.add(None)
        agents = named | coverage.direct_other.get(operation_id, set())
        endpoints.append(
            {
                "kind": endpoint.kind,
                "path": endpoint.path,
                "group": endpoint.group,
                "level": levels[operation_id],
                "tests": sorted(tests, key=_tests_key),
                "action": endpoint.action,
                "tested": bool(named) or operation_id in coverage.e2e_untitled,
                "release": release,
                "version": endpoint.version,
                "category": endpoint.category,
                "endpoint": operation_id,
                "conf_tested": any(coverage.tests.get(test, False) for test in agents),
                "description": endpoint.description or None,
            }
        )
    eligible = [
        state.endpoint.operation_id
        for state in current
        if levels[state.endpoint.operation_id] == "stable" and state.ineligible_reason is None and not state.pending
    ]
    tested = {op for op in eligible if any(test in conformance for test in coverage.e2e_tests(op))}
    new = None if previous is None else [op for op in eligible if op not in previous]
    names = sorted(coverage.e2e_test_names | ({""} if coverage.e2e_untitled_events else set()), key=collation_key)
    return {
        "spec": coverage.catalogue_source,
        "tests": [_test_row(name, conformance, release) for name in names],
        "release": release,
        "sources": [f"auditcov run {coverage.run}"],
        "endpoints": endpoints,
        "release_date": _date(coverage.first_us),
        "total endpoints": len(endpoints),
        "tested endpoints": sum(row["tested"] for row in endpoints),
        "new conformance eligible endpoints": None if new is None else len(new),
        "total conformance eligible endpoints": len(eligible),
        "tested conformance eligible endpoints": len(tested),
        "new tested conformance eligible endpoints": None if new is None else sum(op in tested for op in new),
    }


def _test_row(name: str, conformance: dict[str, ConformanceTest], release: str) -> dict:
    known = conformance.get(name)
    return {
        "file": known.file if known else None,
        "test": name,
        "release": release,
        "testname": known.testname if known else None,
        "conformance_test": known is not None,
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
