"""Covered lines as ranges: the compact form every per-test code answer is built from (the query API, the JSON
and HTML reports, the diff), made straight from the blocks that ran, never from sets of line numbers.

A file's covered lines are a flat tuple of ascending, disjoint, non-adjacent inclusive ranges
`(first, last, first, last, ...)`: the lines `coverjson.line_ranges` gives, flattened. A kube-apiserver test
covers tens of thousands of lines in a few thousand runs, so the ranges are a fraction of the lines, and the
operations here (count, membership, union, difference) walk ranges, not lines.

A test's ranges (`test_ranges`) come from its `Profile`, or, when its code is one process's delta alone, straight
from the layout indexes of the blocks that ran (`layout_ranges`, in numpy: the same ranges, without building the
blocks).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable
from itertools import compress

import numpy as np

from auditcov.merge.cover.encoding import Layout
from auditcov.merge.cover.model import Profile
from auditcov.merge.cover.pertest import PerTestCoverage

Ranges = tuple[int, ...]


def test_ranges(result: PerTestCoverage) -> dict[str, Ranges]:
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
    """`file_ranges` of the blocks of `layout` at `indexes` (ascending), computed on the layout's columns.

    A layout's blocks are sorted as `file_ranges` sorts them (file names sorted too), so the blocks come in its
    order; a block starts a range when it opens a file or starts past the furthest line reached so far in its
    file (plus one: adjacent ranges merge).
    """
    file, start, end = (layout.column_array(number)[indexes].astype(np.int64) for number in (0, 1, 3))
    lined = end >= start  # a block with no line (as range(start, end + 1) has none) is skipped
    file, start, end = file[lined], start[lined], end[lined]
    if not len(file):
        return {}
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
    bounds = (2 * np.append(file_firsts, len(firsts))).tolist()
    numbers, names = flat.tolist(), layout.files
    return {
        names[number]: tuple(numbers[low:high])
        for number, low, high in zip(range_files[file_firsts].tolist(), bounds[:-1], bounds[1:], strict=True)
    }


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
