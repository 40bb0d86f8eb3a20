"""The JSON form of per-test code coverage (`auditcov cover report --format json`, and the `lines` of each
test in `auditcov report --format json`).

Lines are given per file as ascending `[first, last]` ranges: a kube-apiserver test covers thousands of lines,
mostly in runs. `FORMAT_VERSION` changes whenever a field changes meaning or goes away.
"""

from __future__ import annotations

from collections.abc import Iterable

from auditcov.merge.cover.pertest import PerTestCoverage
from auditcov.merge.events import format_time
from auditcov.merge.reports.coderanges import Ranges, line_count, pairs, result_ranges, run_ranges, union_size

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


def lines_of_test_json(result: PerTestCoverage, ranges: dict[str, Ranges] | None = None) -> dict:
    """One test's code coverage as a JSON-ready dict; `ranges` is its `coderanges.result_ranges` when the caller
    has them already."""
    if ranges is None:
        ranges = result_ranges(result)
    lines_covered = sum(map(line_count, ranges.values()))
    return {**code_facts(result, lines_covered), "files": {file: pairs(spans) for file, spans in ranges.items()}}


def code_facts(result: PerTestCoverage, lines_covered: int) -> dict:
    """What `lines_of_test_json` says of a test but its lines: window, flags, problems, counts."""
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
        "lines_covered": lines_covered,
        "statements_run": result.statements_run(),
    }


def coverage_report(run: str, results: list[PerTestCoverage]) -> dict:
    """Every test's code coverage in `run`, and the lines covered by any of them."""
    return {
        "format_version": FORMAT_VERSION,
        "run": run,
        "tests": [lines_of_test_json(result) for result in results],
        "totals": totals(results),
    }


def totals(results: list[PerTestCoverage], segments: Iterable[tuple[str, Ranges]] | None = None) -> dict[str, int]:
    """How many tests, and the files and lines that any of them covered (`segments`: the (file, ranges) pairs of
    the results' `coderanges.result_ranges`, when the caller has them; repeats need not be given)."""
    if segments is None:
        segments = {pair for result in results for pair in result_ranges(result).items()}
    files, lines = union_size(segments)
    return {"tests": len(results), "files": files, "lines_covered": lines}


def add_code_to_endpoint_report(document: dict, results: list[PerTestCoverage]) -> None:
    """Put each test's code coverage beside its endpoints in an `auditcov report --format json` document.

    Every test entry gets `code` (as in `lines_of_test_json` but for its lines, or None when no snapshot or
    context covers it); a test with code coverage but no endpoints (a Python unit test) gets an entry with no
    endpoints; the document gets `code_totals` (as `totals`). Lines are interned, as 400 tests of a
    kube-apiserver run share most of theirs (the code every test runs): the document's `files` lists the file
    names, `segments` the distinct (file, covered lines) pairs of all tests, each `[file index, first, last,
    first, last, ...]` (ascending ranges), and a test's `code.segments` the indexes of its own (in its files' name
    order). A test's lines in file F are the ranges of its segment whose file is F.
    """
    code = {result.test: result for result in results}
    entries = document["tests"]
    with_code = [entry for entry in entries if entry["test"] in code]
    for entry in entries:
        entry["code"] = None
    for test in sorted(code.keys() - {entry["test"] for entry in with_code}):
        entry = {"test": test, "conformance": False, "endpoints": {}, "code": None}
        entries.append(entry)
        with_code.append(entry)
    # The run's segments, numbered in the order the entries meet them.
    ranges = run_ranges(results)
    order, numbered = ranges.first_seen([entry["test"] for entry in with_code])
    used = list(map(ranges.segments.__getitem__, order))
    files = sorted({file for file, _ in used})
    file_index = {file: number for number, file in enumerate(files)}
    for entry, numbers in zip(with_code, numbered, strict=True):
        test = entry["test"]
        entry["code"] = {**code_facts(code[test], ranges.lines_of(test)), "segments": numbers}
    document["files"] = files
    document["segments"] = [[file_index[file], *spans] for file, spans in used]
    document["code_totals"] = totals(results, used)


def report_test_lines(document: dict, entry: dict) -> dict[str, list[list[int]]]:
    """A test's lines in an `auditcov report --format json` document (`entry`: one of its `tests`), as
    `lines_of_test_json` gives them: file -> `[[first, last], ...]`."""
    files, segments = document["files"], document["segments"]
    found = {}
    for number in (entry.get("code") or {}).get("segments", ()):
        file, *flat = segments[number]
        found[files[file]] = pairs(flat)
    return found
