"""Live snapshots in the store: raw agent bytes decoded later (or in memory by readers), missing snapshots that
make the tests they bound incomplete, and profile sources whose deltas are coarse.

The raw bytes are real: a `-covermode=atomic` build of tests/gocov_sample writes its meta-data and counters with
`runtime/coverage` (the bytes an agent's /v1/meta and /v1/counters serve); the oracle is the same files read
through `cover import` (merge/cover/covdata.py, itself checked against `go tool covdata`).
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import msgpack
import orjson
import pytest
from click.testing import CliRunner
from gotool import GO_ENV

from auditcov.merge.cover.importer import import_coverage
from auditcov.merge.cover.model import Block, CoverageError, Profile
from auditcov.merge.cover.pertest import per_test_coverage
from auditcov.merge.cover.snapshots import (
    decode_pending,
    list_snapshots,
    load_counters,
    load_layout,
    pending_snapshots,
    save_snapshot,
    snapshot_counters,
    write_meta,
    write_missing_snapshot,
    write_raw_snapshot,
)
from auditcov.merge.store import open_store, open_store_readonly, transaction
from auditcov.sink.cli import cli

pytestmark = pytest.mark.go

SAMPLE = Path(__file__).parent / "gocov_sample"
PATHS = [("test-alpha", "alpha"), ("test-beta", "beta 5"), ("test-gamma", "gamma hello")]
SECOND = 1_000_000
BASE_US = 1_700_000_000 * SECOND


@pytest.fixture(scope="module")
def snaps(tmp_path_factory) -> list[Path]:
    """Snapshot directories 0..3 of one atomic process: before the first path and after each."""
    tmp = tmp_path_factory.mktemp("live")
    binary = tmp / "covsample"
    subprocess.run(
        ["go", "build", "-cover", "-covermode=atomic", "-o", str(binary), "."],
        cwd=SAMPLE,
        env=GO_ENV,
        check=True,
        capture_output=True,
        timeout=300,
    )
    dirs = [tmp / f"snap-{i}" for i in range(len(PATHS) + 1)]
    commands = [f"snap {dirs[0]}"]
    for (_, path), snap in zip(PATHS, dirs[1:], strict=True):
        commands += [path, f"snap {snap}"]
    done = subprocess.run([str(binary)], input="\n".join(commands) + "\nquit\n", capture_output=True, text=True)
    assert done.stdout.split() == ["ok"] * len(commands), done.stderr
    return dirs


def _bytes(snap: Path, prefix: str) -> bytes:
    (path,) = snap.glob(f"{prefix}.*")
    return path.read_bytes()


def _markers(db, run: str) -> None:
    with transaction(db.conn):
        for i, (test, _) in enumerate(PATHS):
            db.conn.execute("INSERT INTO markers VALUES (?, ?, 'start', ?)", (run, test, BASE_US + i * SECOND))
            db.conn.execute("INSERT INTO markers VALUES (?, ?, 'end', ?)", (run, test, BASE_US + (i + 1) * SECOND))


def _store_raw(db, snaps: list[Path], *, meta: bool = True, skip: int | None = None) -> None:
    with transaction(db.conn):
        if meta:
            write_meta(db.conn, _bytes(snaps[0], "covmeta"), where="agent")
        db.conn.execute(
            "INSERT INTO cover_agents (run, process, kind, address, registered_us) VALUES "
            "('r', 'covsample', 'go', 'http://127.0.0.1:1', 0)"
        )
        for i, snap in enumerate(snaps):
            at_us = BASE_US + i * SECOND
            if i == skip:
                write_missing_snapshot(
                    db.conn, run="r", process="covsample", at_us=at_us, taken_us=at_us,
                    reason="timed out after 200 ms", source="agent",
                )  # fmt: skip
                continue
            write_raw_snapshot(
                db.conn, run="r", process="covsample", at_us=at_us, taken_us=at_us,
                raw=_bytes(snap, "covcounters"), source=f"agent snapshot {i}",
            )  # fmt: skip


def _imported(tmp_path: Path, snaps: list[Path]) -> dict[str, dict]:
    """The oracle: the same snapshots through `cover import`, per test."""
    db = open_store(tmp_path / "imported.db")
    for i, snap in enumerate(snaps):
        import_coverage(db, snap, run="r", process="covsample", at_us=BASE_US + i * SECOND, now_us=0)
    _markers(db, "r")
    return {result.test: result.profile.counts for result in per_test_coverage(db, "r")}


def test_raw_snapshots_decode_to_what_an_import_gives(snaps, tmp_path):
    db = open_store(tmp_path / "live.db")
    _store_raw(db, snaps)
    _markers(db, "r")
    expected = _imported(tmp_path, snaps)
    assert all(expected.values())
    # Not decoded yet: readers decode in memory, even on a read-only connection.
    assert len(pending_snapshots(db)) == 4
    reader = open_store_readonly(tmp_path / "live.db")
    assert {result.test: result.profile.counts for result in per_test_coverage(reader, "r")} == expected
    reader.conn.close()
    assert decode_pending(db) == 4
    assert decode_pending(db) == 0  # idempotent
    assert pending_snapshots(db) == []
    assert db.conn.execute("SELECT COUNT(*) FROM cover_snapshots WHERE raw IS NOT NULL").fetchone() == (0,)
    results = per_test_coverage(db, "r")
    assert {result.test: result.profile.counts for result in results} == expected
    assert not any(result.incomplete or result.coarse or result.problems for result in results)
    # The decoded layout is the imported one: the same blocks, so the same hash.
    imported = open_store(tmp_path / "imported.db")
    assert {s.layout for s in list_snapshots(db, "r")} == {s.layout for s in list_snapshots(imported, "r")}
    snapshot = list_snapshots(db, "r")[-1]
    assert load_counters(db, snapshot) == snapshot_counters(db, snapshot).counts
    assert len(load_layout(db, snapshot.layout).files) == 4


def test_a_raw_snapshot_waits_for_its_meta_data_and_bad_bytes_become_missing(snaps, tmp_path):
    db = open_store(tmp_path / "live.db")
    _store_raw(db, snaps, meta=False)
    _markers(db, "r")
    assert decode_pending(db) == 0 and len(pending_snapshots(db)) == 4
    result = per_test_coverage(db, "r")[0]
    assert result.incomplete and "meta-data" in result.problems[0] and "not in the store" in result.problems[0]
    with transaction(db.conn):
        write_meta(db.conn, _bytes(snaps[0], "covmeta"), where="agent")
        bad = bytearray(_bytes(snaps[1], "covcounters"))
        del bad[-20:]
        db.conn.execute("UPDATE cover_snapshots SET raw = ? WHERE at_us = ?", (bytes(bad), BASE_US + SECOND))
    assert decode_pending(db) == 3
    (missing,) = [s for s in list_snapshots(db, "r") if s.missing]
    assert missing.at_us == BASE_US + SECOND and missing.missing.startswith("undecodable: agent snapshot 1:")
    by_test = {result.test: result for result in per_test_coverage(db, "r")}
    assert by_test["test-alpha"].incomplete and by_test["test-beta"].incomplete
    assert not by_test["test-gamma"].incomplete and by_test["test-gamma"].profile.counts


def test_a_missing_boundary_makes_exactly_the_tests_it_bounds_incomplete(snaps, tmp_path):
    db_path = tmp_path / "live.db"
    db = open_store(db_path)
    _store_raw(db, snaps, skip=2)  # the boundary between beta and gamma
    _markers(db, "r")
    expected = _imported(tmp_path, snaps)
    by_test = {result.test: result for result in per_test_coverage(db, "r")}
    assert by_test["test-alpha"].profile.counts == expected["test-alpha"] and not by_test["test-alpha"].incomplete
    for test, edge in (("test-beta", "end"), ("test-gamma", "start")):
        result = by_test[test]
        # Never widened to the snapshots beyond: no delta at all, and the reason.
        assert result.incomplete and not result.profile.counts
        assert result.problems == [
            f"process 'covsample': the snapshot at the test's {edge} is missing: timed out after 200 ms"
        ]
    report = CliRunner().invoke(cli, ["cover", "report", "--db", str(db_path), "--format", "json"])
    assert report.exit_code == 0, report.output
    entries = {entry["test"]: entry for entry in orjson.loads(report.output)["tests"]}
    assert [test for test, entry in entries.items() if entry["incomplete"]] == ["test-beta", "test-gamma"]
    text = CliRunner().invoke(cli, ["cover", "report", "--db", str(db_path)], env={"COLUMNS": "250"})
    assert text.exit_code == 0 and text.output.count("INCOMPLETE") == 2 and "timed out after 200 ms" in text.output


def test_a_profile_source_gives_coarse_deltas(snaps, tmp_path):
    """A text profile stored raw (as the sink reads a KUBE_COVERAGE_FILE) decodes like its import; coarse."""
    texts = []
    for snap in snaps:
        out = tmp_path / f"{snap.name}.txt"
        subprocess.run(
            ["go", "tool", "covdata", "textfmt", "-i", str(snap), "-o", str(out)], env=GO_ENV, check=True, timeout=120
        )
        texts.append(out.read_bytes())
    db = open_store(tmp_path / "live.db")
    with transaction(db.conn):
        db.conn.execute(
            "INSERT INTO cover_agents (run, process, kind, address, registered_us) VALUES "
            "('r', 'covsample', 'profile', '/tmp/cover.out', 0)"
        )
        for i, text in enumerate(texts):
            write_raw_snapshot(
                db.conn, run="r", process="covsample", at_us=BASE_US + i * SECOND, taken_us=0, raw=text, source="file"
            )
    _markers(db, "r")
    expected = _imported(tmp_path, snaps)
    results = per_test_coverage(db, "r")
    assert {result.test: result.profile.counts for result in results} == expected
    assert all(result.coarse and not result.incomplete for result in results)
    with pytest.raises(CoverageError, match="neither a Go counter file nor a Go text profile"):
        write_raw_snapshot(db.conn, run="r", process="p", at_us=1, taken_us=1, raw=b"junk", source="x")


def test_a_layout_of_the_first_encoding_reads_the_same_and_keeps_its_hash(tmp_path):
    """Layouts were first stored with their columns as msgpack lists; the hash is still that form's."""
    blocks = [Block("a.go", 1, 2, 3, 4), Block("b/c.go", 7, 1, 9, 70000)]
    first = [["a.go", "b/c.go"], [[0, 1], [1, 7], [2, 1], [3, 9], [4, 70000], [2, 5]]]
    blob = msgpack.packb(first)
    old_hash = hashlib.sha256(blob).hexdigest()
    db = open_store(tmp_path / "old.db")
    with transaction(db.conn):
        db.conn.execute("INSERT INTO cover_layouts VALUES (?, 2, ?)", (old_hash, blob))
    layout = load_layout(db, old_hash)
    assert [layout.block(0), layout.block(1)] == blocks and list(layout.columns[5]) == [2, 5]
    profile = Profile("count", dict(zip(blocks, [2, 5], strict=True)), dict(zip(blocks, [1, 0], strict=True)))
    save_snapshot(db, run="r", process="p", at_us=1, profile=profile, source="s", now_us=0)
    assert [s.layout for s in list_snapshots(db, "r")] == [old_hash]
    fresh = open_store(tmp_path / "new.db")
    save_snapshot(fresh, run="r", process="p", at_us=1, profile=profile, source="s", now_us=0)
    ((stored_hash, stored),) = fresh.conn.execute("SELECT hash, blocks FROM cover_layouts").fetchall()
    assert stored_hash == old_hash and stored != blob
    assert load_layout(fresh, old_hash).blocks([1, 0]) == [blocks[1], blocks[0]]
