"""The code coverage of a whole run, or of one test against the whole run's code: what lcov and Cobertura render.

A run's profile is, for each process, its latest decoded snapshot (cumulative counters, every block of its
layout, run or not) summed over processes, plus the Python lines any test ran. A test's profile is the run's
blocks with count 0, plus the test's own delta (merge/cover/pertest.py): its lines are then shown against all
the code the run knows, not only the lines the test ran. coverage.py records only lines that ran, so Python
lines that no test ran are not in either profile.

Snapshots that could not be taken (`missing`) or are not decoded yet are skipped: the latest usable one counts.
"""

from __future__ import annotations

import sqlite_utils

from auditcov.merge.cover.model import Profile
from auditcov.merge.cover.pertest import per_test_coverage
from auditcov.merge.cover.pycoverage import add_python_lines
from auditcov.merge.cover.snapshots import Snapshot, load_counters, load_layout, load_python_lines
from auditcov.merge.errors import StoreError


def latest_snapshots(db: sqlite_utils.Database, run: str) -> list[Snapshot]:
    """Each process's latest snapshot that has counters, by process name."""
    rows = db.conn.execute(
        "SELECT id, run, process, MAX(at_us), mode, layout, source FROM cover_snapshots "
        "WHERE run = ? AND counters IS NOT NULL GROUP BY process ORDER BY process",
        (run,),
    )
    return [Snapshot(*row) for row in rows]


def run_profile(db: sqlite_utils.Database, run: str) -> Profile:
    """The run's code coverage (see the module docstring), in `count` mode unless every process ran in `set`."""
    snapshots = latest_snapshots(db, run)
    modes = {snapshot.mode for snapshot in snapshots}
    profile = Profile("set" if modes == {"set"} else "count")
    for snapshot in snapshots:
        layout = load_layout(db, snapshot.layout)
        counters = load_counters(db, snapshot)
        blocks = [layout.block(i) for i in range(len(counters))]
        profile.add_all(blocks, layout.columns[5], counters, where=f"process {snapshot.process!r}")
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
