"""merge/cover/encoding.py, the bytes of stored counters and layouts: the packed encodings round-trip, the older
encodings read the same, and a test's delta found by comparing packed bytes is the one the element-by-element
comparison of decoded lists gives; a store holding both counter encodings gives each test the same delta."""

from __future__ import annotations

import hashlib
import operator
import shutil
from array import array
from itertools import compress

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from auditcov.merge.cover.encoding import (
    Counters,
    changed_counts,
    decode_layout,
    encode_blocks,
    encode_layout,
    pack_counters,
    unpack_counters,
)
from auditcov.merge.cover.model import Block, CoverageError, Profile
from auditcov.merge.cover.pertest import per_test_coverage
from auditcov.merge.cover.snapshots import list_snapshots, load_counters, save_snapshot, snapshot_counters
from auditcov.merge.store import open_store, transaction

counts = st.lists(st.one_of(st.integers(0, 300), st.integers(0, 2**32 - 1), st.integers(0, 2**64 - 1)), max_size=700)


def _counters(values: list[int]) -> Counters:
    return unpack_counters(pack_counters(values), mode="count", layout="layout")


@settings(max_examples=200, deadline=None)
@given(values=counts)
def test_any_counters_round_trip_in_the_narrowest_array(values):
    blob = pack_counters(values)
    assert blob[:1] == (b"Q" if values and max(values) >= 2**32 else b"I")
    assert _counters(values).counts == values
    # The first encoding, a msgpack list, reads the same.
    assert unpack_counters(msgpack.packb(values), mode="count", layout="layout").counts == values


def test_counters_beyond_uint64_or_negative_are_refused():
    for bad in ([2**64], [-1]):
        with pytest.raises(CoverageError, match="a counter is negative or beyond 2\\*\\*64 - 1"):
            pack_counters(bad)


pairs = st.integers(0, 1300).flatmap(
    lambda size: st.tuples(
        st.lists(st.integers(0, 5), min_size=size, max_size=size),
        st.lists(st.integers(0, 5), min_size=size, max_size=size),
        st.sampled_from([None, 0, 2**33]),  # no big count, or one in `before`'s or `after`'s first block
    )
)


@settings(max_examples=200, deadline=None)
@given(pair=pairs)
def test_changed_counts_are_those_an_element_by_element_comparison_finds(pair):
    before, after, big = pair
    if big is not None and before:
        (before if big else after)[0] = big or 2**40
    indexes = list(compress(range(len(after)), map(operator.ne, before, after)))
    expected = (indexes, [before[i] for i in indexes], [after[i] for i in indexes])
    assert tuple(found.tolist() for found in changed_counts(_counters(before), _counters(after))) == expected


def test_counters_of_different_lengths_are_not_compared():
    with pytest.raises(CoverageError, match="counter lists of 3 and 2 blocks cannot be compared"):
        changed_counts(_counters([1, 2, 3]), _counters([1, 2]))


BLOCKS = sorted(Block(f"pkg{i % 7}/f{i % 13}.go", i, i % 9, i + 2, 40) for i in range(3000))  # layout order


def _profile(counts: list[int]) -> Profile:
    return Profile("atomic", dict.fromkeys(BLOCKS, 2), dict(zip(BLOCKS, counts, strict=True)))


def test_deltas_from_packed_and_from_msgpack_counters_are_equal(tmp_path):
    """Stores of this session hold msgpack counters: read beside packed ones, each test's result is the same."""
    grown = [[0] * len(BLOCKS)]
    for step in range(1, 6):
        grown.append([count + (i % (step + 2) == 0) * step for i, count in enumerate(grown[-1])])
    grown[4][7] = 2**35  # a count beyond uint32: that snapshot's array is uint64
    grown[5][7] = 2**35 + 9
    grown.append([0] * len(BLOCKS))  # the process restarted: counters went down
    packed = open_store(tmp_path / "packed.db")
    for step, values in enumerate(grown):
        profile = _profile(values)
        save_snapshot(packed, run="r", process="p", at_us=step * 10, profile=profile, source=f"s{step}", now_us=0)
    with transaction(packed.conn):
        for step in range(len(grown) - 1):
            packed.conn.execute("INSERT INTO markers VALUES ('r', ?, 'start', ?)", (f"t{step}", step * 10))
            packed.conn.execute("INSERT INTO markers VALUES ('r', ?, 'end', ?)", (f"t{step}", step * 10 + 10))
    packed.conn.close()
    shutil.copy(tmp_path / "packed.db", tmp_path / "old.db")
    old = open_store(tmp_path / "old.db")
    with transaction(old.conn):
        for snapshot in list_snapshots(old, "r")[::2]:  # every other one as first written: both kinds side by side
            blob = msgpack.packb(load_counters(old, snapshot))
            old.conn.execute("UPDATE cover_snapshots SET counters = ? WHERE id = ?", (blob, snapshot.id))
    stored = [row[0][:1] for row in old.conn.execute("SELECT counters FROM cover_snapshots ORDER BY at_us")]
    assert stored == [b"\xdc", b"I", b"\xdc", b"I", b"\xdc", b"Q", b"\xdc"]  # msgpack array16, packed uint32/64
    for snapshot, values in zip(list_snapshots(old, "r"), grown, strict=True):
        assert load_counters(old, snapshot) == snapshot_counters(old, snapshot).counts == values
    results = {name: per_test_coverage(open_store(tmp_path / name), "r") for name in ("packed.db", "old.db")}
    summary = {
        name: [(r.test, r.profile.counts, r.profile.statements, r.problems) for r in found]
        for name, found in results.items()
    }
    assert summary["packed.db"] == summary["old.db"]
    by_test = {r.test: r for r in results["packed.db"]}
    for step in range(1, 5):
        expected = {
            block: after - before
            for block, before, after in zip(BLOCKS, grown[step], grown[step + 1], strict=True)
            if after != before
        }
        assert by_test[f"t{step}"].profile.counts == expected and not by_test[f"t{step}"].problems
    assert by_test["t5"].problems == [
        "process 'p': counters went down between s5 and s6 (the process restarted or cleared its counters)"
    ]


blocks_with_statements = st.dictionaries(
    st.builds(
        Block,
        st.sampled_from(["a.go", "pkg/b.go", "pkg/sub/c.go"]),
        st.integers(0, 2**32 - 1),
        st.integers(0, 2**32 - 1),
        st.integers(0, 2**32 - 1),
        st.integers(0, 2**32 - 1),
    ),
    st.integers(0, 2**32 - 1),
    min_size=1,
    max_size=300,
)


@settings(max_examples=200, deadline=None)
@given(statements=blocks_with_statements)
def test_any_layout_round_trips_in_sorted_order(statements):
    profile = Profile("count", statements, dict.fromkeys(statements, 0))
    blocks, layout_hash, blob = encode_layout(profile)
    assert blocks == sorted(statements)
    assert (layout_hash, blob) == encode_blocks(blocks, [statements[block] for block in blocks])
    layout = decode_layout(blob)
    assert [layout.block(i) for i in range(len(blocks))] == layout.blocks(list(range(len(blocks)))) == blocks
    assert [layout.statements(i) for i in range(len(blocks))] == [statements[block] for block in blocks]


def test_a_line_beyond_uint32_is_refused_in_a_layout():
    with pytest.raises(CoverageError, match="a block's line, column or statement count is beyond 4294967295"):
        encode_blocks([Block("a.go", 2**32, 1, 2**32, 2)], [1])


def _first_form(blocks: list[Block], statements: list[int]) -> tuple[list[str], list[list[int]]]:
    """A layout's files and columns as lists of integers, the form its hash is taken of."""
    files = sorted({block.file for block in blocks})
    columns = [
        [files.index(block.file) for block in blocks],
        *([block[field] for block in blocks] for field in range(1, 5)),
        statements,
    ]
    return files, columns


def test_layouts_of_the_earlier_encodings_read_the_same_and_keep_their_hash():
    """Layouts were stored first as msgpack [files, columns] with the columns as lists of integers, then for a
    while with the columns as uncompressed uint32 arrays."""
    statements = [i % 5 for i in range(len(BLOCKS))]
    blocks = sorted(BLOCKS)
    files, columns = _first_form(blocks, statements)
    old_hash = hashlib.sha256(msgpack.packb([files, columns])).hexdigest()
    as_lists = msgpack.packb([files, columns])
    as_arrays = msgpack.packb([files, [array("I", column).tobytes() for column in columns]])  # a little-endian's
    layout_hash, blob = encode_blocks(blocks, statements)
    assert layout_hash == old_hash and len(blob) < len(as_arrays) / 4
    for stored in (as_lists, as_arrays, blob):
        layout = decode_layout(stored)
        assert layout.blocks(list(range(len(blocks)))) == blocks and list(layout.columns[5]) == statements
