"""The store: its schema version is checked on open, and `transaction` commits or rolls back as a whole."""

from __future__ import annotations

import pytest

from merge.errors import StoreError
from merge.store import SCHEMA_VERSION, open_store, open_store_readonly, transaction


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
