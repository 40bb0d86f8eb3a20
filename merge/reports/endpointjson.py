"""auditcov's own JSON form of endpoint coverage (`auditcov report --format json`): per test, every endpoint it
hit and how (direct, namespace, window), then per endpoint its tests, and what matched no endpoint.

Hits (`endpointcov.Hits.to_json`: count, successful, first and last time, counts by status class) are given per
endpoint (`hits`: every event of the run that hit it) and per test (`hits`: endpoint -> how -> hits, failures
included); `successful_only` says whether the tested sets count only successful hits.

`FORMAT_VERSION` changes whenever a field changes meaning or goes away. Version 2: a test's code lines are
interned (`coverjson.add_code_to_endpoint_report`: the document's `files` and `segments`, a test's
`code.segments`) where version 1 gave each test's `code.files` as file -> `[[first, last], ...]`; the file is
written without indentation (400 tests of a kube-apiserver run: 233 MiB in version 1).
"""

from __future__ import annotations

from auditcov.merge.reports.endpointcov import EndpointCoverage

FORMAT_VERSION = 2


def endpoint_report(coverage: EndpointCoverage) -> dict:
    """The report as a JSON-ready dict."""
    by_test = coverage.by_test()
    current = [state for state in coverage.endpoints if not state.endpoint.deprecated]
    endpoints = []
    for state in coverage.endpoints:
        endpoint = state.endpoint
        operation_id = endpoint.operation_id
        indirect = coverage.indirect.get(operation_id, {})
        endpoints.append(
            {
                **endpoint.to_json(),
                "eligible": state.eligible,
                "pending": state.pending,
                "ineligible_reason": state.ineligible_reason,
                "e2e_tests": sorted(coverage.e2e_tests(operation_id)),
                "other_direct_tests": sorted(coverage.direct_other.get(operation_id, ())),
                "indirect_tests": {test: sorted(how) for test, how in sorted(indirect.items())},
                "conformance_tested": coverage.conformance_tested(operation_id),
                "hits": coverage.hits_of(operation_id).to_json(),
            }
        )
    return {
        "format_version": FORMAT_VERSION,
        "run": coverage.run,
        "catalogue": coverage.catalogue_source,
        "successful_only": coverage.successful_only,
        "tests": [
            {
                "test": test,
                "conformance": coverage.tests.get(test, False),
                "endpoints": {op: sorted(how) for op, how in sorted(hits.items())},
                "hits": {
                    op: {how: counted.to_json() for how, counted in sorted(ways.items())}
                    for op, ways in sorted(coverage.test_hits(test).items())
                },
            }
            for test, hits in sorted(by_test.items())
        ],
        "endpoints": endpoints,
        "unmatched": dict(coverage.unmatched.most_common()),
        "totals": {
            "endpoints": len(current),
            "deprecated": len(coverage.endpoints) - len(current),
            "tested_directly": sum(coverage.hit_directly(s.endpoint.operation_id) for s in current),
            "tested_including_indirect": sum(coverage.hit(s.endpoint.operation_id) for s in current),
            "eligible": sum(s.eligible for s in current),
            "eligible_conformance_tested": sum(
                s.eligible and coverage.conformance_tested(s.endpoint.operation_id) for s in current
            ),
            "pending": sum(s.pending for s in current),
            "tests": len(coverage.tests),
            "unmatched_events": sum(coverage.unmatched.values()),
            "unmapped_events": coverage.unmapped,
        },
    }
