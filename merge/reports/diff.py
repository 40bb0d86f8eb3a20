"""The difference between two runs ("why did coverage drop", APISnoop #338): endpoints gained and lost, overall
and per test, and lines gained and lost per test where both runs have that test's code coverage.

Overall, an endpoint is gained when the head run tested it (directly or indirectly, `EndpointCoverage.hit`) and
the base run did not, and lost the other way round; `conformance` does the same for conformance-tested eligible
endpoints (APISnoop's measure). Per test, the endpoints compared are those `by_test` gives (every way of hitting
one); tests only in one run are listed as added or removed, with their endpoints. Lines are compared per file as
ranges (`coderanges.RunRanges`: the two runs' segments numbered alike, a test whose segment numbers are the same
in both is skipped at once, and of the others only the files whose segments differ are subtracted range by
range), and given as `[first, last]` ranges; a test without code coverage in one of the runs gets `lines: null`.
"""

from __future__ import annotations

import numpy as np
import sqlite_utils

from auditcov.merge.cover.model import gc_paused
from auditcov.merge.reports.coderanges import Ranges, RunRanges, difference, line_count, pairs
from auditcov.merge.reports.queries import RunData, load_run_data

FORMAT_VERSION = 1


def run_diff(db: sqlite_utils.Database, base: str, head: str) -> dict:
    """The diff of runs `base` and `head` of one store, read whole (see `diff_runs`)."""
    return diff_runs(load_run_data(db, base), load_run_data(db, head))


def _changes(before: set[str], after: set[str]) -> dict[str, list[str]]:
    return {"gained": sorted(after - before), "lost": sorted(before - after)}


def diff_runs(base: RunData, head: RunData) -> dict:
    """The diff as a JSON-ready dict (see the module docstring)."""
    # Beside two models (millions of objects), each collection the answer's lists trigger would walk them all:
    # with the collector on, that was half of a 2.5 s diff at 400 tests.
    with gc_paused():
        return _diff_runs(base, head)


def _diff_runs(base: RunData, head: RunData) -> dict:
    tested = {data.run: _tested(data) for data in (base, head)}
    conformance = {data.run: _conformance_tested(data) for data in (base, head)}
    base_tests, head_tests = base.test_names(), head.test_names()
    segments, head_numbers = _common_segments(base.ranges, head.ranges)
    changed = []
    for test in sorted(base_tests & head_tests):
        endpoints = _changes(set(base.by_test.get(test, ())), set(head.by_test.get(test, ())))
        lines = None
        if test in base.code and test in head.code:
            before, after = base.ranges.tests.get(test, _NONE), head_numbers.get(test, _NONE)
            lines = _line_changes(segments, before, after)
        if endpoints["gained"] or endpoints["lost"] or (lines is not None and (lines["gained"] or lines["lost"])):
            changed.append({"test": test, "endpoints": endpoints, "lines": lines})
    return {
        "format_version": FORMAT_VERSION,
        "base": base.run,
        "head": head.run,
        "endpoints": _changes(tested[base.run], tested[head.run]),
        "conformance": _changes(conformance[base.run], conformance[head.run]),
        "totals": {
            "base": {"tested": len(tested[base.run]), "conformance_tested_eligible": len(conformance[base.run])},
            "head": {"tested": len(tested[head.run]), "conformance_tested_eligible": len(conformance[head.run])},
        },
        "tests": {
            "added": [
                {"test": test, "endpoints": sorted(head.by_test.get(test, ()))}
                for test in sorted(head_tests - base_tests)
            ],
            "removed": [
                {"test": test, "endpoints": sorted(base.by_test.get(test, ()))}
                for test in sorted(base_tests - head_tests)
            ],
            "changed": changed,
            "unchanged": len(base_tests & head_tests) - len(changed),
        },
    }


def _tested(data: RunData) -> set[str]:
    coverage = data.coverage
    return {state.endpoint.operation_id for state in coverage.endpoints if coverage.hit(state.endpoint.operation_id)}


def _conformance_tested(data: RunData) -> set[str]:
    coverage = data.coverage
    return {
        state.endpoint.operation_id
        for state in coverage.endpoints
        if state.eligible and coverage.conformance_tested(state.endpoint.operation_id)
    }


def _common_segments(base: RunRanges, head: RunRanges) -> tuple[list[tuple[str, Ranges]], dict[str, np.ndarray]]:
    """The segments of both runs numbered alike (base's numbers, then head's other segments), and each head test's
    segment numbers in that numbering: a test's lines changed exactly when its numbers did."""
    number = {segment: at for at, segment in enumerate(base.segments)}
    renumber = np.array([number.setdefault(segment, len(number)) for segment in head.segments], dtype=np.int64)
    return list(number), {test: renumber[numbers] for test, numbers in head.tests.items()}


_NONE = np.empty(0, dtype=np.int64)


def _line_changes(segments: list[tuple[str, Ranges]], before: np.ndarray, after: np.ndarray) -> dict:
    """Lines gained and lost by one test, from its segment numbers (in `segments`) in both runs (one segment per
    file in each run, in file name order: equal numbers, equal lines)."""
    files = {}
    gained = lost = 0
    if np.array_equal(before, after):
        return {"gained": gained, "lost": lost, "files": files}
    # The files whose ranges differ: those of the segments in one run only.
    changed_before = dict(map(segments.__getitem__, np.setdiff1d(before, after).tolist()))
    changed_after = dict(map(segments.__getitem__, np.setdiff1d(after, before).tolist()))
    for file in sorted(changed_before.keys() | changed_after.keys()):
        old, new = changed_before.get(file, ()), changed_after.get(file, ())
        more, fewer = difference(new, old), difference(old, new)
        gained += line_count(more)
        lost += line_count(fewer)
        files[file] = {"gained": pairs(more), "lost": pairs(fewer)}
    return {"gained": gained, "lost": lost, "files": files}
