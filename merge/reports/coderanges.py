"""Covered lines as ranges: the compact form every per-test code answer is built from (the query API, the JSON
and HTML reports, the diff), made straight from the blocks that ran, never from sets of line numbers.

A file's covered lines are a flat tuple of ascending, disjoint, non-adjacent inclusive ranges
`(first, last, first, last, ...)`: the lines `coverjson.line_ranges` gives, flattened. A kube-apiserver test
covers tens of thousands of lines in a few thousand runs, so the ranges are a fraction of the lines, and the
operations here (count, membership, union, difference) walk ranges, not lines.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable
from itertools import compress

from auditcov.merge.cover.model import Profile

Ranges = tuple[int, ...]


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
