"""The JUnit XML form of conformance coverage (`auditcov report --format junit`, `junit_*.xml` in a bundle): a
conformance gate CI systems already display (prow's spyglass, Jenkins, GitLab).

One `testcase` per conformance-eligible endpoint (classname: its level and category, name: its operationId):
passed when a conformance test hit it (the tests are listed in `system-out`), a `failure` when none did, and
`skipped` when none did but it is pending (the pending list gives those a grace period before they fail the
conformance gate). `untested_eligible` is what `--gate` fails on: the failures.
"""

from __future__ import annotations

from xml.etree import ElementTree

from auditcov.merge.reports.endpointcov import EndpointCoverage, EndpointState


def untested_eligible(coverage: EndpointCoverage) -> list[EndpointState]:
    """Eligible, not deprecated, not pending endpoints that no conformance test hit: the gate's failures."""
    return [
        state
        for state in coverage.endpoints
        if state.eligible
        and not state.pending
        and not state.endpoint.deprecated
        and not coverage.conformance_tested(state.endpoint.operation_id)
    ]


def junit_report(coverage: EndpointCoverage) -> str:
    """The XML document: one suite of the run's eligible endpoints."""
    eligible = [state for state in coverage.endpoints if state.eligible and not state.endpoint.deprecated]
    failures = {state.endpoint.operation_id for state in untested_eligible(coverage)}
    skipped = sum(
        1 for state in eligible if state.pending and not coverage.conformance_tested(state.endpoint.operation_id)
    )
    counts = {"tests": str(len(eligible)), "failures": str(len(failures)), "errors": "0", "skipped": str(skipped)}
    root = ElementTree.Element("testsuites", {"name": "auditcov", **counts})
    suite = ElementTree.SubElement(
        root, "testsuite", {"name": f"conformance-eligible endpoints, run {coverage.run}", **counts, "time": "0"}
    )
    only = " successful" if coverage.successful_only else ""
    for state in eligible:
        endpoint = state.endpoint
        operation_id = endpoint.operation_id
        case = ElementTree.SubElement(
            suite,
            "testcase",
            {"classname": f"{endpoint.level}.{endpoint.category}", "name": operation_id, "time": "0"},
        )
        tests = sorted(test for test in coverage.e2e_tests(operation_id) if coverage.tests.get(test, False))
        where = f"{endpoint.method} {endpoint.path}"
        if tests:
            ElementTree.SubElement(case, "system-out").text = "\n".join(tests)
        elif state.pending:
            ElementTree.SubElement(case, "skipped", {"message": f"pending: no conformance test{only} hit {where}"})
        else:
            ElementTree.SubElement(
                case, "failure", {"type": "untested", "message": f"no conformance test{only} hit {where}"}
            )
    ElementTree.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ElementTree.tostring(root, encoding="unicode") + "\n"
