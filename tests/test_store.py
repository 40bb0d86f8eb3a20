"""The store: its schema version is checked on open (an older store is upgraded), and `transaction` commits or
rolls back as a whole."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from auditcov.merge.cover.snapshots import list_snapshots, load_counters
from auditcov.merge.errors import StoreError
from auditcov.merge.eventfiles import AuditFile
from auditcov.merge.stats import store_stats
from auditcov.merge.store import SCHEMA_VERSION, open_store, open_store_readonly, transaction
from auditcov.sink.importer import import_files
from auditcov.sink.ingest import Ingestor

FIXTURES = Path(__file__).parent / "fixtures"


def test_a_store_of_another_schema_version_is_refused(tmp_path):
    path = tmp_path / "store.db"
    db = open_store(path)
    db.conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    db.conn.close()
    expected = rf"store has schema version {SCHEMA_VERSION + 1}; this auditcov reads {SCHEMA_VERSION}"
    with pytest.raises(StoreError, match=expected):
        open_store(path)
    with pytest.raises(StoreError, match=expected):
        open_store_readonly(path)


def test_a_store_of_schema_1_is_upgraded_keeping_its_events(tmp_path):
    # Made by auditcov at schema 1 (`auditcov import --run v1` of audit2rbac/demo.log), whose events table held
    # the identity as its own UNIQUE (run, audit_id, stage) constraint.
    path = tmp_path / "store.db"
    shutil.copy(FIXTURES / "stores/schema-v1.db", path)
    with pytest.raises(
        StoreError, match=rf"schema version 1; this auditcov reads {SCHEMA_VERSION} \(`auditcov serve`, `import`"
    ):
        open_store_readonly(path)
    db = open_store(path)
    conn = db.conn
    assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (str(SCHEMA_VERSION),)
    indexes = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE tbl_name = 'events'")}
    assert indexes == {"events", "events_identity", "events_identity_untimed"}
    assert store_stats(db, "v1")["events"] == 37
    assert conn.execute("SELECT count(*) FROM attributed_events").fetchone() == (37,)
    # The same file again: every event is recognised under the new identity.
    summary = import_files(Ingestor(db), "v1", [AuditFile(FIXTURES / "audit/audit2rbac/demo.log")])
    assert (summary.accepted, summary.duplicates) == (0, 37)
    db.conn.close()
    assert store_stats(open_store_readonly(path), "v1")["events"] == 37


def test_a_store_of_schema_2_is_upgraded_keeping_its_snapshots_and_quarantine(tmp_path):
    # Made by auditcov at schema 2 (commit 62c37f1): `auditcov import --run v2` of audit2rbac/demo.log and of
    # falco/fal_01_003.json (one quarantined item), then `cover import --run v2 --process demo --at
    # 2026-01-31T12:00:00Z` of gocover/pbft-consensus-atomic.out.
    path = tmp_path / "store.db"
    shutil.copy(FIXTURES / "stores/schema-v2.db", path)
    db = open_store(path)
    conn = db.conn
    assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (str(SCHEMA_VERSION),)
    assert store_stats(db, "v2")["events"] == 37
    assert conn.execute("SELECT raw_encoding, reason FROM quarantine").fetchall() == [
        ("text", "tests/fixtures/audit/falco/fal_01_003.json:1: kind '0' is not EventList or Event")
    ]
    [snapshot] = list_snapshots(db, "v2")
    assert (snapshot.process, snapshot.mode, snapshot.at_us) == ("demo", "atomic", 1769860800000000)
    assert len(load_counters(db, snapshot)) == 382
    assert conn.execute("SELECT taken_us, raw, meta, missing FROM cover_snapshots").fetchall() == [
        (None, None, None, None)
    ]
    assert {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE name LIKE '%_v2'")} == set()


def test_a_file_that_is_not_a_store_is_refused(tmp_path):
    path = tmp_path / "not.db"
    path.write_bytes(b"not a database" * 100)
    with pytest.raises(StoreError, match="cannot open the store"):
        open_store(path)
    with pytest.raises(StoreError, match="no store there"):
        open_store_readonly(tmp_path / "missing.db")


def test_transaction_commits_or_rolls_back_whole(tmp_path):
    db = open_store(tmp_path / "store.db")
    with transaction(db.conn) as conn:
        conn.execute("INSERT INTO runs (name, created_us) VALUES ('kept', 1)")
    with pytest.raises(ZeroDivisionError), transaction(db.conn) as conn:
        conn.execute("INSERT INTO runs (name, created_us) VALUES ('dropped', 2)")
        1 / 0  # noqa: B018
    assert db.conn.execute("SELECT name FROM runs").fetchall() == [("kept",)]
