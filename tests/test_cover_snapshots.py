"""Snapshot storage: any profile round-trips through the store; snapshots of one binary share one layout row."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from auditcov.merge.cover.model import Block, CoverageError, Profile
from auditcov.merge.cover.snapshots import list_snapshots, load_counters, load_layout, save_snapshot
from auditcov.merge.store import open_store

blocks = st.builds(
    Block,
    st.sampled_from(["a.go", "pkg/b.go", "k8s.io/apiserver/pkg/server/c.go", "ü/é.go"]),
    st.integers(1, 10**6),
    st.integers(0, 500),
    st.integers(1, 10**6),
    st.integers(0, 500),
)
profiles = st.builds(
    lambda mode, entries: Profile(
        mode, {b: s for b, (s, _) in entries.items()}, {b: c for b, (_, c) in entries.items()}
    ),
    st.sampled_from(["set", "count", "atomic"]),
    st.dictionaries(blocks, st.tuples(st.integers(0, 1000), st.integers(0, 2**32 - 1)), min_size=1, max_size=200),
)


def _stored(db, snapshot) -> tuple[dict[Block, int], dict[Block, int]]:
    layout = load_layout(db, snapshot.layout)
    counters = load_counters(db, snapshot)
    indexes = range(len(counters))
    return {layout.block(i): layout.statements(i) for i in indexes}, {layout.block(i): counters[i] for i in indexes}


@settings(max_examples=60, deadline=None)
@given(profile=profiles)
def test_any_profile_round_trips(profile):
    with tempfile.TemporaryDirectory() as tmp:
        db = open_store(Path(tmp) / "store.db")
        save_snapshot(db, run="r", process="p", at_us=5, profile=profile, source="s", now_us=1)
        (snapshot,) = list_snapshots(db, "r")
        assert (snapshot.process, snapshot.at_us, snapshot.mode) == ("p", 5, profile.mode)
        assert _stored(db, snapshot) == (profile.statements, profile.counts)
        db.conn.close()


def test_snapshots_of_one_binary_share_a_layout_and_a_moment_is_replaced(tmp_path):
    db = open_store(tmp_path / "store.db")
    first = Profile("count", {Block("a.go", 1, 2, 3, 4): 2, Block("a.go", 3, 4, 5, 1): 1})
    first.counts = dict.fromkeys(first.statements, 0)
    later = Profile("count", dict(first.statements), {block: 7 for block in first.statements})
    save_snapshot(db, run="r", process="p", at_us=10, profile=first, source="one", now_us=1)
    save_snapshot(db, run="r", process="p", at_us=20, profile=later, source="two", now_us=1)
    save_snapshot(db, run="r", process="p", at_us=20, profile=later, source="two again", now_us=1)
    assert db.conn.execute("SELECT COUNT(*) FROM cover_layouts").fetchone() == (1,)
    assert [(s.at_us, s.source) for s in list_snapshots(db, "r")] == [(10, "one"), (20, "two again")]
    assert db.conn.execute("SELECT name FROM runs").fetchall() == [("r",)]


def test_an_empty_snapshot_is_refused(tmp_path):
    db = open_store(tmp_path / "store.db")
    with pytest.raises(CoverageError, match=r"empty\.out: the snapshot has no blocks"):
        save_snapshot(db, run="r", process="p", at_us=1, profile=Profile("set"), source="empty.out", now_us=1)
    assert db.conn.execute("SELECT COUNT(*) FROM cover_snapshots").fetchone() == (0,)
