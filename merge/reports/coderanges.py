"""Covered lines as ranges: the compact form every per-test code answer is built from (the query API, the JSON
and HTML reports, the diff), made straight from the blocks that ran, never from sets of line numbers.

A file's covered lines are a flat tuple of ascending, disjoint, non-adjacent inclusive ranges
`(first, last, first, last, ...)`: the lines `coverjson.line_ranges` gives, flattened. A kube-apiserver test
covers tens of thousands of lines in a few thousand runs, so the ranges are a fraction of the lines, and the
operations here (count, membership, union, difference) walk ranges, not lines.

A test's ranges (`result_ranges`) come from its `Profile`, or, when its code is one process's delta alone, straight
from the layout indexes of the blocks that ran (`layout_ranges`, in numpy: the same ranges, without building the
blocks).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import compress, pairwise

import numpy as np

from auditcov.merge.cover.encoding import Layout
from auditcov.merge.cover.model import Profile
from auditcov.merge.cover.pertest import PerTestCoverage

Ranges = tuple[int, ...]
_NO_SEGMENTS = np.empty(0, dtype=np.int64)


def result_ranges(result: PerTestCoverage) -> dict[str, Ranges]:
    """A test's covered lines per file as ranges, files in name order (`file_ranges` of its profile)."""
    if result.blocks is not None:
        return layout_ranges(result.blocks.layout, result.blocks.indexes)
    return file_ranges(result.profile)


def file_ranges(profile: Profile) -> dict[str, Ranges]:
    """Covered lines per file (`Profile.lines`' rule: a line is covered when a block on it ran) as ranges, files
    in name order: the blocks that ran, sorted, their line spans merged in one pass."""
    result: dict[str, Ranges] = {}
    file = None
    flat: list[int] = []
    counts = profile.counts
    for name, start, _, end, _ in sorted(compress(counts, counts.values())):  # the blocks that ran
        if end < start:
            continue  # no line (as range(start, end + 1) has none)
        if name != file:
            if flat:
                result[file] = tuple(flat)
            file, flat = name, [start, end]
        elif start <= flat[-1] + 1:
            if end > flat[-1]:
                flat[-1] = end
        else:
            flat += (start, end)
    if flat:
        result[file] = tuple(flat)
    return result


def layout_ranges(layout: Layout, indexes: np.ndarray) -> dict[str, Ranges]:
    """`file_ranges` of the blocks of `layout` at `indexes` (ascending), computed on the layout's columns."""
    files, bounds, flat = _layout_segments(layout, indexes)
    numbers, names, edges = flat.tolist(), layout.files, bounds.tolist()
    return {
        names[file]: tuple(numbers[low:high]) for file, (low, high) in zip(files.tolist(), pairwise(edges), strict=True)
    }


def _layout_segments(layout: Layout, indexes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`layout_ranges` as arrays: each file's layout file index (ascending), the bounds of its numbers (file k's
    are `flat[bounds[k]:bounds[k + 1]]`), and the flat ranges of all files.

    A layout's blocks are sorted as `file_ranges` sorts them (file names sorted too), so the blocks come in its
    order; a block starts a range when it opens a file or starts past the furthest line reached so far in its
    file (plus one: adjacent ranges merge).
    """
    file, start, end = (layout.column_array(number)[indexes].astype(np.int64) for number in (0, 1, 3))
    lined = end >= start  # a block with no line (as range(start, end + 1) has none) is skipped
    file, start, end = file[lined], start[lined], end[lined]
    if not len(file):
        return np.empty(0, dtype=np.int64), np.zeros(1, dtype=np.int64), np.empty(0, dtype=np.int64)
    # The furthest line reached so far in the block's file: files ascend, so a running maximum of (file, end).
    reach = np.maximum.accumulate((file << 32) | end) & 0xFFFFFFFF
    opens = np.ones(len(file), dtype=bool)
    opens[1:] = (file[1:] != file[:-1]) | (start[1:] > reach[:-1] + 1)
    firsts = np.flatnonzero(opens)
    flat = np.empty(2 * len(firsts), dtype=np.int64)
    flat[0::2] = start[firsts]
    flat[1::2] = reach[np.append(firsts[1:], len(file)) - 1]
    range_files = file[firsts]
    file_firsts = np.flatnonzero(np.append(True, range_files[1:] != range_files[:-1]))
    return range_files[file_firsts], 2 * np.append(file_firsts, len(firsts)), flat


@dataclass(slots=True)
class RunRanges:
    """Every test's covered lines of a run, interned: the run's distinct segments (a file with its covered lines
    there: 400 tests of a kube-apiserver run have 1.3 * 10^6, of which 1.8 * 10^5 differ) and, per test, the
    numbers of its own segments in its files' name order (an integer array)."""

    segments: list[tuple[str, Ranges]]
    tests: dict[str, np.ndarray]
    _lines: np.ndarray | None = None

    def of_test(self, test: str) -> dict[str, Ranges]:
        """`result_ranges` of a test of the run (no lines: empty)."""
        return dict(self.segments_of(test))

    def segments_of(self, test: str) -> list[tuple[str, Ranges]]:
        """A test's (file, ranges) segments, in its files' name order (no lines: none)."""
        return list(map(self.segments.__getitem__, self.tests.get(test, _NO_SEGMENTS).tolist()))

    def segment_lines(self) -> np.ndarray:
        """How many lines each segment holds (counted once per run, on first use)."""
        if self._lines is None:
            self._lines = np.array([line_count(ranges) for _, ranges in self.segments], dtype=np.int64)
        return self._lines

    def lines_of(self, test: str) -> int:
        """How many lines `test` covered (in all its files)."""
        return int(self.segment_lines()[self.tests.get(test, _NO_SEGMENTS)].sum())

    def first_seen(self, tests: list[str]) -> tuple[list[int], list[list[int]]]:
        """The segments of `tests` numbered in the order the tests meet them (each test's in its files' order), as
        a report interns them: the segments' numbers here in their new order, and each test's new numbers."""
        arrays = [self.tests.get(test, _NO_SEGMENTS) for test in tests]
        if not arrays:
            return [], []
        distinct, first, inverse = np.unique(np.concatenate(arrays), return_index=True, return_inverse=True)
        order = np.argsort(first, kind="stable")
        rank = np.empty(len(distinct), dtype=np.int64)
        rank[order] = np.arange(len(distinct))
        numbers = rank[inverse.reshape(-1)].tolist()
        edges = np.cumsum([0, *map(len, arrays)]).tolist()
        return distinct[order].tolist(), [numbers[low:high] for low, high in pairwise(edges)]


def run_ranges(results: Iterable[PerTestCoverage]) -> RunRanges:
    """The `RunRanges` of a run's per-test coverage. Tests whose code is one delta of a layout are interned
    together in numpy (segments of equal length compared as rows); the others, and the segments of several
    layouts, by content in a dict."""
    results = list(results)
    segments: list[tuple[str, Ranges]] = []
    tests: dict[str, np.ndarray] = dict.fromkeys(result.test for result in results)  # in the results' order
    by_layout: dict[int, list[PerTestCoverage]] = {}
    others = []
    for result in results:
        if result.blocks is None:
            others.append(result)
        else:
            by_layout.setdefault(id(result.blocks.layout), []).append(result)
    for group in by_layout.values():
        _intern_layout(group, segments, tests)
    if len(by_layout) > 1 or others:
        # Equal segments of different layouts, or of tests with a Profile: numbered by content.
        number: dict[tuple[str, Ranges], int] = {}
        renumber = np.array([number.setdefault(segment, len(number)) for segment in segments], dtype=np.int64)
        for test, numbers in tests.items():
            if numbers is not None:
                tests[test] = renumber[numbers]
        for result in others:
            pairs = result_ranges(result).items()
            tests[result.test] = np.array([number.setdefault(pair, len(number)) for pair in pairs], dtype=np.int64)
        segments[:] = list(number)
    return RunRanges(segments, tests)


def _intern_layout(group: list[PerTestCoverage], segments: list[tuple[str, Ranges]], tests: dict) -> None:
    """Number the segments of tests with deltas of one layout, appending the distinct ones to `segments`."""
    layout = group[0].blocks.layout
    parts = [_layout_segments(layout, result.blocks.indexes) for result in group]
    files = np.concatenate([part[0] for part in parts])
    flat = np.concatenate([part[2] for part in parts])
    offsets = np.cumsum([0, *(len(part[2]) for part in parts)])[:-1]
    starts = np.concatenate([part[1][:-1] + offset for part, offset in zip(parts, offsets, strict=True)])
    lengths = np.concatenate([np.diff(part[1]) for part in parts])
    numbers = np.empty(len(files), dtype=np.int64)
    for length in np.unique(lengths).tolist():
        which = np.flatnonzero(lengths == length)
        rows = np.empty((len(which), length + 1), dtype=np.int64)
        rows[:, 0] = files[which]
        rows[:, 1:] = flat[starts[which][:, None] + np.arange(length)]
        distinct, inverse = _distinct_rows(rows)
        numbers[which] = len(segments) + inverse
        segments.extend((layout.files[row[0]], tuple(row[1 : length + 1])) for row in distinct.tolist())
    edges = np.cumsum([0, *(len(part[0]) for part in parts)]).tolist()
    for result, (low, high) in zip(group, pairwise(edges), strict=True):
        tests[result.test] = numbers[low:high]


def _distinct_rows(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct rows of a 2-D array of integers in 0..2**32-1 (layout file indexes and lines), in ascending
    order, and the number of each row's among them (what `np.unique(rows, axis=0, return_inverse=True)` gives, by
    sorting each row as one string of big-endian uint32s, whose bytes order as the numbers do: several times
    faster, and a third faster than a lexsort of the columns)."""
    packed = np.ascontiguousarray(rows, dtype=">u4")
    keys = packed.view(np.dtype((np.void, packed.itemsize * packed.shape[1]))).ravel()
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    return rows[first], inverse.reshape(-1)


def union_size(segments: Iterable[tuple[str, Ranges]]) -> tuple[int, int]:
    """How many files (file, ranges) segments name, and how many lines of them any segment covers (`union` of each
    file's, counted; in numpy: a run has 10^5 distinct segments)."""
    files: dict[str, int] = {}
    numbers: list[int] = []
    spans: list[int] = []  # how many ranges each segment has
    file_of: list[int] = []
    for file, ranges in segments:
        file_of.append(files.setdefault(file, len(files)))
        spans.append(len(ranges) // 2)
        numbers += ranges
    if not numbers:
        return len(files), 0
    flat = np.array(numbers, dtype=np.int64)
    file = np.repeat(np.array(file_of, dtype=np.int64), spans)
    order = np.lexsort((flat[0::2], file))
    file, first, last = file[order], flat[0::2][order], flat[1::2][order]
    # As in `_layout_segments`: the furthest line reached so far in the file; a range past it (plus one) opens.
    reach = np.maximum.accumulate((file << 32) | last) & 0xFFFFFFFF
    opens = np.ones(len(file), dtype=bool)
    opens[1:] = (file[1:] != file[:-1]) | (first[1:] > reach[:-1] + 1)
    firsts = np.flatnonzero(opens)
    lasts = reach[np.append(firsts[1:], len(file)) - 1]
    return len(files), int((lasts - first[firsts] + 1).sum())


def line_count(ranges: Ranges) -> int:
    """How many lines the ranges hold."""
    return sum(ranges[1::2]) - sum(ranges[0::2]) + len(ranges) // 2


def contains(ranges: Ranges, line: int) -> bool:
    """Whether `line` is in one of the ranges."""
    at = bisect_right(ranges, line)
    return at % 2 == 1 or (at > 0 and ranges[at - 1] == line)


def pairs(ranges: Ranges) -> list[list[int]]:
    """The ranges as `[[first, last], ...]` (`coverjson.line_ranges`' form)."""
    return [[first, last] for first, last in zip(ranges[0::2], ranges[1::2], strict=True)]


def union(many: Iterable[Ranges]) -> Ranges:
    """The lines of any of the ranges given (identical ones, as tests share, are merged once)."""
    spans = sorted({span for ranges in set(many) for span in zip(ranges[0::2], ranges[1::2], strict=True)})
    flat: list[int] = []
    for first, last in spans:
        if flat and first <= flat[-1] + 1:
            if last > flat[-1]:
                flat[-1] = last
        else:
            flat += (first, last)
    return tuple(flat)


def difference(ranges: Ranges, removed: Ranges) -> Ranges:
    """The lines of `ranges` that are not in `removed`, as ranges (one sweep over both)."""
    flat: list[int] = []
    other = list(zip(removed[0::2], removed[1::2], strict=True))
    at = 0
    for first, last in zip(ranges[0::2], ranges[1::2], strict=True):
        while at < len(other) and other[at][1] < first:
            at += 1
        cursor, scan = first, at
        while scan < len(other) and other[scan][0] <= last:
            cut_first, cut_last = other[scan]
            if cut_first > cursor:
                flat += (cursor, cut_first - 1)
            cursor = max(cursor, cut_last + 1)
            scan += 1
        if cursor <= last:
            flat += (cursor, last)
    return tuple(flat)
