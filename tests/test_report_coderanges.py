"""Covered lines as ranges (merge/reports/coderanges.py) give exactly the answers line sets gave: against sets on
random blocks, and on real replayed runs with real per-test coverage (the JSON report's interned lines, the
query API's lines, the diff's lines gained and lost, the run's totals)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st
from report_support import replayed_store, run_events

from auditcov.merge.cover.encoding import decode_layout, encode_blocks
from auditcov.merge.cover.model import Block, Profile
from auditcov.merge.cover.pertest import LayoutCounts, PerTestCoverage, per_test_coverage
from auditcov.merge.reports import queries
from auditcov.merge.reports.coderanges import (
    contains,
    difference,
    file_ranges,
    layout_ranges,
    line_count,
    pairs,
    result_ranges,
    run_ranges,
    union,
    union_size,
)
from auditcov.merge.reports.coverjson import line_ranges, report_test_lines
from auditcov.merge.reports.diff import diff_runs
from auditcov.merge.store import open_store_readonly
from auditcov.sink.cli import cli

RUN, BASE = "head", "base"

spans = st.lists(st.tuples(st.integers(1, 60), st.integers(0, 8)), max_size=25)
line_sets = st.sets(st.integers(1, 80), max_size=40)


def _flat(lines: set[int]) -> tuple[int, ...]:
    return tuple(n for pair in line_ranges(lines) for n in pair)


@given(st.lists(st.tuples(st.sampled_from("abc"), st.integers(1, 60), st.integers(-1, 6), st.integers(0, 3)),
                max_size=40))  # fmt: skip
def test_file_ranges_are_the_profiles_lines(blocks):
    profile = Profile("count")
    for file, start, length, count in blocks:
        profile.add(Block(file, start, 1, start + length, 2), 1, count)
    ranges = file_ranges(profile)
    lines = {file: numbers for file, numbers in profile.lines().items() if numbers}
    assert list(ranges) == sorted(lines)
    assert {file: pairs(spans) for file, spans in ranges.items()} == {f: line_ranges(n) for f, n in lines.items()}


@given(line_sets, line_sets, st.integers(0, 90))
def test_range_operations_are_set_operations(one, other, line):
    a, b = _flat(one), _flat(other)
    assert line_count(a) == len(one)
    assert contains(a, line) == (line in one)
    assert difference(a, b) == _flat(one - other)
    assert union([a, b, a]) == _flat(one | other)
    assert union_size([("f", a), ("g", a), ("f", b)]) == (2, len(one | other) + len(one))


layout_blocks = st.lists(
    st.tuples(st.sampled_from(["a.go", "b.go", "c/d.go"]), st.integers(1, 40), st.integers(1, 3), st.integers(-1, 5)),
    min_size=1,
    max_size=60,
    unique_by=lambda block: block[:3],
)


@given(layout_blocks, st.data())
def test_layout_ranges_and_run_ranges_are_file_ranges_of_the_blocks(spec, data):
    """A layout's ranges of the blocks at some indexes are `file_ranges` of those blocks; a run's interned ranges
    give every test its own (fast and Profile forms mixed) and number segments as a dict interning does."""
    blocks = sorted({Block(file, start, col, start + length, 9) for file, start, col, length in spec})
    layout = decode_layout(encode_blocks(blocks, [1] * len(blocks))[1])
    results = []
    for number in range(data.draw(st.integers(1, 5))):
        chosen = sorted(data.draw(st.sets(st.integers(0, len(blocks) - 1))))
        profile = Profile("count")
        profile.add_all([blocks[i] for i in chosen], [1] * len(chosen), [1] * len(chosen))
        assert layout_ranges(layout, np.array(chosen, dtype=np.int64)) == file_ranges(profile)
        result = PerTestCoverage(f"t{number}", None)
        result.add_blocks(LayoutCounts(layout, np.array(chosen, dtype=np.int64), np.ones(len(chosen), np.uint32)))
        if data.draw(st.booleans()):  # the Profile form
            result.add_python({"x.py": {1, 2, 5}})
        assert list(result_ranges(result).items()) == list(file_ranges(result.profile).items())
        results.append(result)
    interned = run_ranges(results)
    order = [result.test for result in reversed(results)]
    numbers: dict[tuple, int] = {}
    expected = [[numbers.setdefault(pair, len(numbers)) for pair in result_ranges(r).items()] for r in results[::-1]]
    seen, numbered = interned.first_seen(order)
    assert [interned.segments[at] for at in seen] == list(numbers) and numbered == expected
    for result in results:
        assert interned.of_test(result.test) == result_ranges(result)
        assert interned.lines_of(result.test) == sum(map(line_count, result_ranges(result).values()))


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """Two runs of real replayed events with each test's real code coverage (coverage.py over auditcov's own
    decoder and matcher); the base run measured on half of each test's events, so lines differ."""
    events, own = run_events(24, RUN)
    base_own = {test: items[: max(1, len(items) // 2)] for test, items in list(own.items())[:18]}
    base_events = [item for items in base_own.values() for item in items]
    runs = {BASE: base_events, RUN: events}
    return replayed_store(tmp_path_factory.mktemp("ranges-store"), runs, {BASE: base_own, RUN: own})


def _old_lines(result) -> dict[str, list[list[int]]]:
    """A test's lines as the line-set code gave them."""
    lines = result.lines()
    return {file: line_ranges(lines[file]) for file in sorted(lines)}


def test_the_compact_forms_give_the_line_sets_answers_on_real_runs(store):
    db = open_store_readonly(store)
    try:
        results = {run: per_test_coverage(db, run) for run in (BASE, RUN)}
        data = {run: queries.load_run_data(db, run) for run in (BASE, RUN)}
        output = CliRunner().invoke(cli, ["report", "--db", str(store), "--run", RUN, "--format", "json"]).output
        report = orjson.loads(output)
    finally:
        db.conn.close()
    old = {run: {result.test: _old_lines(result) for result in results[run]} for run in (BASE, RUN)}
    assert sum(bool(lines) for lines in old[RUN].values()) >= 20

    # The JSON report: each test's interned lines, and the totals.
    assert report["format_version"] == 2
    by_test = {entry["test"]: entry for entry in report["tests"]}
    for test, lines in old[RUN].items():
        assert report_test_lines(report, by_test[test]) == lines, test
        assert by_test[test]["code"]["lines_covered"] == sum(b - a + 1 for spans in lines.values() for a, b in spans)
    union_lines: dict[str, set[int]] = {}
    for result in results[RUN]:
        for file, numbers in result.lines().items():
            union_lines.setdefault(file, set()).update(numbers)
    assert report["code_totals"] == {"tests": len(results[RUN]), "files": len(union_lines),
                                     "lines_covered": sum(map(len, union_lines.values()))}  # fmt: skip
    assert len(report["segments"]) < sum(len(lines) for lines in old[RUN].values())  # tests share segments

    # The query API: a test's lines, the tests of a file and of a line, the summary.
    head = data[RUN]
    for test, lines in old[RUN].items():
        assert queries.test_detail(head, test)["code"]["files"] == lines, test
    assert queries.summary(head)["code"]["lines_covered"] == sum(map(len, union_lines.values()))
    for file, numbers in union_lines.items():
        line = min(numbers)
        answer = queries.code(head, file, line)["files"][0]["tests"]
        assert [row["test"] for row in answer] == sorted(
            test for test, lines in old[RUN].items() if any(a <= line <= b for a, b in lines.get(file, ()))
        )
        for row in queries.code(head, file)["files"][0]["tests"]:
            assert row["ranges"] == old[RUN][row["test"]][file]

    # The diff: lines gained and lost per test, as set differences gave them.
    diff = diff_runs(data[BASE], head)
    changed = {entry["test"]: entry["lines"] for entry in diff["tests"]["changed"]}
    assert any(lines and lines["gained"] for lines in changed.values())
    for test in old[BASE].keys() & old[RUN].keys():
        before = {f: {n for a, b in s for n in range(a, b + 1)} for f, s in old[BASE][test].items()}
        after = {f: {n for a, b in s for n in range(a, b + 1)} for f, s in old[RUN][test].items()}
        files = {
            file: {"gained": line_ranges(after.get(file, set()) - before.get(file, set())),
                   "lost": line_ranges(before.get(file, set()) - after.get(file, set()))}
            for file in sorted(before.keys() | after.keys()) if before.get(file) != after.get(file)
        }  # fmt: skip
        if files:
            assert changed[test]["files"] == files, test
            assert changed[test]["gained"] == sum(b - a + 1 for c in files.values() for a, b in c["gained"])
            assert changed[test]["lost"] == sum(b - a + 1 for c in files.values() for a, b in c["lost"])
        else:
            assert test not in changed or not changed[test]["files"], test
