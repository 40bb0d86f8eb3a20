"""The JSON form of per-test code coverage (`auditcov cover report --format json`, and the `lines` of each
test in `auditcov report --format json`).

Lines are given per file as ascending `[first, last]` ranges: a kube-apiserver test covers thousands of lines,
mostly in runs. `FORMAT_VERSION` changes whenever a field changes meaning or goes away.
"""

from __future__ import annotations

from collections.abc import Iterable

from auditcov.merge.cover.pertest import PerTestCoverage
from auditcov.merge.events import format_time

FORMAT_VERSION = 1


def line_ranges(lines: Iterable[int]) -> list[list[int]]:
    """Line numbers as ascending `[first, last]` ranges of consecutive lines."""
    ranges: list[list[int]] = []
    for line in sorted(lines):
        if ranges and line == ranges[-1][1] + 1:
            ranges[-1][1] = line
        else:
            ranges.append([line, line])
    return ranges


def lines_of_test_json(result: PerTestCoverage) -> dict:
    """One test's code coverage as a JSON-ready dict."""
    lines = result.lines()
    window = result.window
    return {
        "test": result.test,
        "window": None
        if window is None
        else {"start": format_time(window.start_us), "end": format_time(window.end_us), "from": window.source},
        # Set-mode counters: a line counts only when this window was the first to run it in its process.
        "first_hit_only": result.first_hit_only,
        "shared_with": sorted(result.shared_with),
        # Some process's delta is left out (problems says why: e.g. a boundary snapshot is missing).
        "incomplete": result.incomplete,
        # Some delta is from a profile file that lags the boundaries by its flush interval (KUBE_COVERAGE_FILE).
        "coarse": result.coarse,
        "problems": result.problems,
        "lines_covered": sum(len(numbers) for numbers in lines.values()),
        "statements_run": result.statements_run(),
        "files": {file: line_ranges(lines[file]) for file in sorted(lines)},
    }


def coverage_report(run: str, results: list[PerTestCoverage]) -> dict:
    """Every test's code coverage in `run`, and the lines covered by any of them."""
    return {
        "format_version": FORMAT_VERSION,
        "run": run,
        "tests": [lines_of_test_json(result) for result in results],
        "totals": totals(results),
    }


def totals(results: list[PerTestCoverage]) -> dict[str, int]:
    """How many tests, and the files and lines that any of them covered."""
    union: dict[str, set[int]] = {}
    for result in results:
        for file, numbers in result.lines().items():
            union.setdefault(file, set()).update(numbers)
    return {
        "tests": len(results),
        "files": len(union),
        "lines_covered": sum(len(numbers) for numbers in union.values()),
    }


def add_code_to_endpoint_report(document: dict, results: list[PerTestCoverage]) -> None:
    """Put each test's code coverage beside its endpoints in an `auditcov report --format json` document.

    Every test entry gets `code` (as in `lines_of_test_json`, or None when no snapshot or context covers it); a
    test with code coverage but no endpoints (a Python unit test) gets an entry with no endpoints; the document
    gets `code_totals` (as `totals`).
    """
    code = {result.test: result for result in results}
    entries = document["tests"]
    for entry in entries:
        result = code.pop(entry["test"], None)
        entry["code"] = None if result is None else lines_of_test_json(result)
    for test, result in sorted(code.items()):
        entries.append({"test": test, "conformance": False, "endpoints": {}, "code": lines_of_test_json(result)})
    document["code_totals"] = totals(results)
