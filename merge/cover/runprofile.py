"""The code coverage of a whole run, or of one test against the whole run's code: what lcov and Cobertura render.

A run's profile is, for each process, its latest decoded snapshot (cumulative counters, every block of its
layout, run or not) summed over processes, plus the Python lines any test ran. A test's profile is the run's
blocks with count 0, plus the test's own delta (merge/cover/pertest.py): its lines are then shown against all
the code the run knows, not only the lines the test ran. coverage.py records only lines that ran, so Python
lines that no test ran are not in either profile.

Snapshots that could not be taken (`missing`) are skipped, the latest usable one counts; raw ones are decoded in
memory (`snapshot_counters`).
"""

from __future__ import annotations

import sqlite_utils

from auditcov.merge.cover.model import Block, Profile, gc_paused
from auditcov.merge.cover.pertest import per_test_coverage
from auditcov.merge.cover.pycoverage import add_python_lines
from auditcov.merge.cover.snapshots import Snapshot, list_snapshots, load_layout, load_python_lines, snapshot_counters
from auditcov.merge.errors import StoreError


def latest_snapshots(db: sqlite_utils.Database, run: str) -> list[Snapshot]:
    """Each process's latest snapshot with counters (stored, or raw and decoded on reading), by process name."""
    latest: dict[str, Snapshot] = {}
    for snapshot in list_snapshots(db, run):  # by process and time
        if snapshot.has_counters:
            latest[snapshot.process] = snapshot
    return list(latest.values())


def run_profile(db: sqlite_utils.Database, run: str) -> Profile:
    """The run's code coverage (see the module docstring), in `count` mode unless every process ran in `set`."""
    snapshots = latest_snapshots(db, run)
    counters = [snapshot_counters(db, snapshot) for snapshot in snapshots]
    profile = Profile("set" if counters and {c.mode for c in counters} == {"set"} else "count")
    with gc_paused():
        for snapshot, counted in zip(snapshots, counters, strict=True):
            layout = load_layout(db, counted.layout)
            files, starts, start_cols, ends, end_cols, statements = layout.columns
            blocks = list(map(Block, map(layout.files.__getitem__, files), starts, start_cols, ends, end_cols))
            profile.add_all(blocks, statements, counted.counts, where=f"process {snapshot.process!r}")
        for lines in load_python_lines(db, run).values():
            add_python_lines(profile, lines)
    return profile


def profile_of_test(db: sqlite_utils.Database, run: str, test: str) -> Profile:
    """`test`'s own coverage over every block the run knows (the others with count 0)."""
    results = per_test_coverage(db, run, test=test)
    if not results:
        raise StoreError(f"run {run!r} has no test {test!r} with code coverage (no window and no Python lines)")
    whole = run_profile(db, run)
    profile = Profile("count")
    profile.statements.update(whole.statements)
    profile.counts.update(dict.fromkeys(whole.statements, 0))
    for block, count in results[0].profile.counts.items():
        profile.add(block, results[0].profile.statements[block], count)
    return profile
